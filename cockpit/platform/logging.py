"""Structured logs through loguru: one event name per line, with fields, as JSON lines
(``{"ts", "level", "event", "logger", ...fields}``) unless ``json`` is off."""

from __future__ import annotations

import json as jsonlib
import logging
import sys
import traceback
from typing import Any

from loguru import logger

__all__ = ["configure_logging"]


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, FastStream, alembic) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def _json_sink(message: Any) -> None:
    record = message.record
    out: dict[str, Any] = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "event": record["message"],
        "logger": record["name"],
    }
    out.update(record["extra"])
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        out["error"] = f"{exc.type.__name__}: {exc.value}"
        out["traceback"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    sys.stderr.write(jsonlib.dumps(out, default=str) + "\n")


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Send logs to stderr, as JSON lines when ``json`` (the default)."""
    logger.remove()
    if json:
        logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level.upper(), backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error", "faststream", "alembic"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
    logging.getLogger("uvicorn.access").disabled = True
