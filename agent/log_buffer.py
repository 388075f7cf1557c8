"""The agent's recent log lines, kept in memory for the forensic archive."""

from __future__ import annotations

import logging
from collections import deque


class RecentLogHandler(logging.Handler):
    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(level=logging.INFO)
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a logging handler must never raise
            self.handleError(record)

    def tail(self) -> str:
        return "\n".join(self.lines) + "\n"
