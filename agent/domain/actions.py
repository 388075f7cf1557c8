"""What a trigger may ask for: one vocabulary for rule verdicts, alerts, operators and the decision engine."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ROLLBACK = "rollback"  # move all traffic off the failing version, to the last verified-stable one
    HOLD = "hold"  # no weight increase for the version (no promotion) until the hold ends
    ALERT = "alert"  # record and report only
