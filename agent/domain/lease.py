"""Batch-job leases: a job pins the version it started with for a while. Pure data and the rules that change it.

A live lease sends every request carrying `x-rollback-lease: <lease id>` to its version, whatever the weights
are (agent.adapters.xds.resources.build_route). A lease ends when its time is up (expired), when its holder lets
it go (released), when an admin forces it off (revoked), or when its route was never confirmed (unconfirmed).
Ended leases are kept for a while so that their holders can see what happened to them.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

LEASE_HEADER = "x-rollback-lease"
MIN_TTL_S = 1.0
MAX_TTL_S = 7 * 24 * 3600.0
MAX_LIVE_LEASES = 256  # each live lease is one route in Envoy's route table
KEEP_ENDED_S = 24 * 3600.0
MAX_ENDED = 100

ACTIVE = "active"
ENDINGS = ("expired", "released", "revoked", "unconfirmed")

_HOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")
_LEASE_ID = re.compile(r"l-[0-9a-f]{16}")


class LeaseError(ValueError):
    """A lease request that cannot be granted; `code` as in the control API (invalid_argument, not_found, refused)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    version: str
    holder: str
    acquired_at: float  # unix seconds
    expires_at: float
    reason: str = ""
    actor: str = ""
    state: str = ACTIVE
    ended_at: float = 0.0
    end_reason: str = ""

    def live(self, now: float) -> bool:
        return self.state == ACTIVE and now < self.expires_at

    def ended(self, how: str, now: float, why: str) -> Lease:
        return replace(self, state=how, ended_at=now, end_reason=why)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lease:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a lease must be a JSON object")
        return cls(**data)


def new_lease_id() -> str:
    return "l-" + secrets.token_hex(8)


def check_lease_id(lease_id: str) -> str:
    if not _LEASE_ID.fullmatch(lease_id):
        raise LeaseError("invalid_argument", f"lease id must look like l-0123456789abcdef, got {lease_id[:40]!r}")
    return lease_id


def check_holder(holder: str) -> str:
    if not _HOLDER.fullmatch(holder):
        raise LeaseError(
            "invalid_argument",
            "holder must be 1-128 characters: letters, digits and . _ : @ / + - (starting with a letter or digit), "
            f"got {holder[:40]!r}",
        )
    return holder


def check_ttl(ttl_s: float) -> float:
    if not (MIN_TTL_S <= ttl_s <= MAX_TTL_S):  # NaN fails this too
        raise LeaseError("invalid_argument", f"ttl must be from {MIN_TTL_S:g}s to {MAX_TTL_S:g}s (7 days), got {ttl_s}")
    return float(ttl_s)


class LeaseBook:
    """Every lease the agent knows, live and recently ended. The engine persists each change it makes."""

    def __init__(self, leases: Iterable[Lease] = ()) -> None:
        self._leases: dict[str, Lease] = {lease.lease_id: lease for lease in leases}

    def get(self, lease_id: str) -> Lease:
        check_lease_id(lease_id)
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseError("not_found", f"no lease {lease_id}")
        return lease

    def all(self) -> list[Lease]:
        """Live leases first (soonest to expire first), then ended ones (most recent first)."""
        live = sorted((x for x in self._leases.values() if x.state == ACTIVE), key=lambda x: (x.expires_at, x.lease_id))
        ended = sorted((x for x in self._leases.values() if x.state != ACTIVE), key=lambda x: -x.ended_at)
        return live + ended

    def live(self, now: float) -> list[Lease]:
        return [x for x in self.all() if x.live(now)]

    def routes(self, now: float) -> tuple[tuple[str, str], ...]:
        """(lease id, version) of every live lease, in a stable order: what Envoy's lease routes carry."""
        return tuple(sorted((x.lease_id, x.version) for x in self.live(now)))

    def put(self, lease: Lease) -> None:
        """Keep `lease` (new or changed): call it once the change is on record."""
        self._leases[lease.lease_id] = lease

    def new_lease(
        self,
        *,
        version: str,
        holder: str,
        ttl_s: float,
        now: float,
        known_versions: Iterable[str],
        reason: str = "",
        actor: str = "",
        lease_id: str | None = None,
    ) -> Lease:
        """A lease that may be granted (not yet kept: `put` it once recorded)."""
        known = list(known_versions)
        if version not in known:
            raise LeaseError("invalid_argument", f"unknown version {version!r}; this model has {', '.join(known)}")
        check_holder(holder)
        ttl = check_ttl(ttl_s)
        if len(self.live(now)) >= MAX_LIVE_LEASES:
            raise LeaseError("refused", f"{MAX_LIVE_LEASES} leases are live already; release or let some expire")
        return Lease(
            lease_id=lease_id or new_lease_id(),
            version=version,
            holder=holder,
            acquired_at=now,
            expires_at=now + ttl,
            reason=reason,
            actor=actor,
        )

    def renewed(self, lease_id: str, *, ttl_s: float, now: float) -> Lease:
        """The lease ending `ttl_s` from `now`. An ended lease cannot be renewed: take a new one."""
        ttl = check_ttl(ttl_s)
        lease = self.get(lease_id)
        if not lease.live(now):
            raise LeaseError(
                "refused", f"lease {lease_id} has ended ({self._state(lease, now)}); acquire a new lease instead"
            )
        return replace(lease, expires_at=now + ttl)

    def ending(self, lease_id: str, how: str, *, now: float, why: str) -> Lease:
        """The lease ended `how` (expired, released, revoked, unconfirmed)."""
        if how not in ENDINGS:
            raise ValueError(f"a lease ends as one of {ENDINGS}, not {how!r}")
        lease = self.get(lease_id)
        if lease.state != ACTIVE:
            raise LeaseError("refused", f"lease {lease_id} has already ended ({lease.state})")
        return lease.ended(how, now, why)

    def due(self, now: float) -> list[Lease]:
        """Active leases whose time is up (to end as expired)."""
        return [x for x in self._leases.values() if x.state == ACTIVE and now >= x.expires_at]

    def of_version(self, version: str, now: float) -> list[Lease]:
        return [x for x in self.live(now) if x.version == version]

    def prune(self, now: float) -> list[Lease]:
        """Forget ended leases older than a day, and all but the newest MAX_ENDED; returns the forgotten."""
        ended = [x for x in self.all() if x.state != ACTIVE]
        gone = [x for i, x in enumerate(ended) if i >= MAX_ENDED or now - x.ended_at > KEEP_ENDED_S]
        for lease in gone:
            del self._leases[lease.lease_id]
        return gone

    @staticmethod
    def _state(lease: Lease, now: float) -> str:
        return lease.state if lease.state != ACTIVE else ("expired" if now >= lease.expires_at else ACTIVE)
