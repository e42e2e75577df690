"""The kill switch's audit trail: append-only and hash-chained.

Each row carries ``prev_hash`` (the previous row's ``row_hash``; 64 zeros for the
first) and ``row_hash = sha256(prev_hash + canonical JSON of the row's fields)``,
the id included. Editing a row breaks its own hash, deleting one breaks its
successor's link, swapping ids breaks both.

Truncating the *tail* (or rewriting the chain and recomputing every hash after the
change) leaves a chain that is valid on its own. Anchors catch both: after each
commit the appended row's ``id`` and ``row_hash`` are written outside the database,
to an append-only anchor file (one ``"<id> <row_hash>"`` line per row) and to the
log (``audit_appended``) for a log shipper. Since a row's hash commits to every row
before it, :meth:`AuditLog.verify` checks each anchor against the chain: an anchored
row that is missing means the tail was cut, one with another hash means history was
rewritten. The anchor file is only as safe as where it lives: put it on storage the
database's administrators cannot rewrite (``chattr +a``, a WORM volume, a shipped log).

There is deliberately no API to edit or delete rows.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from loguru import logger
from sqlalchemy import Select, bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cockpit.c2l.models import AuditRow
from cockpit.platform.batching import GroupCommit
from cockpit.platform.db import Database, urgent, utcnow

__all__ = [
    "GENESIS_HASH", "AnchorConflict", "AuditEntry", "AuditLog", "audit_row_hash", "canonical_json",
    "parse_anchor", "read_anchor_file", "read_anchors",
]

GENESIS_HASH = "0" * 64
#: pg_advisory_xact_lock key of the audit chain ("c2l-audit" as a 63-bit int)
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"c2l-audit").digest()[:8], "big") >> 1
_VERIFY_BATCH = 1000
# Appending is part of every command: Core statements, built once.
_AUDIT = AuditRow.__table__
_HEAD = select(_AUDIT.c.id, _AUDIT.c.row_hash).order_by(_AUDIT.c.id.desc()).limit(1)
_INSERT = insert(_AUDIT)
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_APPEND_ATTEMPTS = 20
#: audit rows written in one transaction at most (the rest go in the next)
_GROUP_LIMIT = 100
#: audit filters whose running totals are kept (least recently used dropped)
_TOTALS_KEPT = 1024
_ANCHOR = re.compile(r"^\s*(\d+)[\s:]+([0-9a-fA-F]{64})\s*$")


class AnchorConflict(ValueError):
    """The anchors record two different hashes for one row id: the audit was rolled
    back (a restore from an older backup?) and rows were appended again."""

    def __init__(self, row_id: int) -> None:
        super().__init__(f"audit row {row_id} is anchored with two different hashes: the audit was "
                         "rolled back (restored from a backup?) and rewritten")
        self.row_id = row_id


def parse_anchor(text: str) -> tuple[int, str]:
    """``"<id>:<row_hash>"`` or ``"<id> <row_hash>"`` -> ``(id, row_hash)``."""
    match = _ANCHOR.match(text)
    if match is None:
        raise ValueError(f"not an audit anchor (expected ID:SHA256-HEX): {text.strip()!r}")
    return int(match.group(1)), match.group(2).lower()


def read_anchors(lines: Iterable[str], into: dict[int, str] | None = None) -> dict[int, str]:
    """Anchors from anchor-file lines (blank lines and ``#`` comments skipped); raises
    :class:`AnchorConflict` when one id is anchored with two hashes, ``ValueError``
    on a malformed line."""
    anchors = {} if into is None else into
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row_id, row_hash = parse_anchor(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        known = anchors.setdefault(row_id, row_hash)
        if known != row_hash:
            raise AnchorConflict(row_id)
    return anchors


def read_anchor_file(path: Path | None, into: dict[int, str] | None = None) -> dict[int, str]:
    """The anchors recorded in the anchor file at ``path`` (none when there is no
    file); errors as :func:`read_anchors`, ``OSError`` when it cannot be read."""
    anchors = {} if into is None else into
    if path is None or not path.exists():
        return anchors
    with path.open(encoding="utf-8") as lines:
        return read_anchors(lines, anchors)


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, non-JSON values as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def audit_row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The chain hash of one row."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def _fields(
    row_id: int,
    command_id: str | None,
    agent_id: str | None,
    operator: str | None,
    layer: str,
    action: str,
    success: bool,
    details: dict[str, Any],
    timestamp: datetime,
) -> dict[str, Any]:
    return {
        "id": row_id,
        "command_id": command_id,
        "agent_id": agent_id,
        "operator": operator,
        "layer": layer,
        "action": action,
        "success": bool(success),
        "details": details,
        "timestamp": timestamp.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What one audit row records (before it gets its id and hashes)."""

    layer: str
    action: str
    success: bool
    details: dict[str, Any]
    command_id: str | None = None
    agent_id: str | None = None
    operator: str | None = None


def to_dict(row: Any) -> dict[str, Any]:
    """The wire form of an audit row (``GET /audits``), from an :class:`AuditRow` or
    a Core row of its table."""
    return {
        "id": row.id,
        "command_id": row.command_id,
        "agent_id": row.agent_id,
        "operator": row.operator,
        "layer": row.layer,
        "action": row.action,
        "success": row.success,
        "details": row.details,
        "timestamp": row.timestamp.isoformat(),
        "prev_hash": row.prev_hash,
        "row_hash": row.row_hash,
    }


def _stored_details(entry: AuditEntry) -> dict[str, Any]:
    """``entry``'s details normalised through JSON, so what is hashed is exactly what
    is stored."""
    return json.loads(canonical_json(entry.details))


class AuditLog:
    """Appends, verifies and queries the hash-chained audit."""

    def __init__(self, db: Database, anchor_file: Path | None = None) -> None:
        self._db = db
        self.anchor_file = anchor_file
        #: filter -> (head id, rows matching up to it): the audit only grows, so a total
        #: is the last one plus the matching rows appended since (see :meth:`query`)
        self._totals: OrderedDict[tuple[str | None, ...], tuple[int, int]] = OrderedDict()
        # One write at a time in this process; PostgreSQL's advisory lock extends that
        # to every replica, so concurrent appends never fork the chain.
        self._group: GroupCommit[tuple[AuditEntry, dict[str, Any]], dict[str, Any]] = GroupCommit(
            self._write_group, limit=_GROUP_LIMIT)
        #: the walk of the chain against the anchor file in progress: callers meanwhile
        #: share it (any reader may ask; one walk at a time is what it costs)
        self._verifying: asyncio.Task[dict[str, Any]] | None = None

    async def append(self, entry: AuditEntry) -> dict[str, Any]:
        """Append one row to the chain and return it (once committed).

        Rows appended while a write is in progress are written together in the next
        transaction, in the order they were appended (group commit): under load, a
        command's audit rows do not each wait for a transaction of their own.
        """
        return await self._group.submit((entry, _stored_details(entry)))

    async def _write_group(self, batch: list[tuple[AuditEntry, dict[str, Any]]]) -> list[dict[str, Any]]:
        # The audit is part of the kill switch: its writes go first at the writer.
        with urgent():
            rows = await self._append_batch(batch)
        self._anchor(rows)
        return rows

    async def _append_batch(self, batch: list[tuple[AuditEntry, dict[str, Any]]]) -> list[dict[str, Any]]:
        for _attempt in range(_APPEND_ATTEMPTS):
            try:
                return await self._append_once(batch)
            except IntegrityError:
                # Another writer without our lock (a second process on SQLite) took
                # the same position first: re-read the head and retry.
                continue
        raise RuntimeError("audit append kept colliding with other writers")

    def _anchor(self, rows: list[dict[str, Any]]) -> None:
        """Record committed rows outside the database (after the commit, so an
        anchor never names a row that was rolled back)."""
        for row in rows:
            logger.info("audit_appended", audit_id=row["id"], row_hash=row["row_hash"])
        if self.anchor_file is None:
            return
        try:
            # One short O_APPEND write of whole lines: replicas sharing the file
            # interleave whole lines.
            fd = os.open(self.anchor_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, "".join(f"{row['id']} {row['row_hash']}\n" for row in rows).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            # The rows are committed; a missing anchor only weakens truncation checks.
            logger.error("audit_anchor_failed", audit_id=rows[-1]["id"], path=str(self.anchor_file),
                         error=str(exc))

    def anchors(self) -> dict[int, str]:
        """The anchors recorded in this log's anchor file (empty without one)."""
        return read_anchor_file(self.anchor_file)

    async def _append_once(self, batch: list[tuple[AuditEntry, dict[str, Any]]]) -> list[dict[str, Any]]:
        async with self._db.engine.begin() as conn:
            return await self._chain(conn, batch)

    async def append_in(self, conn: AsyncConnection, entry: AuditEntry) -> list[dict[str, Any]]:
        """Append ``entry`` inside the caller's transaction on ``conn``: it commits (or
        rolls back) with what the caller writes there, so a state change and its audit
        row are never one without the other. Call :meth:`anchor` with the result once
        committed. On PostgreSQL the chain's lock is held until the caller commits."""
        return await self._chain(conn, [(entry, _stored_details(entry))])

    def anchor(self, rows: list[dict[str, Any]]) -> None:
        """Record rows :meth:`append_in` wrote, once their transaction committed."""
        if rows:
            self._anchor(rows)

    async def _chain(self, conn: AsyncConnection, batch: list[tuple[AuditEntry, dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
        if self._db.dialect == "postgresql":
            await conn.execute(_PG_LOCK, {"key": _PG_LOCK_KEY})
        last = (await conn.execute(_HEAD)).first()
        prev_hash = last.row_hash if last else GENESIS_HASH
        row_id = last.id if last else 0
        rows = []
        for entry, details in batch:
            row_id += 1
            # Microseconds survive both SQLite and PostgreSQL, so the stored
            # timestamp re-serialises to the hashed string.
            now = utcnow()
            fields = _fields(
                row_id, entry.command_id, entry.agent_id, entry.operator,
                entry.layer, entry.action, entry.success, details, now,
            )
            row_hash = audit_row_hash(prev_hash, fields)
            rows.append({
                "id": row_id, "command_id": entry.command_id, "agent_id": entry.agent_id,
                "operator": entry.operator, "layer": entry.layer, "action": entry.action,
                "success": bool(entry.success), "details": details, "timestamp": now,
                "prev_hash": prev_hash, "row_hash": row_hash,
            })
            prev_hash = row_hash
        await conn.execute(_INSERT, rows)
        return [to_dict(SimpleNamespace(**row)) for row in rows]

    async def verify(self, anchors: Mapping[int, str] | None = None) -> dict[str, Any]:
        """Walk the whole chain in id order, checking it against ``anchors``
        (``{id: row_hash}``; default: this log's anchor file).

        Returns ``{"ok", "rows", "first_broken_id", "reason", "head", "head_id",
        "anchors"}``; ``reason`` says what is wrong with the first broken row
        (altered, deleted before it, reordered, cut from the tail, rewritten),
        ``head`` is the last row's hash and ``anchors`` how many were checked.
        Callers asking for the default check while one runs get its report (rows
        appended after it started may not be in it; the next check has them).
        """
        if anchors is not None:
            return await self._verify(anchors)
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.create_task(self._verify(None))
        return await asyncio.shield(self._verifying)

    async def _verify(self, anchors: Mapping[int, str] | None) -> dict[str, Any]:
        if anchors is None:
            try:
                # Off the loop: the file gains a line per audit row.
                anchors = await asyncio.to_thread(self.anchors)
            except AnchorConflict as exc:
                return _broken(0, exc.row_id, str(exc))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                return _broken(0, None, f"the anchor file {self.anchor_file} cannot be read: {exc}")
        expected_prev = GENESIS_HASH
        count = 0
        after = 0
        matched: set[int] = set()
        async with self._db.bulk_sessions() as session:
            while True:
                rows = (
                    await session.scalars(
                        select(AuditRow)
                        .where(AuditRow.id > after)
                        .order_by(AuditRow.id)
                        .limit(_VERIFY_BATCH)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    count += 1
                    fields = _fields(
                        row.id, row.command_id, row.agent_id, row.operator, row.layer,
                        row.action, row.success, row.details, row.timestamp,
                    )
                    if row.prev_hash != expected_prev:
                        return _broken(count, row.id, _link_reason(row, expected_prev))
                    if audit_row_hash(row.prev_hash, fields) != row.row_hash:
                        return _broken(count, row.id, "row content does not match its hash "
                                       "(altered, or its id was changed)")
                    anchored = anchors.get(row.id)
                    if anchored is not None:
                        if anchored != row.row_hash:
                            return _broken(count, row.id, "row differs from its anchor (the chain "
                                           "was rewritten from here or earlier)")
                        matched.add(row.id)
                    expected_prev = row.row_hash
                    after = row.id
                await asyncio.sleep(0)  # a batch's hashing done: let the loop serve others
        missing = anchors.keys() - matched
        if missing and max(missing) > after:
            return _broken(count, min(i for i in missing if i > after), f"anchored row is missing: "
                           f"rows after {after} were deleted (anchors reach row {max(missing)})")
        if missing:
            return _broken(count, min(missing), "anchored row is missing from the chain (deleted, "
                           "and the chain rewritten around it)")
        return {"ok": True, "rows": count, "first_broken_id": None, "reason": "chain intact",
                "head": expected_prev, "head_id": after or None, "anchors": len(anchors)}

    async def query(
        self,
        *,
        command_id: str | None = None,
        agent_id: str | None = None,
        layer: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Audit rows, newest first, with the total matching count.

        Rows are only ever appended, in id order (one writer at a time, under
        PostgreSQL's advisory lock: rows commit in id order), so the total of a filter
        is kept with the last id when it was counted, and a later query counts only
        the rows appended since, through the primary key. A full count of a million rows
        held SQLite (on the event loop's thread) 13 ms, 190 ms filtered by layer; with
        the running totals a page of 50 takes 1-3 ms there after the first.
        """
        given = {name: value for name, value in
                 (("command_id", command_id), ("agent_id", agent_id), ("layer", layer)) if value is not None}
        shape = tuple(given)
        params: dict[str, Any] = {**given, "limit": max(1, min(limit, 1000)), "offset": max(0, offset)}
        key = (command_id, agent_id, layer)
        async with self._db.reader.connect() as conn:  # Core rows: no ORM identity map to fill
            since, counted = self._totals.pop(key, (0, 0))
            more, head = await self._count(conn, shape, since, params)
            if head < since:  # the table was emptied or restored from an older backup
                (more, head), counted = await self._count(conn, shape, 0, params), 0
            counted += more
            self._totals[key] = (head, counted)
            while len(self._totals) > _TOTALS_KEPT:
                self._totals.popitem(last=False)
            rows = (await conn.execute(_query_statements(shape)[2], params)).all()
        return [to_dict(r) for r in rows], counted

    @staticmethod
    async def _count(conn: Any, shape: tuple[str, ...], since: int, params: dict[str, Any]) -> tuple[int, int]:
        """Rows matching the filters after id ``since``, and the last id: one
        statement, so both are read from the same snapshot."""
        all_rows, newer, _page = _query_statements(shape)
        statement = newer if since else all_rows
        count, last = (await conn.execute(statement, {**params, "since": since})).one()
        return int(count or 0), int(last or 0)


@functools.cache
def _query_statements(shape: tuple[str, ...]) -> tuple[Select[Any], Select[Any], Select[Any]]:
    """For the filters named in ``shape`` (bound parameters of those names): the count
    of every matching row and the last id, the same after id ``since``, and a page
    newest first. Built once per shape (eight exist): building them and their cache
    keys cost more than reading a page."""
    conditions = [_AUDIT.c[name] == bindparam(name) for name in shape]
    head = select(func.max(_AUDIT.c.id)).scalar_subquery()

    def count(*where: Any) -> Select[Any]:
        return select(select(func.count()).select_from(_AUDIT).where(*where).scalar_subquery(), head)

    page = (select(_AUDIT).where(*conditions).order_by(_AUDIT.c.id.desc())
            .limit(bindparam("limit")).offset(bindparam("offset")))
    return count(*conditions), count(_AUDIT.c.id > bindparam("since"), *conditions), page


def _link_reason(row: AuditRow, expected_prev: str) -> str:
    if row.prev_hash == GENESIS_HASH:
        return "row claims to start the chain but follows other rows (reordered)"
    return "prev_hash does not match the preceding row (a row was deleted, inserted or reordered)"


def _broken(count: int, row_id: int | None, reason: str) -> dict[str, Any]:
    return {"ok": False, "rows": count, "first_broken_id": row_id, "reason": reason, "head": None,
            "head_id": None, "anchors": None}
