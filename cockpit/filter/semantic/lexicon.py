"""Intent cue words for agent negotiation (Diplomacy-style and generic agent chatter).

Weights are evidence strengths, not probabilities: about 1.0 for an unmistakable
cue ("attack", "alliance"), lower for cues that are often innocent ("take",
"against", "help"). Multi-word cues are bigrams and add to their words' weights.
"""

from __future__ import annotations

__all__ = ["COMPETITIVE_CUES", "COOPERATIVE_CUES", "NEGATORS"]


def _forms(weight: float, *words: str) -> dict[str, float]:
    return dict.fromkeys(words, weight)


COOPERATIVE_CUES: dict[str, float] = {
    **_forms(1.0, "support", "supports", "supporting", "supported", "ally", "allies",
             "allied", "alliance", "alliances", "together", "cooperate", "cooperating",
             "cooperation", "cooperative", "collaborate", "collaboration", "pact", "truce",
             "treaty", "peace", "teamwork", "coalition"),
    **_forms(0.8, "help", "helping", "assist", "assisting", "partner", "partners",
             "partnership", "trust", "coordinate", "coordinating", "coordinated", "united",
             "unite", "dmz", "protect", "protecting", "peaceful", "friendship"),
    **_forms(0.7, "agree", "agreed", "agreement", "friend", "friends", "friendly", "team",
             "backing", "aid"),
    **_forms(0.6, "let's", "deal", "promise", "promised", "share", "sharing", "defend",
             "defending"),
    **_forms(0.3, "thanks", "thank", "appreciate"),
    "work together": 1.0,
    "join forces": 1.0,
    "team up": 1.0,
    "non aggression": 1.2,
    "your back": 0.8,
    "stand with": 0.8,
    "side with": 0.8,
    "count on": 0.6,
    "with you": 0.4,
    "leave you": 0.5,
}

COMPETITIVE_CUES: dict[str, float] = {
    **_forms(1.2, "stab", "stabs", "stabbed", "stabbing", "backstab", "backstabbed",
             "betray", "betrays", "betrayed", "betraying", "betrayal", "sabotage"),
    **_forms(1.0, "attack", "attacks", "attacking", "attacked", "destroy", "destroying",
             "eliminate", "eliminating", "crush", "invade", "invading", "invasion",
             "conquer", "kill", "war", "annihilate", "deceive"),
    **_forms(0.9, "seize", "hostile", "defeat", "retaliate", "retaliation", "revenge",
             "undermine", "dominate", "overrun"),
    **_forms(0.8, "capture", "enemy", "enemies", "fight", "fighting", "threaten",
             "threatening", "punish", "oppose", "rival", "rivals"),
    **_forms(0.8, "finished", "doomed", "ruin", "ruined", "crushed", "strike", "strikes"),
    **_forms(0.7, "threat", "exploit", "compete", "competing", "trick"),
    **_forms(0.5, "against", "hit"),
    **_forms(0.4, "take", "taking", "block", "grab"),
    "take your": 1.0,
    "take his": 0.8,
    "take her": 0.8,
    "take their": 0.8,
    "take out": 0.8,
    "take over": 0.8,
    "wipe out": 1.0,
    "go after": 0.8,
    "turn on": 0.8,
    "get rid": 0.8,
    "move against": 0.5,
    "supply centre": 0.3,
    "supply center": 0.3,
}

NEGATORS: tuple[str, ...] = (
    "not", "no", "never", "cannot", "nor", "neither", "without", "won't", "wont",
    "don't", "dont", "can't", "cant", "didn't", "doesn't", "isn't", "aren't", "wasn't",
    "weren't", "wouldn't", "shouldn't", "couldn't", "haven't", "hasn't", "hadn't",
    "mustn't", "shan't", "nothing", "nobody",
)
