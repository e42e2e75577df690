"""The narrative filter's consumer: telemetry -> semantic -> strategic -> synthesis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from loguru import logger

from cockpit.events import MessageAnalysis, Telemetry, TelemetryKind, TelemetryReceived
from cockpit.filter.analysis import Intent, SemanticResult
from cockpit.filter.ingest import IngestResult, TelemetryStore, telemetry_from_row
from cockpit.filter.patterns import PatternStore
from cockpit.filter.semantic import SemanticAnalyzer
from cockpit.filter.strategic import AllianceEdge, StrategicConfig, StrategicLayer, snapshot_of
from cockpit.filter.synthesis import SynthesisConfig, Synthesizer
from cockpit.platform.batching import GroupCommit
from cockpit.platform.bus import Assignment, Channel, EventBus, EventTooLarge
from cockpit.platform.db import utcnow
from cockpit.platform.metrics import Metrics
from cockpit.platform.retry import until_done

__all__ = ["NarrativeFilter"]

#: requests smaller than this join a group commit; larger ones are written at once
_GROUP_COMMIT_BELOW = 100
#: the backlog gauge counts up to this many waiting messages when ingestion is unbounded
_BACKLOG_COUNT_CAP = 100_000
#: past the backlog bound, agents below their share of it are still admitted until the
#: backlog is this fraction of the bound above it
_FAIR_MARGIN = 0.25


class NarrativeFilter:
    """Ingests telemetry (stored first, then published) and analyses it in three
    layers when it comes back from the bus, publishing verdict drafts."""

    def __init__(
        self,
        store: TelemetryStore,
        bus: EventBus,
        metrics: Metrics,
        *,
        semantic: SemanticAnalyzer,
        strategic_config: StrategicConfig,
        synthesis_config: SynthesisConfig,
        rebuild_window: timedelta = timedelta(hours=1),
        rebuild_limit: int = 50_000,
        max_backlog: int = 0,
    ) -> None:
        self.store = store
        self.patterns = PatternStore(store.db)
        self._bus = bus
        self._metrics = metrics
        self.semantic = semantic
        self.strategic = StrategicLayer(strategic_config)
        self.synthesizer = Synthesizer(synthesis_config)
        self._rebuild_window = rebuild_window
        self._rebuild_limit = rebuild_limit
        self._small: GroupCommit[tuple[list[Telemetry], frozenset[str]], IngestResult] = GroupCommit(
            self._ingest_group)
        self.max_backlog = max_backlog
        self._backlog = 0
        #: fleet -> (its analyzer and message count, monotonic time) at its last alliance snapshot
        self._alliances_written: dict[str, tuple[tuple[int, int], float]] = {}
        #: while the bound is reached: messages waiting for analysis, by sending agent
        self._waiting_by_agent: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        metrics.filter_backlog.set_function(lambda: self._backlog)
        #: which of these agents are MUTED now (C2L's, wired by bootstrap): their raw
        #: topic telemetry is stored quarantined, as HTTP ingestion stores it
        self.muted: Callable[[set[str]], Awaitable[set[str]]] | None = None

    def register(self) -> None:
        """Consume telemetry; shared, so replicas split the fleets between them."""
        self._bus.subscribe(Channel.TELEMETRY, TelemetryReceived, self.on_telemetry, shared=True,
                            on_assign=self.reassign)

    async def reassign(self, assignment: Assignment) -> None:
        """The bus moved fleet partitions: forget the fleets now analysed elsewhere and
        rebuild those just taken over (before their first message is delivered)."""
        for fleet_id in self.strategic.fleets():
            if not assignment.owns(fleet_id):
                self.strategic.release(fleet_id)
        if assignment.gained:
            await self._adopt(assignment.gained_key)

    def analyse_messages(self, messages: Sequence[Telemetry]) -> list[MessageAnalysis | None]:
        """Layer 1 over a batch (vectorised); ``None`` for actions."""
        said = [m for m in messages if m.kind is TelemetryKind.MESSAGE]
        intents, confidences, scores = self.semantic.score_many(
            [m.content or "" for m in said], [m.attributes for m in said]
        )
        summaries = iter(
            MessageAnalysis.model_construct(intent=i.value, intent_confidence=c, deception_score=d)
            for i, c, d in zip(intents, confidences, scores, strict=True)
        )
        return [next(summaries) if m.kind is TelemetryKind.MESSAGE else None for m in messages]

    async def ingest(
        self, messages: Sequence[Telemetry], quarantined_agents: set[str] | frozenset[str] = frozenset()
    ) -> IngestResult:
        """Analyse (Layer 1), store new messages, then publish them for Layers 2-3
        (one event per fleet).

        The rows are committed before anything is published, so an acknowledged
        message is never lost. Small requests that arrive while a write is in progress
        are stored together in the next transaction (group commit): one commit and one
        bus event for many single-message requests.
        """
        if len(messages) >= _GROUP_COMMIT_BELOW:
            return await self._ingest_now(messages, quarantined_agents)
        return await self._small.submit((list(messages), frozenset(quarantined_agents)))

    async def _ingest_group(self, requests: list[tuple[list[Telemetry], frozenset[str]]]) -> list[IngestResult]:
        """Small requests stored in one transaction; each request's own result."""
        combined = [m for messages, _ in requests for m in messages]
        quarantined = frozenset().union(*(q for _, q in requests))
        stored = await self._ingest_now(combined, quarantined)
        taken: set[str] = set()
        refused = {id(m) for m in stored.conflicts}
        results = []
        for messages, _ in requests:
            mine = IngestResult()
            for m in messages:
                if id(m) in refused:
                    mine.conflicts.append(m)
                elif m.message_id in stored.inserted and m.message_id not in taken:
                    taken.add(m.message_id)
                    mine.accepted += 1
                    mine.quarantined += m.source_agent_id in quarantined
                else:
                    mine.duplicates += 1
            results.append(mine)
        return results

    async def _ingest_now(
        self, messages: Sequence[Telemetry], quarantined_agents: set[str] | frozenset[str]
    ) -> IngestResult:
        started = time.perf_counter()
        # Quarantined (MUTED) agents' messages are kept as evidence but never analysed.
        analysable = [m for m in messages if m.source_agent_id not in quarantined_agents]
        analysis = self.analyse_messages(analysable)
        self._metrics.filter_duration.labels(layer="semantic").observe(time.perf_counter() - started)
        by_id = {m.message_id: a for m, a in zip(analysable, analysis, strict=True) if a is not None}
        result = await self.store.insert_new(messages, quarantined_agents, by_id)
        # Counted at once, so this replica's own burst closes the gate before the next
        # count (which also sees the other replicas' telemetry) comes round.
        self._backlog += sum(len(new) for new in result.new_by_fleet.values())
        if self.backlog_full():
            waiting = self._waiting_by_agent
            for new in result.new_by_fleet.values():
                for m in new:
                    waiting[m.source_agent_id] = waiting.get(m.source_agent_id, 0) + 1
        for fleet_id, new in result.new_by_fleet.items():
            await self._publish(fleet_id, new, [by_id.get(m.message_id) for m in new])
        return result

    async def _publish(
        self, fleet_id: str, messages: list[Telemetry], analysis: list[MessageAnalysis | None], *,
        by_id: bool = False,
    ) -> bool:
        """Publish stored messages of a fleet for Layers 2-3; ``False`` if (some of)
        them must wait for the redispatch.

        An event larger than the broker takes in one message (NATS's ``max_payload``,
        1 MiB by default, holds a dozen long messages of a batch) goes in halves, in
        order; a message too large on its own goes ``by_id``, and its consumer reads it
        back from the database."""
        event = (TelemetryReceived(fleet_id=fleet_id, messages=[], stored_ids=[m.message_id for m in messages])
                 if by_id else TelemetryReceived(fleet_id=fleet_id, messages=messages, analysis=analysis))
        try:
            await self._bus.publish(Channel.TELEMETRY, event, key=fleet_id)
        except EventTooLarge as exc:
            if len(messages) > 1:
                half = len(messages) // 2
                return (await self._publish(fleet_id, messages[:half], analysis[:half], by_id=by_id)
                        and await self._publish(fleet_id, messages[half:], analysis[half:], by_id=by_id))
            if by_id:  # not even an id fits: a broker configured with a tiny limit
                logger.error("telemetry_dispatch_impossible", fleet_id=fleet_id, message_id=messages[0].message_id,
                             error=str(exc))
                return False
            return await self._publish(fleet_id, messages, analysis, by_id=True)
        except Exception as exc:  # noqa: BLE001 - the rows are stored: redispatch sends them later
            logger.warning("telemetry_dispatch_deferred", fleet_id=fleet_id, messages=len(messages),
                           error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    async def redispatch_once(self, older_than: timedelta = timedelta(seconds=60), limit: int = 5000) -> int:
        """Publish again stored telemetry that nobody analysed (a broker outage lost it);
        the claim makes a late original delivery harmless."""
        rows = await self.store.unanalysed(utcnow() - older_than, limit)
        by_fleet: dict[str, list[Any]] = {}
        for row in rows:
            by_fleet.setdefault(row.fleet_id, []).append(row)
        sent = 0
        for fleet_id, fleet_rows in by_fleet.items():
            messages = [telemetry_from_row(r) for r in fleet_rows]
            analysis = [_stored_analysis(r) for r in fleet_rows]
            if await self._publish(fleet_id, messages, analysis):
                sent += len(messages)
        if sent:
            logger.info("telemetry_redispatched", messages=sent)
        return sent

    async def persist_alliances(self) -> int:
        """Snapshot into the ``alliances`` table the alliance graph of each fleet that
        analysed telemetry since its last snapshot; returns how many were written.

        A fleet's weights decay on its telemetry's clock, so a quiet fleet's graph does
        not change: its rows are only rewritten every quarter of the rebuild window,
        which keeps them within the window other replicas read them from. Rewriting
        every fleet every round made an idle server's work grow with the fleets it had
        ever seen."""
        refresh = self._rebuild_window.total_seconds() / 4
        now = time.monotonic()
        kept: dict[str, tuple[tuple[int, int], float]] = {}
        written = 0
        for fleet_id in self.strategic.fleets():
            analyzer = self.strategic.analyzer(fleet_id)
            mark = (id(analyzer), analyzer.messages_observed)  # a fleet re-adopted is a new analyzer
            last = self._alliances_written.get(fleet_id)
            if last is not None and last[0] == mark and now - last[1] < refresh:
                kept[fleet_id] = last
                continue
            # Only the pair strengths are stored: no community detection every few seconds.
            graph = analyzer.graph(communities=False).to_dict()
            await self.patterns.record_alliances(fleet_id, graph["edges"])
            kept[fleet_id] = (mark, now)
            written += 1
        self._alliances_written = kept  # fleets released since are forgotten
        return written

    # -- analysis backlog (admission of new telemetry) ------------------------------

    @property
    def backlog(self) -> int:
        """Telemetry stored but not analysed yet, all replicas (as of the last count,
        plus what this replica stored since)."""
        return self._backlog

    def backlog_full(self) -> bool:
        """True while analysis is ``max_backlog`` messages or more behind (never with
        ``max_backlog`` 0): ingestion admits only the agents :meth:`admits` lets in."""
        return 0 < self.max_backlog <= self._backlog

    @property
    def backlog_hard_limit(self) -> int:
        """The backlog at which ingestion refuses every sender."""
        return self.max_backlog + max(1, int(self.max_backlog * _FAIR_MARGIN))

    @property
    def backlog_share(self) -> int:
        """Past the bound, how many waiting messages an agent may have and still be
        admitted: the bound split evenly between the agents with telemetry waiting."""
        return max(1, self.max_backlog // max(1, len(self._waiting_by_agent)))

    def admits(self, sources: Iterable[str]) -> bool:
        """Whether telemetry sent as ``sources`` (agent ids) may be stored now.

        Below ``max_backlog``, all of it. Past it, analysis is behind, but not because
        of every sender alike: an agent with its share of the backlog waiting
        (:attr:`backlog_share`) is refused until some of it is analysed, while one
        below its share is admitted, so one agent's flood (or a burst of big batches)
        does not silence the others. Past :attr:`backlog_hard_limit`, no one is.
        """
        if not self.backlog_full():
            return True
        if self._backlog >= self.backlog_hard_limit:
            return False
        share, waiting = self.backlog_share, self._waiting_by_agent
        return all(waiting.get(agent, 0) < share for agent in sources)

    def over_share(self, sources: Iterable[str]) -> dict[str, int]:
        """Those of ``sources`` with their share of the backlog or more waiting (as last
        counted), with how many of their messages wait."""
        share, waiting = self.backlog_share, self._waiting_by_agent
        return {agent: waiting[agent] for agent in sorted(set(sources)) if waiting.get(agent, 0) >= share}

    def _analysed(self, agents: Iterable[str]) -> None:
        waiting = self._waiting_by_agent
        for agent in agents:
            left = waiting.get(agent, 0) - 1
            if left > 0:
                waiting[agent] = left
            else:
                waiting.pop(agent, None)

    async def count_backlog(self) -> int:
        """Count the waiting telemetry in the database (shared by every replica); past
        the bound, count it by agent too (for :meth:`admits`)."""
        if not self.max_backlog:
            self._backlog = await self.store.backlog(_BACKLOG_COUNT_CAP)
            return self._backlog
        cap = self.backlog_hard_limit + 1
        if self.backlog_full():  # still past the bound, most likely: count by agent at once
            by_agent = await self.store.backlog_by_agent(cap)
            backlog = sum(by_agent.values())
        else:
            backlog = await self.store.backlog(cap)
            by_agent = await self.store.backlog_by_agent(cap) if backlog >= self.max_backlog else {}
        self._waiting_by_agent = by_agent if backlog >= self.max_backlog else {}
        self._backlog = backlog
        return backlog

    async def start(self, interval: float = 5.0, backlog_interval: float = 0.5) -> None:
        """Run the redispatch loop and the backlog count in the background."""
        self._tasks = [asyncio.create_task(self._redispatch_forever(interval)),
                       asyncio.create_task(self._count_backlog_forever(backlog_interval))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _count_backlog_forever(self, interval: float) -> None:
        while True:
            try:
                await self.count_backlog()
            except Exception:  # noqa: BLE001 - a database outage: /health reports it
                logger.opt(exception=True).debug("telemetry_backlog_count_failed")
            await asyncio.sleep(interval)

    async def _redispatch_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.redispatch_once()
                await self.persist_alliances()
            except Exception:  # noqa: BLE001 - a database outage: try again next round
                logger.opt(exception=True).warning("telemetry_redispatch_failed")

    async def on_telemetry(self, event: TelemetryReceived) -> None:
        """Layers 2-3 over a batch, after claiming it (exactly-once analysis)."""
        started = time.perf_counter()
        messages = list(event.messages)
        try:
            # Layer 1 results and messages by id come from ingestion's own events only:
            # agents publishing on the topic (unstored) cannot supply their own scores.
            if event.stored and event.analysis is not None and len(event.analysis) == len(messages):
                analysis = list(event.analysis)
            else:
                analysis = self.analyse_messages(messages)
            # The database steps before the claim wait out an outage too: failing here,
            # the event would be acknowledged and its messages left to the redispatch
            # (a minute later), analysed after the fleet's later ones (a breach before
            # the promise it breaks).
            if event.stored and event.stored_ids:  # too large for the broker: read back, with their Layer 1 results
                rows = await until_done(lambda: self.store.rows(event.stored_ids), what="telemetry_read")
                messages += [telemetry_from_row(row) for row in rows]
                analysis += [_stored_analysis(row) for row in rows]
            if not event.stored:
                by_id = {m.message_id: a for m, a in zip(messages, analysis, strict=True) if a}
                muted_of, sources = self.muted, {m.source_agent_id for m in messages}
                muted = await until_done(lambda: muted_of(sources), what="telemetry_mute_check") if muted_of else set()
                inserted = await until_done(lambda: self.store.insert_new(messages, muted, by_id),
                                            what="telemetry_store")
                if inserted.conflicts:
                    self._metrics.telemetry_ingested.labels(path="bus", outcome="conflict").inc(
                        len(inserted.conflicts))
                    logger.warning("telemetry_id_conflict", fleet_id=event.fleet_id,
                                   message_ids=[m.message_id for m in inserted.conflicts[:10]],
                                   refused=len(inserted.conflicts))
                new_ids = {m.message_id for new in inserted.new_by_fleet.values() for m in new}
                keep = [i for i, m in enumerate(messages) if m.message_id in new_ids]
                messages, analysis = [messages[i] for i in keep], [analysis[i] for i in keep]
            ids = [m.message_id for m in messages]
            claimed = await until_done(lambda: self.store.claim(ids), what="telemetry_claim")
            self._backlog = max(0, self._backlog - len(claimed))
            pairs = [(m, a) for m, a in zip(messages, analysis, strict=True) if m.message_id in claimed]
            if not pairs:
                return
            if self._waiting_by_agent:
                self._analysed(m.source_agent_id for m, _ in pairs)
            t0 = time.perf_counter()
            findings = []
            for message, summary in pairs:
                findings.extend(self.strategic.observe(message, _result(summary)))
            t1 = time.perf_counter()
            self._metrics.filter_duration.labels(layer="strategic").observe(t1 - t0)
            drafts = [
                d.model_copy(update={"observed_at": event.received_at})
                for d in self.synthesizer.drafts(findings)
            ]
            self._metrics.filter_duration.labels(layer="synthesis").observe(time.perf_counter() - t1)
        except Exception:
            self._metrics.filter_errors.inc(len(messages))
            raise
        # The telemetry is claimed and the state has moved on: from here on, an outage
        # of the database or the broker is waited out, never a reason to drop a draft.
        await until_done(lambda: self.patterns.record_drafts(drafts), what="pattern_record")
        for draft in drafts:
            publish = functools.partial(self._bus.publish, Channel.ANALYSIS, draft, key=draft.fleet_id)
            await until_done(publish, what="draft_publish")
        self._metrics.filter_requests.inc(len(pairs))
        self._metrics.filter_duration.labels(layer="total").observe(time.perf_counter() - started)

    async def rebuild(self) -> int:
        """Rebuild strategic state from recent stored telemetry at start, without
        emitting drafts for the past. Where the bus assigns fleet partitions (NATS,
        Kafka), each is rebuilt when this replica is given it (:meth:`reassign`): a
        rebuild now would be replaced then."""
        if self._bus.assigns_partitions(Channel.TELEMETRY):
            return 0
        return await self._adopt(lambda _fleet: True)

    async def _adopt(self, wanted: Callable[[str], bool]) -> int:
        """Replace the state of the ``wanted`` fleets with one replayed from their
        recent analysed telemetry."""
        rows = await self.store.recent(utcnow() - self._rebuild_window, self._rebuild_limit)
        history: dict[str, list[tuple[Telemetry, SemanticResult | None]]] = defaultdict(list)
        for row in rows:
            if row.analysed_at is None or not wanted(row.fleet_id):
                continue  # still on the bus: analysed when it arrives
            history[row.fleet_id].append((telemetry_from_row(row), _result(_stored_analysis(row))))
        for fleet_id, items in history.items():
            self.strategic.adopt(fleet_id, items)
        count = sum(len(items) for items in history.values())
        logger.info("strategic_state_rebuilt", messages=count, fleets=len(history))
        return count

    async def alliance_graph(self, fleet_id: str | None = None) -> dict[str, Any]:
        """Nodes, weighted edges and communities of one fleet (or all fleets): live for
        the fleets this replica analyses; for the others (analysed by another replica
        on NATS or Kafka), the snapshot their replica last wrote (every few seconds)."""
        snapshots = [(fid, self.strategic.analyzer(fid).graph())
                     for fid in ([fleet_id] if fleet_id else self.strategic.fleets()) if fid in self.strategic]
        stored = {} if fleet_id in self.strategic else await self.patterns.alliances(
            utcnow() - self._rebuild_window, fleet_id)
        # Stored weights are the edges' own (already rounded).
        snapshots += [(fid, snapshot_of(AllianceEdge(a, b, w) for a, b, w in pairs))
                      for fid, pairs in stored.items() if fid not in self.strategic]
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        communities: list[list[str]] = []
        for fid, snapshot in snapshots:
            snap = snapshot.to_dict()
            nodes.extend({**n, "fleet_id": fid} for n in snap["nodes"])
            edges.extend({**e, "fleet_id": fid} for e in snap["edges"])
            communities.extend(snap["communities"])
        return {"nodes": nodes, "edges": edges, "communities": communities}


_NO_EMBEDDING = np.zeros(0, dtype=np.float32)


def _stored_analysis(row: Any) -> MessageAnalysis | None:
    if row.intent is None:
        return None
    return MessageAnalysis(
        intent=row.intent,
        intent_confidence=row.intent_confidence or 0.0,
        deception_score=row.deception_score or 0.0,
    )


def _result(summary: MessageAnalysis | None) -> SemanticResult | None:
    # Layer 2 reads intent and deception only; the embedding is not carried on the bus.
    if summary is None:
        return None
    return SemanticResult(
        Intent(summary.intent), summary.intent_confidence, summary.deception_score, _NO_EMBEDDING
    )
