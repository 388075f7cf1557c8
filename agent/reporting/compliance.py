"""`rollback-agent report`: the compliance report of a model, as Markdown, a self-contained HTML page from a template
(which the CLI can print to PDF), or JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from agent.domain.audit_signing import SignatureKey
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.registry.model import VersionSpec
from agent.reporting.layout import report_blocks
from agent.reporting.render_json import render_json
from agent.reporting.render_markdown import render_markdown
from agent.reporting.render_template import render_report_page
from agent.reporting.report_data import build_report

ReportFormat = Literal["md", "html", "json"]
FORMATS: tuple[ReportFormat, ...] = ("md", "html", "json")


def compliance_report(
    model: str,
    records: Iterable[audit_pb2.AuditRecord],
    registry_versions: Iterable[VersionSpec],
    since: datetime | None = None,
    fmt: ReportFormat = "md",
    *,
    generated_at: datetime | None = None,
    keys: Mapping[str, SignatureKey] | None = None,
    template: Path | None = None,
) -> str:
    """The report over `since`..now: versions with provenance and evidence, every rollback (trigger, from -> to,
    phases, skipped targets, outcome), frequency and root causes, traffic changes, and the audit chain check:
    links, hashes and who signed the records, their signatures verified with `keys` (key id -> key) when given.

    `records` is the whole audit trail in seq order (the chain is verified over all of it; the rest is limited to
    `model` and `since`). `template`: the jinja2 page template of the HTML format (default: the shipped one).
    Raises ValueError for an unknown format or a time without a timezone, TemplateError (a ValueError) for a
    template that cannot be read or rendered.
    """
    report = build_report(model, records, registry_versions, since, generated_at=generated_at, keys=keys)
    if fmt == "json":
        return render_json(report)
    if fmt == "md":
        return render_markdown(report_blocks(report))
    if fmt == "html":
        return render_report_page(report, template)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
