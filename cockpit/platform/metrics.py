"""Prometheus metrics: the runbook's names, registered at start-up with label values
pre-created so every series exists before its first event."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "LatencyWindow", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LAYERS = ("semantic", "strategic", "synthesis", "total")
_SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
_COMMAND_TYPES = ("MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT")
_FINAL = ("COMPLETED", "FAILED", "TIMEOUT")
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class LatencyWindow:
    """Recent latencies (the last ``seconds``), for p50/p95 on dashboards: a
    Prometheus histogram answers over scrape intervals, an operator asks "right now"."""

    def __init__(self, seconds: float = 300.0, max_samples: int = 50_000) -> None:
        self._seconds = seconds
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def observe(self, value: float) -> None:
        self._samples.append((time.monotonic(), value))

    def quantiles(self) -> dict[str, float | int | None]:
        horizon = time.monotonic() - self._seconds
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        values = sorted(v for _, v in self._samples)
        if not values:
            return {"p50": None, "p95": None, "count": 0}

        def q(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2)

        return {"p50": q(0.50), "p95": q(0.95), "count": len(values)}


class Metrics:
    """Every metric Cockpit exports, on one registry (one per process, or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.filter_requests = Counter(
            "narrative_filter_requests_total", "Telemetry messages analysed", registry=r
        )
        self.filter_errors = Counter(
            "narrative_filter_errors_total", "Telemetry messages that failed analysis", registry=r
        )
        self.filter_backlog = Gauge(
            "narrative_filter_backlog_messages",
            "Telemetry stored but not analysed yet (last count, all replicas)", registry=r,
        )
        self.filter_backlog_refusals = Counter(
            "narrative_filter_backlog_refusals_total",
            "Telemetry requests answered 503 because analysis was too far behind", registry=r,
        )
        self.filter_duration = Histogram(
            "narrative_filter_processing_duration_seconds",
            "Time spent analysing a batch of telemetry, per layer",
            ["layer"],
            buckets=_FAST,
            registry=r,
        )
        self.telemetry_ingested = Counter(
            "cockpit_telemetry_ingested_total",
            "Telemetry accepted at the edge, by path and outcome",
            ["path", "outcome"],
            registry=r,
        )
        self.verdicts_generated = Counter(
            "verdict_engine_verdicts_generated_total",
            "Verdicts created, by severity",
            ["severity"],
            registry=r,
        )
        self.verdicts_updated = Counter(
            "verdict_engine_verdicts_updated_total", "Verdict updates (evidence grew)", registry=r
        )
        self.telemetry_to_verdict = Histogram(
            "verdict_engine_telemetry_to_verdict_seconds",
            "From telemetry received to verdict stored",
            buckets=_FAST,
            registry=r,
        )
        self.commands_executed = Counter(
            "command_bus_commands_executed_total",
            "C2L commands finished, by type and final status",
            ["type", "status"],
            registry=r,
        )
        self.kill_switch_failures = Counter(
            "command_bus_kill_switch_failures_total",
            "Kill-switch layers that failed (escalated to the next, or not made up for), and "
            "commands that failed without a layer failing",
            registry=r,
        )
        self.command_latency = Histogram(
            "command_bus_command_confirmation_seconds",
            "From command accepted to confirmation published",
            ["type"],
            buckets=_FAST,
            registry=r,
        )
        self.telemetry_to_verdict_window = LatencyWindow()
        self.ws_clients = Gauge("cockpit_ws_clients", "Connected WebSocket clients", registry=r)
        self.bus_rejected = Counter(
            "cockpit_bus_events_rejected_total",
            "Broker messages dropped as not their channel's event (not JSON, or against the schema)",
            ["channel"], registry=r,
        )
        self.ws_catch_ups = Counter(
            "cockpit_ws_catch_ups_total",
            "Replays from the stream log to WebSocket clients that fell behind their queue "
            "(one per turn of ws_replay_limit events)",
            registry=r,
        )
        self.http_errors = Counter(
            "cockpit_http_errors_total", "HTTP responses with status >= 400", ["status"], registry=r
        )
        self.http_in_flight = Gauge(
            "cockpit_http_requests_in_flight", "Telemetry and read-query requests in progress (the shed bound)",
            registry=r,
        )
        self.http_shed = Counter(
            "cockpit_http_shed_total", "Requests answered 503 because the server was overloaded",
            ["method"], registry=r,
        )
        for layer in _LAYERS:
            self.filter_duration.labels(layer=layer)
        for sev in _SEVERITIES:
            self.verdicts_generated.labels(severity=sev)
        for ctype in _COMMAND_TYPES:
            self.command_latency.labels(type=ctype)
            for status in _FINAL:
                self.commands_executed.labels(type=ctype, status=status)

    def telemetry_to_verdict_quantiles(self) -> dict[str, float | int | None]:
        """Telemetry -> verdict p50/p95 (ms) over the last five minutes."""
        return self.telemetry_to_verdict_window.quantiles()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
