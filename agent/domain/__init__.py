"""Pure domain data shared by the agent's layers: no I/O, no asyncio."""

from agent.domain.signals import (
    Baseline,
    BaselineKey,
    Histogram,
    HistoryLimits,
    ReferenceBins,
    Sample,
    Signal,
    SignalHistory,
    Window,
)

__all__ = [
    "Baseline",
    "BaselineKey",
    "Histogram",
    "HistoryLimits",
    "ReferenceBins",
    "Sample",
    "Signal",
    "SignalHistory",
    "Window",
]
