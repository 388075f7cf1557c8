"""One Alertmanager alert, as the routing table sees it, whichever way it arrived (webhook or API v2 pull)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime  # timezone-aware, UTC
    ends_at: datetime | None = None  # None: unset (Alertmanager's 0001-01-01T00:00:00Z)
    generator_url: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    def resolved_at(self, when: datetime) -> Alert:
        """This alert as it looks once resolved (it left the API without a resolved notification)."""
        return dataclasses.replace(self, status="resolved", ends_at=when)
