"""Reading the audit trail back: what was served when, what changed, and the compliance report. Pure functions
over audit records, registry entries and the policy history; the CLI loads those and prints what these return."""

from agent.reporting.compliance import FORMATS, ReportFormat, compliance_report
from agent.reporting.mirrors import MirrorRow, mirror_changes
from agent.reporting.report_data import ComplianceReport, build_report
from agent.reporting.rollouts import RolloutRow, rollouts
from agent.reporting.text import (
    format_changes,
    format_mirrors,
    format_rollouts,
    format_serving_state,
    format_version,
    format_versions,
)
from agent.reporting.timeline import ServedVersion, ServingState, TrafficChange, changes, history_at
from agent.reporting.when import format_time, parse_when

__all__ = [
    "FORMATS",
    "ComplianceReport",
    "MirrorRow",
    "ReportFormat",
    "RolloutRow",
    "ServedVersion",
    "ServingState",
    "TrafficChange",
    "build_report",
    "changes",
    "compliance_report",
    "format_changes",
    "format_mirrors",
    "format_rollouts",
    "format_serving_state",
    "format_time",
    "format_version",
    "format_versions",
    "history_at",
    "mirror_changes",
    "parse_when",
    "rollouts",
]
