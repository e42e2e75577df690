"""``/health`` (overall and per module) and ``/metrics``."""

from __future__ import annotations

import time
from typing import Any, cast

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from cockpit import __version__
from cockpit.gateway.openapi import Health, ModuleHealth, errors
from cockpit.platform.bus import Channel, EventBus
from cockpit.platform.metrics import CONTENT_TYPE

__all__ = ["health", "module_health", "metrics"]

SERVICES = ["narrative-filter", "verdict-engine", "command-bus"]


async def _checks(request: Request[Any, Any, Any]) -> dict[str, Any]:
    cockpit = request.app.state.cockpit
    checks: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        await cockpit.db.ping(timeout=2.0)
        checks["database"] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                              "dialect": cockpit.db.dialect}
    except Exception as exc:  # noqa: BLE001 - any failure means the probe failed
        checks["database"] = {"ok": False, "dialect": cockpit.db.dialect, "error": type(exc).__name__}
    checks.update(await cockpit.bus.health())
    checks["bus"] = cockpit.bus.transport_names
    return checks


def _ok(value: Any) -> bool:
    return value is True or (isinstance(value, dict) and value.get("ok") is True)


@get("/health", summary="Overall health with real dependency probes", tags=["operations"],
     responses={503: ResponseSpec(Health, description="degraded: a dependency probe failed", generate_examples=False)})
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    checks = await _checks(request)
    failing = [name for name, value in checks.items() if name != "bus" and not _ok(value)]
    body: Health = {
        "status": "degraded" if failing else "ok",
        "services": SERVICES,
        "version": __version__,
        "checks": checks,
    }
    if failing:
        body["failing"] = failing
    return Response(body, status_code=503 if failing else 200)


#: the channels each module consumes or publishes: it depends on the brokers carrying them
_MODULE_CHANNELS = {
    "narrative-filter": (Channel.TELEMETRY, Channel.ANALYSIS),
    "verdict-engine": (Channel.ANALYSIS, Channel.VERDICTS),
    "command-bus": (Channel.COMMANDS, Channel.CONFIRMATIONS, Channel.DIRECTIVES),
}


def _dependencies(bus: EventBus, module: str) -> list[str]:
    """The database, and the broker of each of the module's channels (Kafka or NATS,
    whichever this deployment routes them through; none in-process)."""
    brokers = {bus.routes[channel].name for channel in _MODULE_CHANNELS[module]} - {"memory"}
    return ["database", *(f"{name}_connected" for name in sorted(brokers))]


@get("/health/{module:str}", summary="Health of one module", tags=["operations"], responses={
    **errors(404),
    503: ResponseSpec(ModuleHealth, description="unhealthy: a dependency of the module failed", generate_examples=False),
})
async def module_health(request: Request[Any, Any, Any], module: FromPath[str]) -> Response[ModuleHealth]:
    if module not in _MODULE_CHANNELS:
        raise NotFoundException(f"unknown module {module!r}; one of {', '.join(SERVICES)}")
    checks = await _checks(request)
    body: dict[str, Any] = {"module": module, "version": __version__}
    healthy = True
    for dependency in _dependencies(request.app.state.cockpit.bus, module):
        if dependency in checks:
            body[dependency] = _ok(checks[dependency])
            healthy = healthy and body[dependency]
    body["status"] = "healthy" if healthy else "unhealthy"
    # The keys are ModuleHealth's: the dependency names are among its fields.
    return Response(cast(ModuleHealth, body), status_code=200 if healthy else 503)


@get("/metrics", summary="Prometheus metrics", tags=["operations"], media_type=CONTENT_TYPE)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(request.app.state.cockpit.metrics.render(), media_type=CONTENT_TYPE)
