"""What rule evaluation sees of one version during one tick, with per-tick caches shared by all rules."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar, cast

from agent.domain.signals import Baseline, SignalHistory, Window

T = TypeVar("T")

_NO_BASELINE = Baseline()


class VersionContext:
    """One version at one instant. Windows and derived measurements are computed once per tick and shared
    by every rule that asks for the same thing, so a tick costs O(distinct measurements), not O(rules)."""

    __slots__ = ("_memo", "_windows", "baseline", "history", "now", "version")

    def __init__(
        self, version: str, history: SignalHistory | None, now: float, baseline: Baseline | None = None
    ) -> None:
        self.version = version
        self.history = history
        self.now = now
        self.baseline = baseline if baseline is not None else _NO_BASELINE
        self._windows: dict[float, Window | None] = {}
        self._memo: dict[Hashable, object] = {}

    def window(self, seconds: float) -> Window | None:
        """The window ending now, or None when the version has no sample inside it."""
        try:
            return self._windows[seconds]
        except KeyError:
            window = self.history.window(seconds, self.now) if self.history is not None else None
            self._windows[seconds] = window
            return window

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        try:
            return cast(T, self._memo[key])
        except KeyError:
            value = compute()
            self._memo[key] = value
            return value
