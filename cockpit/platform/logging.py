"""Structured JSON logs through loguru: one event name per line, with fields."""

from __future__ import annotations

import logging
import sys

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


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Send logs to stderr, as JSON lines when ``json`` (the default)."""
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=json, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for name in ("uvicorn", "uvicorn.error", "faststream", "alembic"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
    logging.getLogger("uvicorn.access").disabled = True
