"""The agents a fleet has seen, and who a message's text mentions."""

from __future__ import annotations

__all__ = ["AgentDirectory"]

# Punctuation that never belongs to an agent id. "." and ":" may sit inside one
# ("svc.payments", "ns:pod") so they only separate at the end of a word.
# A chain of str.replace is ~4x faster than a regex or str.translate here.
_SEPARATORS = (",", "!", "?", ";", "(", ")", "[", "]", '"', "'", "<", ">")


class AgentDirectory:
    """Known agent ids of one fleet, with the time each was last seen.

    Mentions are found by splitting the text once and intersecting the words with
    the known ids: the cost grows with the message's length, not the fleet size.
    """

    __slots__ = ("last_seen",)

    def __init__(self) -> None:
        #: agent id -> newest telemetry time it took part in (the analyzer writes
        #: it directly on the hot path: a method call per agent would cost more)
        self.last_seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.last_seen)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.last_seen

    def see(self, agent_id: str, now: float) -> None:
        """Record that ``agent_id`` took part in something at ``now``."""
        self.last_seen[agent_id] = now

    def mentions(self, text: str | None, speaker: str, limit: int) -> list[str]:
        """Known agents named in ``text`` (not the speaker), sorted, at most ``limit``.

        "attack agent-c.", "(agent-c)" and "agent-c's" all mention agent-c.
        """
        if not text:
            return []
        for separator in _SEPARATORS:
            if separator in text:
                text = text.replace(separator, " ")
        words = text.replace(". ", " ").replace(": ", " ").rstrip(".:").split()
        found = self.last_seen.keys() & words
        if not found:
            return []
        found.discard(speaker)
        return sorted(found)[:limit]

    def agents(self) -> list[str]:
        """All known agent ids, sorted."""
        return sorted(self.last_seen)

    def prune(self, older_than: float) -> int:
        """Forget agents not seen since ``older_than``; returns how many."""
        stale = [a for a, seen in self.last_seen.items() if seen < older_than]
        for agent_id in stale:
            del self.last_seen[agent_id]
        return len(stale)
