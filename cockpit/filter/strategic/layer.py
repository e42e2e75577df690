"""Layer 2 across fleets: routes each telemetry item to its fleet's analyzer."""

from __future__ import annotations

from collections.abc import Iterable

from cockpit.events.telemetry import Telemetry
from cockpit.filter.analysis import SemanticResult
from cockpit.filter.strategic.analyzer import FleetAnalyzer
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding

__all__ = ["StrategicLayer"]


class StrategicLayer:
    """The fleets this replica owns, each with its own ``FleetAnalyzer``.

    A fleet's analyzer is created on its first telemetry item; ``release`` drops
    it when the fleet's partition moves to another replica, and ``adopt`` rebuilds
    it from stored telemetry when this replica takes a fleet over.
    """

    def __init__(self, config: StrategicConfig | None = None) -> None:
        self.config = config or StrategicConfig()
        self._fleets: dict[str, FleetAnalyzer] = {}

    def __contains__(self, fleet_id: object) -> bool:
        return fleet_id in self._fleets

    def fleets(self) -> list[str]:
        """Ids of the fleets analysed here, sorted."""
        return sorted(self._fleets)

    def analyzer(self, fleet_id: str) -> FleetAnalyzer:
        """The fleet's analyzer, created if needed."""
        analyzer = self._fleets.get(fleet_id)
        if analyzer is None:
            analyzer = self._fleets[fleet_id] = FleetAnalyzer(fleet_id, self.config)
        return analyzer

    def observe(self, telemetry: Telemetry, semantic: SemanticResult | None = None
                ) -> list[Finding]:
        """Route one item to its fleet (see ``FleetAnalyzer.observe``)."""
        analyzer = self._fleets.get(telemetry.fleet_id)
        if analyzer is None:
            analyzer = self.analyzer(telemetry.fleet_id)
        return analyzer.observe(telemetry, semantic)

    def adopt(self, fleet_id: str,
              history: Iterable[tuple[Telemetry, SemanticResult | None]]) -> FleetAnalyzer:
        """Rebuild a fleet taken over from another replica from its history."""
        analyzer = FleetAnalyzer(fleet_id, self.config)
        analyzer.replay(history)
        self._fleets[fleet_id] = analyzer
        return analyzer

    def release(self, fleet_id: str) -> None:
        """Forget a fleet whose partition moved to another replica."""
        self._fleets.pop(fleet_id, None)
