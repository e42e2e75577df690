"""Thresholds and window sizes of the strategic layer, as configuration.

Defaults come from DESIGN.md section 5 (alliance 0.75, deception 0.65,
inconsistency 0.7); everything else is a documented engineering default.
Times are seconds of *telemetry* time (the messages' own timestamps), so a replay
of last week's data decays and expires exactly as it did live.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StrategicConfig"]


@dataclass(frozen=True, slots=True)
class StrategicConfig:
    """Configuration of one fleet's strategic analysis (shared by all fleets)."""

    # --- alliance graph -------------------------------------------------------
    alliance_threshold: float = 0.75
    #: fraction of the remaining gap to 1.0 closed by one cooperative message
    cooperative_message_gain: float = 0.2
    #: a ``support`` action is a deed, worth more than words
    support_action_gain: float = 0.35
    #: fraction of the tie lost per competitive message between the pair
    competitive_message_penalty: float = 0.25
    #: fraction of the tie lost when one attacks the other
    attack_penalty: float = 0.6
    alliance_half_life_s: float = 3600.0
    #: cooperative contributions needed from *each* side before a tie is "mutual"
    alliance_min_exchanges_each: int = 2
    #: edges weaker than this are left out of ``graph()`` and pruned from state
    graph_min_edge_weight: float = 0.05

    # --- collusion ------------------------------------------------------------
    collusion_threshold: float = 0.6
    #: minimum (decayed, mutual) tie between two agents to count as coordinating
    collusion_min_tie: float = 0.5
    hostility_window_s: float = 1800.0
    #: weight of a COMPETITIVE message against a target (an attack weighs 1.0)
    hostile_message_weight: float = 0.5
    #: hostile events kept per (target, attacker), and attackers kept per target
    hostile_events_per_attacker: int = 8
    attackers_per_target: int = 16
    #: largest group reported as one collusion (bounds the grouping cost)
    max_coalition: int = 8

    # --- deception ------------------------------------------------------------
    deception_threshold: float = 0.65
    #: messages per agent in the deception-score window
    deception_window: int = 20
    deception_min_messages: int = 5
    #: stances (COOPERATIVE/COMPETITIVE toward a counterpart already addressed)
    #: kept per agent; the switching rate is the share of them that flipped
    stance_window: int = 12
    stance_window_s: float = 1800.0
    #: flips within the window before switching counts at all
    min_flips: int = 2
    #: a deception finding is re-reported when its score moved this much, even
    #: if the message itself is not evidence
    deception_report_step: float = 0.05

    # --- inconsistency --------------------------------------------------------
    inconsistency_threshold: float = 0.7
    promise_window_s: float = 86_400.0
    promise_half_life_s: float = 21_600.0
    #: weight of a promise whose text says so ("I will support you")
    explicit_promise_weight: float = 0.9
    support_keywords: tuple[str, ...] = (
        "support", "help", "defend", "protect", "back you", "ally", "alliance",
        "on your side", "trust me", "with you",
    )
    max_promises: int = 50_000

    # --- threat ---------------------------------------------------------------
    #: a single technique of weight 0.6 or more is reported (concealment, 0.5, is not)
    threat_threshold: float = 0.6
    threat_half_life_s: float = 3600.0
    #: (action type, technique): action types that are themselves a technique (see
    #: ``strategic.threat``); the text of any action's parameters is matched as well
    #: (a tool's command line)
    threat_actions: tuple[tuple[str, str], ...] = (
        ("exfiltrate", "exfiltration"),
        ("steal_credentials", "credential_theft"),
        ("disable_monitoring", "oversight_evasion"),
        ("escalate_privileges", "privilege_escalation"),
        ("delete_data", "destruction"),
        ("self_replicate", "self_replication"),
    )
    max_threat_cases: int = 50_000

    # --- vocabulary of actions ------------------------------------------------
    cooperative_actions: frozenset[str] = frozenset({"support", "assist", "defend"})
    hostile_actions: frozenset[str] = frozenset({"attack", "sabotage", "steal", "betray"})
    #: a transfer is hostile to the agent named in ``params["from"]`` (taking from it)
    transfer_actions: frozenset[str] = frozenset({"transfer"})

    # --- bounds that keep the cost per message flat -----------------------------
    evidence_limit: int = 10
    #: addressees / mentions considered per message (broadcasts are capped)
    max_fanout: int = 16
    #: recent message ids remembered to drop redeliveries
    dedupe_window: int = 8192
    #: every this many messages, drop decayed ties and idle agents (amortised)
    prune_every: int = 20_000
    idle_ttl_s: float = 86_400.0
