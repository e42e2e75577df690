"""Work that must not be lost when a dependency is down: try again until it is back.

A consumer that has taken responsibility for an event (the filter once it has claimed
telemetry, the verdict engine with a draft) cannot hand it back: the claim is made,
the broker's acknowledgement goes with the handler's return. If the database or the
broker is unreachable at that moment, dropping the work would lose it; failing the
handler would, in-process, lose it too. So such a step is retried, with a growing
pause, until it succeeds: the consumer waits, which is back-pressure (ingestion
answers 503 while the database is down anyway), and the work resumes where it
stopped. Only errors that say "unreachable" are retried; a wrong statement or a bug
still fails at once. Stopping the process cancels the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from loguru import logger
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cockpit.platform.bus import PublishFailed

__all__ = ["UNREACHABLE", "unreachable", "until_done"]

T = TypeVar("T")

#: errors meaning "the database or the broker cannot be reached now", not "this is wrong"
UNREACHABLE: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, DisconnectionError, PoolTimeout, PublishFailed, ConnectionError, TimeoutError,
)
#: SQLite reports a wrong statement as an OperationalError too (SQLITE_ERROR: a syntax
#: error, no such table); only these primary result codes say the file is unusable now:
#: BUSY, LOCKED, IOERR, NOMEM, FULL, CANTOPEN, PROTOCOL
_SQLITE_OUTAGE = frozenset({5, 6, 7, 10, 13, 14, 15})


def unreachable(exc: BaseException) -> bool:
    """``exc`` says a dependency is down (worth waiting for), not that the work is wrong."""
    if not isinstance(exc, UNREACHABLE):
        return False
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return code is None or (code & 0xFF) in _SQLITE_OUTAGE


async def until_done(
    operation: Callable[[], Awaitable[T]], *, what: str, first_delay: float = 0.2, max_delay: float = 5.0
) -> T:
    """``await operation()`` until it does not fail with an :func:`unreachable` error,
    pausing ``first_delay`` seconds after the first failure, twice as long after each
    next one, at most ``max_delay``; any other error is raised at once. ``what`` names
    the step in the log (``<what>_retrying`` at the first failure and every tenth,
    ``<what>_recovered``)."""
    delay = first_delay
    failures = 0
    while True:
        try:
            result = await operation()
        except Exception as exc:
            if not unreachable(exc):
                raise
            failures += 1
            if failures == 1 or failures % 10 == 0:
                logger.warning(f"{what}_retrying", failures=failures, retry_in_s=delay,
                               error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if failures:
            logger.info(f"{what}_recovered", failures=failures)
        return result
