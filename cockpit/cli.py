"""The ``cockpit`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> int:
    print(f"cockpit: error: {message}", file=sys.stderr)
    return code


def _run(coro_factory: Callable[[], Coroutine[Any, Any, int]]) -> int:
    from cockpit.bootstrap import StartupError

    try:
        return asyncio.run(coro_factory())
    except StartupError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server.

    Every request allocates many short-lived objects (SQLAlchemy statements, pydantic
    models) and the strategic state holds many long-lived ones; with the default
    thresholds the collector ran about a thousand times a second and took a fifth of
    the batch ingestion time in a profile. What exists after start-up (modules, tables,
    the trained models) is frozen out of the collector's reach.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _drain_on_signals(server: Any) -> Any:
    """Uvicorn drains in-flight requests on SIGTERM/SIGINT and then re-raises the
    signal, which would kill the process before Cockpit stops its brokers and pool;
    this keeps the drain and drops the re-raise."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def capture_signals() -> Any:
        previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    server.capture_signals = capture_signals
    return server


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cockpit.bootstrap import StartupError, bootstrap
    from cockpit.gateway.app import create_app
    from cockpit.platform.logging import configure_logging
    from cockpit.settings import load_settings

    try:
        settings = load_settings()
    except ValueError as exc:  # pydantic's ValidationError: a setting out of its range or form
        return _fail(f"invalid settings: {exc}")
    gateway = settings.gateway.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    settings = settings.model_copy(update={"gateway": gateway})
    configure_logging(settings.log_level, settings.log_json)
    try:
        cockpit = bootstrap(settings)
    except ValueError as exc:  # a value only its context can read (a rate limit's form)
        return _fail(f"invalid settings: {exc}")

    async def serve() -> int:
        try:
            await cockpit.start()
        except StartupError as exc:
            return _fail(str(exc))
        if cockpit.first_operator_key:
            print(
                "\n  First start: an operator key was created (CHIEF_ARCHITECT). It is shown once:\n"
                f"\n      {cockpit.first_operator_key}\n\n"
                "  Create more with `cockpit apikey create --role VIEWER --name someone`.\n",
                file=sys.stderr, flush=True,
            )
        print(f"  Cockpit on http://{settings.gateway.host}:{settings.gateway.port}/ "
              f"(API schema at /schema)", file=sys.stderr, flush=True)
        _tune_gc()
        app = create_app(cockpit, manage_lifecycle=False)
        config = uvicorn.Config(
            app, host=settings.gateway.host, port=settings.gateway.port, log_config=None,
            access_log=False, timeout_graceful_shutdown=10, ws_ping_interval=None,
            lifespan="on",
        )
        try:
            await _drain_on_signals(uvicorn.Server(config)).serve()
        finally:
            await cockpit.stop()
        return 0

    return _run(serve)


def cmd_migrate(args: argparse.Namespace) -> int:
    from cockpit.platform.db import migrate
    from cockpit.settings import load_settings

    settings = load_settings()
    try:
        migrate(settings.effective_database_url, args.revision)
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator
        return _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    print(f"database at revision {args.revision}")
    return 0


async def _with_cockpit(fn: Callable[[Any], Coroutine[Any, Any, int]], *, start_bus: bool = False) -> int:
    """Run ``fn(cockpit)`` against a migrated database without serving HTTP."""
    from cockpit.bootstrap import bootstrap
    from cockpit.platform.db import migrate
    from cockpit.platform.logging import configure_logging
    from cockpit.settings import load_settings

    settings = load_settings()
    configure_logging("WARNING", settings.log_json)
    cockpit = bootstrap(settings)
    if settings.should_auto_migrate:
        await asyncio.to_thread(migrate, cockpit.db.url)
    try:
        if start_bus:
            await cockpit.start()
        return await fn(cockpit)
    finally:
        if start_bus:
            await cockpit.stop()
        else:
            await cockpit.db.dispose()


def cmd_apikey(args: argparse.Namespace) -> int:
    from cockpit.platform.auth import Role

    async def run(cockpit: Any) -> int:
        if args.action == "create":
            try:
                key, principal = await cockpit.api_keys.create(args.name, Role(args.role), with_totp=args.totp)
            except ValueError as exc:
                return _fail(str(exc), 2)
            print(f"id:    {principal.id}\nname:  {principal.name}\nrole:  {principal.role.value}\nkey:   {key}")
            if principal.totp_secret:
                import pyotp

                uri = pyotp.TOTP(principal.totp_secret).provisioning_uri(name=args.name, issuer_name="Cockpit")
                print(f"totp:  {principal.totp_secret}\nuri:   {uri}")
            print("The key is shown once; only its hash is stored.", file=sys.stderr)
            return 0
        if args.action == "list":
            for row in await cockpit.api_keys.list():
                state = "revoked" if row["revoked"] else "active"
                print(f"{row['id']}  {row['role']:<18} {state:<8} totp={row['totp']!s:<5} {row['name']}")
            return 0
        ok = await cockpit.api_keys.revoke(args.id)
        return 0 if ok else _fail(f"no active key with id {args.id!r}", 1)

    return _run(lambda: _with_cockpit(run))


def cmd_audit(args: argparse.Namespace) -> int:
    from cockpit.c2l.audit import AnchorConflict, read_anchor_file, read_anchors

    async def run(cockpit: Any) -> int:
        source = Path(args.anchor_file) if args.anchor_file else cockpit.c2l.audit_anchor_file
        if args.anchor_file and not source.exists():
            return _fail(f"no anchor file at {source}")
        try:
            anchors = read_anchor_file(source)
            read_anchors(args.anchor, anchors)
        except AnchorConflict as exc:
            print(f"BROKEN: {exc}")
            return 1
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return _fail(f"cannot read the anchors: {exc}")
        report = await cockpit.c2l.verify_audit(anchors)
        if report["ok"]:
            head = f"head {report['head_id']}:{report['head']}" if report["head_id"] else "empty"
            print(f"ok, {report['rows']} rows, {report['anchors']} anchors checked, {head}")
            if not anchors:
                print(f"warning: no anchors (none recorded at {source}): a cut tail would not be detected",
                      file=sys.stderr)
            return 0
        print(f"BROKEN at audit row {report['first_broken_id']}: {report['reason']} "
              f"({report['rows']} rows checked)")
        return 1

    return _run(lambda: _with_cockpit(run))


def cmd_verdicts(args: argparse.Namespace) -> int:
    async def run(cockpit: Any) -> int:
        verdicts, rows = await cockpit.verdicts.recount()
        print(f"counted {verdicts} verdicts into {rows} verdict_counts rows")
        return 0

    return _run(lambda: _with_cockpit(run))


def cmd_replay(args: argparse.Namespace) -> int:
    from cockpit.tools.replay import replay_file

    return _run(lambda: _with_cockpit(lambda c: replay_file(c, args.file, args.format, args.batch), start_bus=True))


def cmd_score(args: argparse.Namespace) -> int:
    from cockpit.filter.diplomacy import score_file
    from cockpit.filter.semantic import SemanticAnalyzer

    if args.format != "diplomacy":
        return _fail("only --format diplomacy is supported for scoring")
    try:
        summary = score_file(args.file, args.out, SemanticAnalyzer())
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(f"scored {summary.written} labelled messages of {summary.messages} "
          f"({summary.unlabelled} unlabelled skipped, {summary.lies} lies) -> {args.out}")
    if summary.quality:
        print("against the sender labels: " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.quality.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cockpit", description="Command-and-control plane for fleets of AI agents")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API, WebSocket stream and dashboard")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="upgrade the database schema")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("apikey", help="manage API keys")
    a = p.add_subparsers(dest="action", required=True)
    c = a.add_parser("create")
    # No AGENT keys here: an agent's token comes from its registration (POST /agents),
    # bound to that agent; a bare AGENT key would be bound to none and refused everywhere.
    c.add_argument("--role", required=True, choices=["VIEWER", "SOVEREIGN_OPERATOR", "CHIEF_ARCHITECT"])
    c.add_argument("--name", required=True, help="who holds the key: the audit and the two-person rule "
                   "know operators by it (names starting with 'system' are Cockpit's own)")
    c.add_argument("--totp", action="store_true", help="require a TOTP code for TERMINATE/REVOKE_ACCESS")
    a.add_parser("list")
    r = a.add_parser("revoke")
    r.add_argument("id")
    p.set_defaults(func=cmd_apikey)

    p = sub.add_parser("audit", help="audit trail tools")
    a = p.add_subparsers(dest="action", required=True)
    v = a.add_parser("verify", help="check the audit hash chain and its anchors")
    v.add_argument("--anchor", action="append", default=[], metavar="ID:SHA256",
                   help="a row hash recorded elsewhere (repeatable), e.g. the head printed by an earlier run")
    v.add_argument("--anchor-file", default=None,
                   help="anchor file to check against (default: the configured audit anchor file)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("verdicts", help="verdict tools")
    a = p.add_subparsers(dest="action", required=True)
    a.add_parser("recount", help="count the stored verdicts again (after changing them in SQL by hand)")
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("replay", help="push a JSONL of telemetry through the real pipeline")
    p.add_argument("file")
    p.add_argument("--format", choices=["cockpit", "diplomacy"], default="cockpit")
    p.add_argument("--batch", type=int, default=500)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("score", help="score messages for deception")
    p.add_argument("file")
    p.add_argument("--format", choices=["diplomacy"], default="diplomacy")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score)

    from cockpit.tools.streams import add_parser as add_streams_parser

    add_streams_parser(sub)

    from cockpit.tools.demo import add_parser as add_demo_parser

    add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cockpit`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
