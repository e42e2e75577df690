"""C2L commands, their outcomes and the directives sent to cooperative agents."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from cockpit.events.base import Event

__all__ = [
    "COMMAND_TYPES",
    "AgentDirective",
    "CommandConfirmed",
    "CommandStatus",
    "CommandType",
    "ExecuteCommand",
]


class CommandType(StrEnum):
    MUTE = "MUTE"
    ISOLATE = "ISOLATE"
    TERMINATE = "TERMINATE"
    SNAPSHOT_STATE = "SNAPSHOT_STATE"
    REVOKE_ACCESS = "REVOKE_ACCESS"
    INJECT_CONSTRAINT = "INJECT_CONSTRAINT"


COMMAND_TYPES = tuple(t.value for t in CommandType)


class CommandStatus(StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"


class ExecuteCommand(Event):
    """Execute an accepted command. Published by the C2L API on
    ``sovereign.commands.<agent_id>`` (message id = command id); consumed by the
    C2L executor (durable consumer ``c2l-executor``)."""

    command_id: str
    command_type: CommandType
    target_agents: list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)


class CommandConfirmed(Event):
    """A command's outcome. Published by the executor on
    ``sovereign.confirmations.<command_id>``; the gateway relays it on ``WS /ws``
    as ``command.confirmed``."""

    command_id: str
    command_type: CommandType
    status: CommandStatus
    executed_layers: list[dict[str, Any]] = Field(default_factory=list)
    cascade_terminated: list[str] = Field(default_factory=list)
    execution_time_ms: float = 0.0
    timestamp: datetime
    error: str | None = None
    verdict_id: str | None = None
    operator: str | None = None
    target_agents: list[str] = Field(default_factory=list)
    #: layer records left out of ``executed_layers`` so the confirmation fits in one
    #: message of the broker (a command on hundreds of agents); ``GET /commands/{id}``
    #: has them all
    layers_omitted: int = 0
    #: ids left out of ``cascade_terminated`` when even without its layer records the
    #: confirmation did not fit (thousands of sub-agents); ``GET /commands/{id}`` has them
    cascade_omitted: int = 0


class AgentDirective(Event):
    """What a cooperative agent must do. Published by C2L on
    ``sovereign.agents.<agent_id>.directives``; consumed by the agent (client SDK)."""

    agent_id: str
    directive: str  # mute | unmute | constraint | shutdown
    parameters: dict[str, Any] = Field(default_factory=dict)
    command_id: str | None = None
