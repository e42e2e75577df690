"""DECEPTION: an agent whose messages score as deceptive, or who keeps switching
between cooperation and competition toward the same counterpart."""

from __future__ import annotations

from collections import deque
from datetime import datetime

from cockpit.events.verdict import Category
from cockpit.filter.analysis import Intent
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding, time_ordered_evidence

__all__ = ["AgentConduct", "DeceptionDetector"]


class AgentConduct:
    """One agent's recent conduct: a message window with a running score sum,
    its last stance toward each counterpart, and its recent turns (a stance
    repeated or flipped toward a counterpart it had already taken one toward)."""

    __slots__ = ("flip_count", "last_seen", "reported", "score_sum", "scores", "stance",
                 "turns")

    def __init__(self, config: StrategicConfig) -> None:
        self.scores: deque[tuple[float, float, str]] = deque(maxlen=config.deception_window)
        self.score_sum = 0.0
        #: counterpart -> (COOPERATIVE or COMPETITIVE, time, message id)
        self.stance: dict[str, tuple[Intent, float, str]] = {}
        #: (time, flipped, message id, previous time, previous message id)
        self.turns: deque[tuple[float, bool, str, float, str]] = deque(
            maxlen=config.stance_window
        )
        self.flip_count = 0
        #: score of the last finding reported (-1: none since below threshold)
        self.reported = -1.0
        self.last_seen = 0.0


class DeceptionDetector:
    """Per-agent deception score: the windowed mean of message scores combined
    (noisy-or) with the switching rate, the share of recent turns toward a
    counterpart that flipped between COOPERATIVE and COMPETITIVE.

    A rate rather than a count, so a chatty agent is not flagged for the
    occasional misclassified intent, while one that alternates is (rate 1.0).
    Everything is O(1) amortised per message.
    """

    __slots__ = ("_conduct", "_config", "_fleet_id")

    def __init__(self, fleet_id: str, config: StrategicConfig) -> None:
        self._fleet_id = fleet_id
        self._config = config
        self._conduct: dict[str, AgentConduct] = {}

    def __len__(self) -> int:
        return len(self._conduct)

    def conduct(self, agent: str) -> AgentConduct | None:
        """The agent's tracked conduct, if any."""
        return self._conduct.get(agent)

    def conducts(self) -> list[AgentConduct]:
        """Every tracked agent's conduct (for inspection and boundedness checks)."""
        return list(self._conduct.values())

    def record_message(
        self, agent: str, now: float, deception_score: float, message_id: str
    ) -> AgentConduct:
        """Add one message's deception score to the agent's window."""
        conduct = self._conduct.get(agent)
        if conduct is None:
            conduct = self._conduct[agent] = AgentConduct(self._config)
        scores = conduct.scores
        if len(scores) == scores.maxlen:
            conduct.score_sum -= scores[0][1]
        scores.append((now, deception_score, message_id))
        conduct.score_sum += deception_score
        conduct.last_seen = now
        return conduct

    def record_stance(self, conduct: AgentConduct, counterpart: str, intent: Intent,
                      now: float, message_id: str) -> bool:
        """Record a COOPERATIVE/COMPETITIVE stance; True if it flips a recent one."""
        previous = conduct.stance.get(counterpart)
        conduct.stance[counterpart] = (intent, now, message_id)
        if previous is None or previous[1] < now - self._config.stance_window_s:
            return False  # a first stance, or a change of mind long after, is no turn
        flipped = previous[0] is not intent
        turns = conduct.turns
        if len(turns) == turns.maxlen and turns[0][1]:
            conduct.flip_count -= 1
        turns.append((now, flipped, message_id, previous[1], previous[2]))
        conduct.flip_count += flipped
        return flipped

    def evaluate(self, agent: str, conduct: AgentConduct, now: float,
                 observed_at: datetime, touched: bool) -> Finding | None:
        """A DECEPTION finding if the combined score reaches the threshold.

        Reported only when this message is itself evidence (``touched``: a
        deceptive score or a flip) or the score moved by ``deception_report_step``,
        so a flagged agent's ordinary messages cost no evidence building.
        """
        config = self._config
        turns = conduct.turns
        horizon = now - config.stance_window_s
        while turns and turns[0][0] < horizon:
            conduct.flip_count -= turns.popleft()[1]
        count = len(conduct.scores)
        mean = conduct.score_sum / count if count >= config.deception_min_messages else 0.0
        mean = min(1.0, max(0.0, mean))
        switching = 0.0
        if conduct.flip_count >= config.min_flips:
            switching = conduct.flip_count / len(turns)
        score = 1.0 - (1.0 - mean) * (1.0 - switching)
        if score < config.deception_threshold:
            conduct.reported = -1.0
            return None
        if not touched and abs(score - conduct.reported) < config.deception_report_step:
            return None
        conduct.reported = score
        entries = [(t, mid) for t, s, mid in conduct.scores if s >= config.deception_threshold]
        for t, flipped, mid, prev_t, prev_mid in turns:
            if flipped:
                entries.append((t, mid))
                if prev_t >= horizon:
                    entries.append((prev_t, prev_mid))
        return Finding(
            fleet_id=self._fleet_id,
            category=Category.DECEPTION,
            agents_involved=(agent,),
            target=None,
            score=score,
            evidence=time_ordered_evidence(entries, config.evidence_limit),
            observed_at=observed_at,
            signals={"mean_deception": mean, "flips": float(conduct.flip_count),
                     "switching_rate": switching},
        )

    def prune(self, now: float) -> int:
        """Forget idle agents and stale stances; returns agents dropped."""
        idle = now - self._config.idle_ttl_s
        stale_stance = now - self._config.stance_window_s
        dropped = [a for a, c in self._conduct.items() if c.last_seen < idle]
        for agent in dropped:
            del self._conduct[agent]
        for conduct in self._conduct.values():
            for other in [o for o, s in conduct.stance.items() if s[1] < stale_stance]:
                del conduct.stance[other]
        return len(dropped)
