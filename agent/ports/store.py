"""State store: the durable memory of the agent (traffic policy, automation flags, audit chain)."""

from __future__ import annotations

from typing import Protocol

from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2


class StateStore(Protocol):
    async def load_policy(self) -> TrafficPolicy | None: ...

    async def save_policy(self, policy: TrafficPolicy) -> None: ...

    async def get_setting(self, key: str) -> str | None: ...

    async def set_setting(self, key: str, value: str) -> None: ...

    async def append_audit(self, record: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        """Append a record; the store assigns seq, prev_hash and hash and returns the stored record."""
        ...

    async def audit_records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]: ...

    async def close(self) -> None: ...
