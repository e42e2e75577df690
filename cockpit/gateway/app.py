"""The Litestar application: routes, guards, errors, OpenAPI, lifecycle."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from litestar import HttpMethod, Litestar, MediaType, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from loguru import logger
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cockpit import __version__
from cockpit.bootstrap import Cockpit
from cockpit.gateway.admission import LoadShedder
from cockpit.gateway.openapi import complete_schema
from cockpit.gateway.routes import health, session, telemetry, verdicts
from cockpit.gateway.ws import stream_socket
from cockpit.platform.retry import unreachable

__all__ = ["create_app"]


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # The same test as the consumers' retries: an outage is worth retrying (503), a
    # statement the database rejects for another reason is a defect (500, logged).
    if not unreachable(exc):
        return _internal(request, exc)
    logger.warning("dependency_unavailable", path=request.url.path, error=type(exc).__name__)
    request.app.state.cockpit.metrics.http_errors.labels(status="503").inc()
    return Response(
        {"status_code": 503, "detail": "database unavailable, retry later", "extra": {}},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _unstorable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # The database refused a value the edge let through (PostgreSQL: a NUL character in
    # text, a non-finite number in jsonb): bad input, not an outage -- retrying won't help.
    logger.warning("value_not_storable", path=request.url.path, error=type(getattr(exc, "orig", exc)).__name__)
    request.app.state.cockpit.metrics.http_errors.labels(status="422").inc()
    detail = "a value in the request cannot be stored or searched (NUL character, non-finite number or out of range)"
    return Response({"status_code": 422, "detail": detail}, status_code=422)


def _undecodable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Litestar's body decoding lets these through for bodies nested deeper than the
    # interpreter allows, or strings that are not UTF-8: bad input, never a 500.
    logger.info("request_body_undecodable", path=request.url.path, error=type(exc).__name__)
    request.app.state.cockpit.metrics.http_errors.labels(status="400").inc()
    detail = "request body is nested too deeply" if isinstance(exc, RecursionError) else "request body is not valid UTF-8"
    return Response({"status_code": 400, "detail": detail}, status_code=400)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    request.app.state.cockpit.metrics.http_errors.labels(status=str(exc.status_code)).inc()
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=MediaType.JSON)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # Never a traceback to the client; the log has it.
    logger.opt(exception=exc).error("unhandled_error", path=request.url.path)
    request.app.state.cockpit.metrics.http_errors.labels(status="500").inc()
    return Response({"status_code": 500, "detail": "internal server error"}, status_code=500)


def _options_handlers(handlers: list[Any]) -> list[HTTPRouteHandler]:
    """An OPTIONS handler for each path served by several handlers, listing all their
    methods in ``Allow``. Litestar 2 makes one for the first handler registered on a
    path and keeps it when the others join, so it lists that handler's methods only
    (litestar-org/litestar#4169, fixed in Litestar 3). Registered first, these stop
    Litestar from making its own."""
    by_path: dict[str, list[HTTPRouteHandler]] = defaultdict(list)
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            for path in handler.paths:
                by_path[path].append(handler)
    return [_options(path, ", ".join(sorted({m for h in served for m in h.http_methods} | {"OPTIONS"})))
            for path, served in sorted(by_path.items()) if len(served) > 1]


def _options(path: str, allow: str) -> HTTPRouteHandler:
    async def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return route(path, http_method=HttpMethod.OPTIONS, include_in_schema=False, name=f"options {path}")(options)


def create_app(cockpit: Cockpit, *, manage_lifecycle: bool = True) -> Litestar:
    """The HTTP/WebSocket edge over a bootstrapped :class:`Cockpit`."""
    from cockpit.gateway.routes import c2l as c2l_routes
    from cockpit.gateway.routes import dashboard

    handlers: list[Any] = [
        health.health, health.module_health, health.metrics, session.me,
        telemetry.post_telemetry, telemetry.post_traces,
        verdicts.list_verdicts, verdicts.verdict_stats, verdicts.get_verdict,
        verdicts.verdict_evidence, verdicts.patch_verdict, verdicts.alliance_graph, verdicts.stats,
        stream_socket,
        *c2l_routes.HANDLERS,
        *dashboard.HANDLERS,
    ]

    handlers = [*_options_handlers(handlers), *handlers]
    shedder = LoadShedder(cockpit.metrics, cockpit.settings.gateway.max_inflight)

    async def on_startup(app: Litestar) -> None:
        if manage_lifecycle:
            await cockpit.start()

    async def on_shutdown(app: Litestar) -> None:
        if manage_lifecycle:
            await cockpit.stop()

    app = Litestar(
        route_handlers=handlers,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        request_max_body_size=cockpit.settings.gateway.max_body_bytes,
        # A plain ASGI middleware (scope, messages: mutable mappings); Litestar's type
        # wants its own TypedDict scopes, which mypy does not take as mappings.
        middleware=[shedder.middleware],  # type: ignore[list-item]
        # Logging is Cockpit's (JSON lines through loguru, configure_logging); Litestar's
        # default config would reset the root logger to INFO in its own text format.
        logging_config=None,
        exception_handlers={
            HTTPException: _http_error,
            DataError: _unstorable,
            RecursionError: _undecodable,
            UnicodeDecodeError: _undecodable,
            DBAPIError: _database_error,
            PoolTimeout: _database_error,
            ConnectionError: _database_error,
            Exception: _internal,
        },
        openapi_config=OpenAPIConfig(
            title="Cockpit",
            version=__version__,
            description="Command-and-control plane for fleets of autonomous AI agents.",
            path="/schema",
            # Which operations need the key is said per operation, from their guards
            # (openapi.complete_schema): health and metrics are open.
            components=Components(
                security_schemes={"ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")}
            ),
        ),
        debug=False,
    )
    app.state.cockpit = cockpit
    complete_schema(app)
    return app
