"""State store: the durable memory of the agent (traffic policy, settings, and the audit log they are recorded in).

Every state change is written in one transaction with the audit record that describes it, so the trail and the
state can never disagree: `change_policy` (the policy row + its record), `record_setting` (a setting + its record).
The AuditLog seam alone (`append`, `records`, `head`) is what most parts need.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import Message

from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2


class StoreUnavailableError(Exception):
    """The state store cannot take a write right now (transient); the message names the cause."""


class StateRefusedError(Exception):
    """The state store is missing, damaged or foreign on an agent that has run before: the agent must not start on
    it. The message says what was found and which recovery command applies."""


class AuditLog(Protocol):
    async def append(self, event: Message, actor: str) -> audit_pb2.AuditRecord:
        """Record `event` (one of the AuditRecord oneof messages) by `actor`; the log stamps the model and the time
        and returns the sealed record. Raises StoreUnavailableError when the write cannot be made."""
        ...

    async def records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]: ...

    async def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the newest record; (0, genesis) for an empty log."""
        ...


class StateStore(AuditLog, Protocol):
    @property
    def store_id(self) -> str: ...

    async def load_policy(self) -> TrafficPolicy | None: ...

    async def change_policy(self, policy: TrafficPolicy, event: Message, actor: str) -> audit_pb2.AuditRecord:
        """Persist `policy` and append `event` (which must carry it) in one transaction."""
        ...

    async def get_setting(self, key: str) -> str | None: ...

    async def settings_with_prefix(self, prefix: str) -> dict[str, str]: ...

    async def record_setting(self, key: str, value: str, event: Message, actor: str) -> audit_pb2.AuditRecord:
        """Persist a setting and append `event` describing the change in one transaction."""
        ...

    async def put_setting(self, key: str, value: str) -> None:
        """Persist a setting without a record: progress that is not a decision (a rollout's time in its stage).
        Whatever reads it back must check it against the records of the decisions it depends on."""
        ...

    async def close(self) -> None: ...
