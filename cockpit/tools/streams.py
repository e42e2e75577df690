"""``cockpit streams info|backup|restore``: JetStream streams without the nats CLI.

The runbook backed up ``sovereign-commands`` and ``sovereign-confirmations`` with
``nats stream backup``; this does the same through nats-py and the JetStream API:

* ``backup --out DIR`` writes, per stream, ``DIR/<stream>.config.json`` (the
  server's own stream configuration and state at backup time) and
  ``DIR/<stream>.jsonl`` (every stored message, oldest first: sequence, subject,
  time, headers, base64 payload).
* ``restore --from DIR`` recreates each stream from its configuration and
  republishes every message on its original subject with its original headers.
  New sequence numbers and store times are assigned by the server. A stream that
  already holds messages is left alone unless ``--replace`` is given.

Restore with Cockpit stopped (or before its first start): the command executor's
durable consumer then sees the restored commands again, which is harmless because
execution is idempotent (command id x agent x layer) and the database is the
source of truth. Consumers are not part of the backup; Cockpit recreates its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_STREAMS", "StreamsError", "add_parser", "backup", "info", "restore"]

DEFAULT_STREAMS = ("sovereign-commands", "sovereign-confirmations")

_API = "$JS.API"
_NOT_FOUND = {10059}  # stream not found
_NO_MESSAGE = {10037}  # no message found (deleted or purged sequence)
#: publish-time expectations that would refuse a republish into a new stream
_DROP_HEADERS = ("Nats-Expected-Last-Sequence", "Nats-Expected-Last-Subject-Sequence",
                 "Nats-Expected-Last-Msg-Id")


class StreamsError(RuntimeError):
    """A stream operation the server refused, or a backup that cannot be used."""


async def _api(nc: Any, subject: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(f"{_API}.{subject}", payload, timeout=timeout)
    return json.loads(reply.data)


def _error_code(resp: dict[str, Any]) -> int | None:
    error = resp.get("error")
    return int(error.get("err_code") or error.get("code") or 0) if error else None


async def _stream_info(nc: Any, name: str) -> dict[str, Any] | None:
    resp = await _api(nc, f"STREAM.INFO.{name}")
    code = _error_code(resp)
    if code in _NOT_FOUND:
        return None
    if code is not None:
        raise StreamsError(f"{name}: {resp['error'].get('description', resp['error'])}")
    return resp


def _decode_headers(hdrs: str | None) -> dict[str, str]:
    """The ``NATS/1.0`` header block of a stored message, as a dict (last value wins)."""
    if not hdrs:
        return {}
    lines = base64.b64decode(hdrs).decode("utf-8", "replace").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:  # lines[0] is the version/status line
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
    return headers


async def _connect(url: str, timeout: float = 10.0) -> Any:
    import nats

    failed = asyncio.Event()
    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:  # reported below, once
        errors.append(exc)
        failed.set()

    # nats-py keeps retrying a refused first connect: stop at its first error.
    connect = asyncio.ensure_future(nats.connect(
        url, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False, error_cb=on_error))
    failure = asyncio.ensure_future(failed.wait())
    done, _ = await asyncio.wait({connect, failure}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    failure.cancel()
    if connect in done and connect.exception() is None:
        return connect.result()
    if connect in done:
        errors.append(connect.exception())  # type: ignore[arg-type]
    else:
        connect.cancel()
        try:
            await connect
        except BaseException as exc:  # noqa: BLE001 - cancelled, or the error that stopped it
            errors.append(exc)
    cause = next((e for e in errors if not isinstance(e, asyncio.CancelledError)), None)
    reason = f"{type(cause).__name__}: {cause}" if cause else f"no answer in {timeout:g}s"
    raise StreamsError(f"cannot connect to NATS at {_redact(url)}: {reason}")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}" if "@" in rest else url


async def info(url: str, streams: list[str]) -> list[dict[str, Any]]:
    """Configuration, state and consumers of each stream (``None`` state: missing)."""
    nc = await _connect(url)
    try:
        out = []
        for name in streams:
            data = await _stream_info(nc, name)
            consumers: list[dict[str, Any]] = []
            if data is not None:
                resp = await _api(nc, f"CONSUMER.LIST.{name}", {"offset": 0})
                consumers = [
                    {"name": c.get("name"), "num_pending": c.get("num_pending"),
                     "num_ack_pending": c.get("num_ack_pending"),
                     "num_redelivered": c.get("num_redelivered")}
                    for c in resp.get("consumers") or []
                ]
            out.append({"stream": name, "config": (data or {}).get("config"),
                        "state": (data or {}).get("state"), "consumers": consumers})
        return out
    finally:
        await nc.close()


async def backup(url: str, out_dir: str | Path, streams: list[str]) -> dict[str, int]:
    """Write each stream's configuration and messages under ``out_dir``; returns counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nc = await _connect(url)
    counts: dict[str, int] = {}
    try:
        for name in streams:
            data = await _stream_info(nc, name)
            if data is None:
                raise StreamsError(f"stream {name!r} does not exist")
            state = data.get("state") or {}
            first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
            tmp = out / f"{name}.jsonl.partial"
            written = 0
            with tmp.open("w", encoding="utf-8") as fh:
                for seq in range(max(first, 1), last + 1) if last else ():
                    resp = await _api(nc, f"STREAM.MSG.GET.{name}", {"seq": seq})
                    code = _error_code(resp)
                    if code in _NO_MESSAGE:
                        continue
                    if code is not None:
                        raise StreamsError(f"{name} seq {seq}: {resp['error'].get('description')}")
                    msg = resp["message"]
                    fh.write(json.dumps({
                        "seq": msg["seq"], "subject": msg["subject"], "time": msg.get("time"),
                        "headers": _decode_headers(msg.get("hdrs")), "data": msg.get("data") or "",
                    }, separators=(",", ":")) + "\n")
                    written += 1
            tmp.replace(out / f"{name}.jsonl")
            meta = {"stream": name, "backed_up_at": datetime.now(UTC).isoformat(),
                    "messages": written, "config": data["config"], "state": state}
            (out / f"{name}.config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            counts[name] = written
        return counts
    finally:
        await nc.close()


def _read_messages(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise StreamsError(f"{path}:{number}: not a JSON line") from None


async def restore(url: str, from_dir: str | Path, streams: list[str], *, replace: bool = False) -> dict[str, int]:
    """Recreate each stream from ``from_dir`` and republish its messages; returns counts."""
    src = Path(from_dir)
    plan = []
    for name in streams:
        meta_path, msgs_path = src / f"{name}.config.json", src / f"{name}.jsonl"
        if not meta_path.is_file() or not msgs_path.is_file():
            raise StreamsError(f"no backup of {name!r} in {src} ({meta_path.name}, {msgs_path.name})")
        plan.append((name, json.loads(meta_path.read_text(encoding="utf-8")), msgs_path))

    nc = await _connect(url)
    js = nc.jetstream()
    counts: dict[str, int] = {}
    try:
        for name, meta, msgs_path in plan:
            existing = await _stream_info(nc, name)
            if existing is not None:
                held = int((existing.get("state") or {}).get("messages") or 0)
                if held and not replace:
                    raise StreamsError(f"stream {name!r} exists with {held} messages; "
                                       "pass --replace to delete it and restore the backup")
                resp = await _api(nc, f"STREAM.DELETE.{name}")
                if _error_code(resp) is not None:
                    raise StreamsError(f"deleting {name}: {resp['error'].get('description')}")
            config = dict(meta["config"], name=name)
            resp = await _api(nc, f"STREAM.CREATE.{name}", config)
            if _error_code(resp) is not None:
                raise StreamsError(f"creating {name}: {resp['error'].get('description')}")
            published = duplicates = 0
            for msg in _read_messages(msgs_path):
                headers = {k: v for k, v in (msg.get("headers") or {}).items() if k not in _DROP_HEADERS}
                ack = await js.publish(msg["subject"], base64.b64decode(msg.get("data") or ""),
                                       headers=headers or None, timeout=10.0)
                if ack.duplicate:
                    duplicates += 1
                else:
                    published += 1
            if duplicates:
                print(f"warning: {name}: {duplicates} messages were dropped by the server as "
                      "duplicates (same Nats-Msg-Id within the duplicate window)", file=sys.stderr)
            counts[name] = published
        return counts
    finally:
        await nc.close()


# --------------------------------------------------------------------------- CLI


def _url(args: argparse.Namespace) -> str:
    if args.nats_url:
        return str(args.nats_url)
    from cockpit.settings import load_settings

    url = load_settings().nats_url
    if not url:
        raise StreamsError("no NATS configured: set COCKPIT_NATS_URL or pass --nats-url")
    return url


def _command(args: argparse.Namespace) -> int:
    streams = args.stream or list(DEFAULT_STREAMS)
    try:
        url = _url(args)
        if args.action == "info":
            for item in asyncio.run(info(url, streams)):
                if item["state"] is None:
                    print(f"{item['stream']}: missing")
                    continue
                s, c = item["state"], item["config"]
                print(f"{item['stream']}: subjects={','.join(c.get('subjects') or [])} "
                      f"messages={s.get('messages')} bytes={s.get('bytes')} "
                      f"first_seq={s.get('first_seq')} last_seq={s.get('last_seq')} "
                      f"storage={c.get('storage')} retention={c.get('retention')}")
                for consumer in item["consumers"]:
                    print(f"  consumer {consumer['name']}: pending={consumer['num_pending']} "
                          f"ack_pending={consumer['num_ack_pending']} redelivered={consumer['num_redelivered']}")
            return 0
        if args.action == "backup":
            counts = asyncio.run(backup(url, args.out, streams))
            for name, n in counts.items():
                print(f"{name}: {n} messages -> {Path(args.out) / (name + '.jsonl')}")
            return 0
        counts = asyncio.run(restore(url, args.from_dir, streams, replace=args.replace))
        for name, n in counts.items():
            print(f"{name}: {n} messages restored")
        return 0
    except StreamsError as exc:
        print(f"cockpit: error: {exc}", file=sys.stderr)
        return 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cockpit streams info|backup|restore`` on the CLI's subparsers."""
    parser = subparsers.add_parser("streams", help="JetStream streams: info, backup, restore")
    actions = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--nats-url", default=None, help="default: COCKPIT_NATS_URL")
        p.add_argument("--stream", action="append", metavar="NAME",
                       help=f"a stream (repeatable; default: {', '.join(DEFAULT_STREAMS)})")

    common(actions.add_parser("info", help="configuration, state and consumers of the streams"))
    p = actions.add_parser("backup", help="write each stream's config and messages (JSON lines)")
    p.add_argument("--out", required=True, metavar="DIR")
    common(p)
    p = actions.add_parser("restore", help="recreate the streams and republish their messages")
    p.add_argument("--from", dest="from_dir", required=True, metavar="DIR")
    p.add_argument("--replace", action="store_true", help="delete a stream that already holds messages")
    common(p)
    parser.set_defaults(func=_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m cockpit.tools.streams ...`` (the same as ``cockpit streams ...``)."""
    parser = argparse.ArgumentParser(prog="cockpit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
