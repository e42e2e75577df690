"""The narrative filter's consumer: telemetry -> semantic -> strategic -> synthesis."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from loguru import logger

from cockpit.events import Telemetry, TelemetryKind, TelemetryReceived
from cockpit.filter.analysis import SemanticResult
from cockpit.filter.ingest import IngestResult, TelemetryStore, telemetry_from_row
from cockpit.filter.semantic import SemanticAnalyzer
from cockpit.filter.strategic import StrategicConfig, StrategicLayer
from cockpit.filter.synthesis import SynthesisConfig, Synthesizer
from cockpit.platform.bus import Channel, EventBus
from cockpit.platform.db import utcnow
from cockpit.platform.metrics import Metrics

__all__ = ["NarrativeFilter"]


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
    ) -> None:
        self.store = store
        self._bus = bus
        self._metrics = metrics
        self.semantic = semantic
        self.strategic = StrategicLayer(strategic_config)
        self.synthesizer = Synthesizer(synthesis_config)
        self._rebuild_window = rebuild_window
        self._rebuild_limit = rebuild_limit

    def register(self) -> None:
        """Consume telemetry; shared, so replicas split the fleets between them."""
        self._bus.subscribe(Channel.TELEMETRY, TelemetryReceived, self.on_telemetry, shared=True)

    async def ingest(
        self, messages: Sequence[Telemetry], quarantined_agents: set[str] | frozenset[str] = frozenset()
    ) -> IngestResult:
        """Store new messages, then publish them for analysis (one event per fleet).

        The rows are committed before anything is published, so an acknowledged
        message is never lost; what the bus loses is re-analysed at rebuild.
        """
        result = await self.store.insert_new(messages, quarantined_agents)
        for fleet_id, new in result.new_by_fleet.items():
            await self._bus.publish(
                Channel.TELEMETRY, TelemetryReceived(fleet_id=fleet_id, messages=new), key=fleet_id
            )
        return result

    async def on_telemetry(self, event: TelemetryReceived) -> None:
        """Analyse a batch: claim it (exactly-once analysis), then the three layers."""
        started = time.perf_counter()
        messages = list(event.messages)
        try:
            if not event.stored:
                inserted = await self.store.insert_new(messages)
                messages = inserted.new_by_fleet.get(event.fleet_id, [])
            claimed = await self.store.claim([m.message_id for m in messages])
            messages = [m for m in messages if m.message_id in claimed]
            if not messages:
                return
            drafts = await self._analyse(messages, event)
        except Exception:
            self._metrics.filter_errors.inc(len(messages))
            raise
        for draft in drafts:
            await self._bus.publish(Channel.ANALYSIS, draft, key=draft.fleet_id)
        self._metrics.filter_requests.inc(len(messages))
        self._metrics.filter_duration.labels(layer="total").observe(time.perf_counter() - started)

    async def _analyse(self, messages: list[Telemetry], event: TelemetryReceived) -> list[Any]:
        t0 = time.perf_counter()
        texts = [m.content or "" for m in messages if m.kind is TelemetryKind.MESSAGE]
        attrs = [m.attributes for m in messages if m.kind is TelemetryKind.MESSAGE]
        results = iter(self.semantic.analyze_many(texts, attrs) if texts else [])
        semantic: list[SemanticResult | None] = [
            next(results) if m.kind is TelemetryKind.MESSAGE else None for m in messages
        ]
        t1 = time.perf_counter()
        self._metrics.filter_duration.labels(layer="semantic").observe(t1 - t0)
        await self.store.record_analysis(
            [
                {"mid": m.message_id, "intent": s.intent.value, "conf": s.intent_confidence,
                 "score": s.deception_score}
                for m, s in zip(messages, semantic, strict=True)
                if s is not None
            ]
        )
        t2 = time.perf_counter()
        findings = []
        for message, result in zip(messages, semantic, strict=True):
            findings.extend(self.strategic.observe(message, result))
        t3 = time.perf_counter()
        self._metrics.filter_duration.labels(layer="strategic").observe(t3 - t2)
        drafts = self.synthesizer.drafts(findings)
        observed = event.received_at
        drafts = [d.model_copy(update={"observed_at": observed}) for d in drafts]
        self._metrics.filter_duration.labels(layer="synthesis").observe(time.perf_counter() - t3)
        return drafts

    async def rebuild(self) -> int:
        """Rebuild strategic state from recent stored telemetry (at start, or when this
        replica takes fleets over), without emitting drafts for the past."""
        rows = await self.store.recent(utcnow() - self._rebuild_window, self._rebuild_limit)
        texts = [r.content or "" for r in rows if r.kind == "message"]
        attrs = [r.attributes for r in rows if r.kind == "message"]
        results = iter(self.semantic.analyze_many(texts, attrs) if texts else [])
        count = 0
        for row in rows:
            if row.analysed_at is None:
                continue  # still on the bus, or lost: analysed when it arrives / re-published
            sem = next(results) if row.kind == "message" else None
            self.strategic.observe(telemetry_from_row(row), sem)
            count += 1
        # Keep the synthesizer quiet about situations already reported before restart.
        logger.info("strategic_state_rebuilt", messages=count, fleets=len(self.strategic.fleets()))
        return count

    def alliance_graph(self, fleet_id: str | None = None) -> dict[str, Any]:
        """Nodes, weighted edges and communities of one fleet (or all fleets)."""
        fleets = [fleet_id] if fleet_id else self.strategic.fleets()
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        communities: list[list[str]] = []
        for fid in fleets:
            if fid not in self.strategic:
                continue
            snap = self.strategic.analyzer(fid).graph().to_dict()
            nodes.extend({**n, "fleet_id": fid} if isinstance(n, dict) else {"id": n, "fleet_id": fid}
                         for n in snap.get("nodes", []))  # type: ignore[union-attr]
            edges.extend({**e, "fleet_id": fid} for e in snap.get("edges", []))  # type: ignore[union-attr]
            communities.extend(snap.get("communities", []))  # type: ignore[arg-type]
        return {"nodes": nodes, "edges": edges, "communities": communities}
