"""Idempotency for alerts: one occurrence of an alert acts once.

An occurrence is (fingerprint, startsAt). Alertmanager re-sends it on retries (after a 5xx or a timeout) and on
re-notification (every repeat_interval while it fires), and every replica also pulls it from the API; all of these
carry the same fingerprint and startsAt. The firing and the resolved notification of one occurrence are distinct
events (the second ends a hold the first started).

The memory is bounded: least recently seen keys are forgotten first, and a key unseen for `ttl_s` expires. A key
seen again is refreshed, so an alert re-notified more often than the TTL stays a duplicate for as long as it fires.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC

from agent.alerts.alert import Alert


def occurrence_key(alert: Alert) -> str:
    """fingerprint@startsAt, startsAt in UTC to the millisecond: the API v2 reports milliseconds, the webhook
    nanoseconds, and both must give the same key."""
    starts = alert.starts_at.astimezone(UTC).isoformat(timespec="milliseconds")
    return f"{alert.fingerprint}@{starts}"


def event_key(alert: Alert) -> str:
    """The idempotency key of this notification: the occurrence plus whether it fires or is resolved."""
    return f"{occurrence_key(alert)}/{alert.status}"


class Dedupe:
    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> last seen; least recently seen first
        self._retry_at: dict[str, float] = {}  # key -> when a delivery of it may act again

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen (the caller acts, and `release`s it if acting fails); False for a
        duplicate (the key's memory is refreshed)."""
        now = self._clock()
        self._expire(now)
        known = key in self._seen
        retry_at = self._retry_at.get(key)
        if retry_at is not None and now >= retry_at:
            del self._retry_at[key]
            known = False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return not known

    def retry_after(self, key: str, delay_s: float) -> None:
        """Acting on `key` did not succeed (escalated): deliveries within `delay_s` stay duplicates, the first one
        after that acts again."""
        self._retry_at[key] = self._clock() + delay_s

    def release(self, key: str) -> None:
        """Forget `key`: acting on it failed, so the next delivery must act."""
        self._seen.pop(key, None)

    def __contains__(self, key: object) -> bool:
        self._expire(self._clock())
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._ttl_s:
                return
            del self._seen[key]
            self._retry_at.pop(key, None)
