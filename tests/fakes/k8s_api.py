"""A small Kubernetes API server for tests: real HTTP, real paths, real schemas.

Serves the part of the API the kill switch uses, with the objects and `Status`
errors a real API server returns, and records every request (method, path,
query, body, headers) so tests can assert the exact calls made:

    GET    /api/v1/namespaces/{ns}/pods[/{name}]
    DELETE /api/v1/namespaces/{ns}/pods/{name}         (gracePeriodSeconds in body or query)
    GET    /api/v1/namespaces/{ns}/pods/{name}/log     (container, tailLines, timestamps)
    POST   /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies
    GET    /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies[/{name}]
    DELETE /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}

Deletion follows the API server: DELETE with a grace period marks the pod
(`deletionTimestamp`) and returns it; the object disappears once the "kubelet"
confirms, which here happens after `terminating_gets` further GETs, or never
when the pod was added with `kubelet_responsive=False`. Grace 0 removes the
object at once (a force deletion).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeKubernetesAPI", "RecordedRequest"]

_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")
_NETPOL = re.compile(
    r"^/apis/networking\.k8s\.io/v1/namespaces/([^/]+)/networkpolicies(?:/([^/]+))?$"
)
_NETPOL_GROUP = "networking.k8s.io"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class _Pod:
    obj: dict[str, Any]
    logs: dict[str, list[str]]
    terminating_gets: int
    kubelet_responsive: bool


@dataclass
class _State:
    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `Status` object as the API server returns for errors and deletions."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    if code < 400:
        body.pop("message")
        body.pop("reason")
    return body


def _not_found(kind: str, name: str, group: str | None = None) -> tuple[int, dict[str, Any]]:
    qualified = f"{kind}.{group}" if group else kind
    details = {"name": name, "kind": kind, **({"group": group} if group else {})}
    return 404, status(404, "NotFound", f'{qualified} "{name}" not found', details)


class FakeKubernetesAPI:
    """The fake server; use as a context manager or `start()` / `stop()`."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        """Listen on an ephemeral loopback port in a daemon thread."""
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give the client as its host."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- seeding and inspection ---------------------------------------------------

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        containers: tuple[str, ...] = ("agent",),
        logs: dict[str, list[str]] | None = None,
        terminating_gets: int = 0,
        kubelet_responsive: bool = True,
        owner: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a Running pod (``owner``: the (kind, name) of the controller that
        manages it, as ``metadata.ownerReferences`` names it); returns its object."""
        obj: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(labels or {}),
                "resourceVersion": "1",
                "creationTimestamp": _now(),
            },
            "spec": {
                "containers": [{"name": c, "image": f"agents/{c}:1"} for c in containers],
                "nodeName": "node-1",
                "terminationGracePeriodSeconds": 30,
            },
            "status": {"phase": "Running", "podIP": "10.244.0.7", "startTime": _now()},
        }
        if owner is not None:
            obj["metadata"]["ownerReferences"] = [{
                "apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": str(uuid.uuid4()),
                "controller": True, "blockOwnerDeletion": True,
            }]
        with self._state.lock:
            self._state.pods[(namespace, name)] = _Pod(
                obj, dict(logs or {}), terminating_gets, kubelet_responsive
            )
        return obj

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored pod object, without counting as a GET."""
        with self._state.lock:
            entry = self._state.pods.get((namespace, name))
            return json.loads(json.dumps(entry.obj)) if entry else None

    def network_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored NetworkPolicy object."""
        with self._state.lock:
            return self._state.policies.get((namespace, name))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._state.lock:
            return list(self._state.requests)

    # -- request handling -----------------------------------------------------------

    def handle(self, req: RecordedRequest) -> tuple[int, Any]:
        with self._state.lock:
            self._state.requests.append(req)
            if self.token and req.headers.get("authorization") != f"Bearer {self.token}":
                return 401, status(401, "Unauthorized", "Unauthorized")
            if match := _POD.match(req.path):
                return self._pods(req, *match.groups())
            if match := _NETPOL.match(req.path):
                return self._policies(req, *match.groups())
            return 404, status(
                404, "NotFound", "the server could not find the requested resource", {}
            )

    def _pods(
        self, req: RecordedRequest, ns: str, name: str | None, log: str | None
    ) -> tuple[int, Any]:
        pods = self._state.pods
        if name is None:
            if req.method != "GET":
                return 405, status(405, "MethodNotAllowed", "the server does not allow this method")
            items = [p.obj for (n, _), p in pods.items() if n == ns]
            return 200, {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        entry = pods.get((ns, name))
        if entry is None:
            return _not_found("pods", name)
        if log:
            return self._log(req, entry, name)
        if req.method == "GET":
            if entry.obj["metadata"].get("deletionTimestamp") and entry.kubelet_responsive:
                if entry.terminating_gets <= 0:
                    del pods[(ns, name)]
                    return _not_found("pods", name)
                entry.terminating_gets -= 1
            return 200, entry.obj
        if req.method == "DELETE":
            grace = _grace(req)
            meta = entry.obj["metadata"]
            if grace == 0:
                del pods[(ns, name)]
            else:
                grace = (
                    grace
                    if grace is not None
                    else entry.obj["spec"]["terminationGracePeriodSeconds"]
                )
                at = datetime.now(UTC) + timedelta(seconds=grace)
                meta.setdefault("deletionTimestamp", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["deletionGracePeriodSeconds"] = grace
            return 200, entry.obj
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")

    def _log(self, req: RecordedRequest, entry: _Pod, name: str) -> tuple[int, Any]:
        containers = [c["name"] for c in entry.obj["spec"]["containers"]]
        container = (req.query.get("container") or [None])[0]
        if container is None:
            if len(containers) > 1:
                return 400, status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod "
                    f"{name}, choose one of: [{' '.join(containers)}]",
                )
            container = containers[0]
        if container not in containers:
            return 400, status(
                400, "BadRequest", f"container {container} is not valid for pod {name}"
            )
        lines = entry.logs.get(container, [])
        if tail := req.query.get("tailLines"):
            lines = lines[-int(tail[0]) :] if int(tail[0]) > 0 else []
        if (req.query.get("timestamps") or ["false"])[0] == "true":
            lines = [
                f"2026-01-01T00:00:0{i % 10}.000000000Z {line}" for i, line in enumerate(lines)
            ]
        return 200, "".join(f"{line}\n" for line in lines)

    def _policies(self, req: RecordedRequest, ns: str, name: str | None) -> tuple[int, Any]:
        store = self._state.policies
        if name is None and req.method == "POST":
            body = req.body if isinstance(req.body, dict) else {}
            meta = body.get("metadata") or {}
            if (
                body.get("kind") != "NetworkPolicy"
                or body.get("apiVersion") != f"{_NETPOL_GROUP}/v1"
            ):
                return 400, status(400, "BadRequest", "the object provided is not a NetworkPolicy")
            if meta.get("namespace") not in (None, ns):
                return 400, status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does "
                    "not match the namespace sent on the request",
                )
            if not meta.get("name"):
                return 422, status(
                    422,
                    "Invalid",
                    'NetworkPolicy.networking.k8s.io "" is invalid: '
                    "metadata.name: Required value: name or generateName is required",
                )
            if (ns, meta["name"]) in store:
                return 409, status(
                    409,
                    "AlreadyExists",
                    f'networkpolicies.{_NETPOL_GROUP} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": _NETPOL_GROUP, "kind": "networkpolicies"},
                )
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(
                namespace=ns,
                uid=str(uuid.uuid4()),
                resourceVersion="1",
                generation=1,
                creationTimestamp=_now(),
            )
            store[(ns, meta["name"])] = obj
            return 201, obj
        if name is None and req.method == "GET":
            return 200, {
                "apiVersion": f"{_NETPOL_GROUP}/v1",
                "kind": "NetworkPolicyList",
                "metadata": {"resourceVersion": "1"},
                "items": [p for (n, _), p in store.items() if n == ns],
            }
        if name is not None and req.method in ("GET", "DELETE"):
            obj = store.get((ns, name))
            if obj is None:
                return _not_found("networkpolicies", name, _NETPOL_GROUP)
            if req.method == "GET":
                return 200, obj
            del store[(ns, name)]
            return 200, status(
                200,
                "",
                "",
                {
                    "name": name,
                    "group": _NETPOL_GROUP,
                    "kind": "networkpolicies",
                    "uid": obj["metadata"]["uid"],
                },
            )
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")


def _grace(req: RecordedRequest) -> int | None:
    if isinstance(req.body, dict) and req.body.get("gracePeriodSeconds") is not None:
        return int(req.body["gracePeriodSeconds"])
    if value := req.query.get("gracePeriodSeconds"):
        return int(value[0])
    return None


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubernetesAPI

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        req = RecordedRequest(
            self.command,
            parts.path,
            parse_qs(parts.query),
            body,
            {k.lower(): v for k, v in self.headers.items()},
        )
        code, payload = self.api.handle(req)
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded; stderr noise helps no test
