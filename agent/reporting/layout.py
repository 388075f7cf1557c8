"""What a report says, as blocks (see document.py): the compliance report, and a version's full description
(shared by the report and `rollback-agent versions show TAG`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from agent.domain.audit_verification import SignatureStatus
from agent.ports.registry import VersionStatus
from agent.registry.model import BaselineMetrics, EvidenceCheck, Provenance, Requirements, Version, VersionSpec
from agent.reporting.document import Block, Fields, Heading, Paragraph, Table
from agent.reporting.mirrors import MirrorRow
from agent.reporting.report_data import ComplianceReport
from agent.reporting.rollbacks import RollbackRow, StatusChangeRow
from agent.reporting.rollouts import RolloutRow, evidence_text, split_text
from agent.reporting.timeline import format_weights
from agent.reporting.when import format_time


def num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


def ms(value: float) -> str:
    return f"{value:.1f}"


def status_text(version: VersionSpec) -> str:
    """e.g. "failed (set by rule:latency at 2024-08-12T09:30:00Z: rollback 3f2a...; the registry says verified)"."""
    if not isinstance(version, Version) or version.status_change is None:
        return str(version.status)
    change = version.status_change
    text = f"{version.status} (set by {change.actor or 'unknown'} at {format_time(change.at)}"
    if change.reason:
        text += f": {change.reason}"
    if version.status != version.declared_status:
        text += f"; the registry declares {version.declared_status}"
    text += ")"
    if version.status is VersionStatus.QUARANTINED:
        held = change.before_quarantine or "candidate"
        text += f"; held until an operator clears the quarantine, then {held}"
    return text


def evidence_summary(evidence: Sequence[EvidenceCheck]) -> str:
    if not evidence:
        return "none"
    passed = sum(1 for e in evidence if e.passed)
    return f"{passed}/{len(evidence)} passed"


def _provenance(p: Provenance) -> Fields:
    return Fields(
        (
            ("Artifact", p.artifact_uri),
            ("Artifact digest", p.artifact_digest),
            ("Training data", p.training_data_uri),
            ("Training data hash", p.training_data_hash),
            ("Feature code commit", p.feature_code_commit),
            ("Image", p.image),
            ("Base image digest", p.base_image_digest),
            ("Hyperparameters", json.dumps(p.hyperparameters, sort_keys=True) if p.hyperparameters else "-"),
            ("Environment", ", ".join(f"{k}={v}" for k, v in sorted(p.environment.items())) or "-"),
        )
    )


def _requirements(r: Requirements) -> Fields:
    items = [
        ("Memory", f"{r.memory_mb} MB"),
        ("CPU", f"{r.cpu:g} core" + ("" if r.cpu == 1 else "s")),
        ("GPU", str(r.gpu)),
        ("Runtime", r.runtime),
    ]
    if r.input_schema is not None:
        items.append(("Input features", ", ".join(r.input_schema.features)))
        items.append(("Input schema hash", r.input_schema.schema_hash or "-"))
    return Fields(tuple(items))


def _baseline(b: BaselineMetrics) -> Fields:
    items = [
        ("Latency p99", num(b.latency_p99_ms, " ms")),
        ("Error rate", num(b.error_rate)),
        ("Primary metric", f"{b.primary_metric.name} {b.primary_metric.value:g}" if b.primary_metric else "-"),
        ("Mean confidence", num(b.mean_confidence)),
        (
            "Throughput",
            f"{b.throughput_rps.mean:g} rps (std {b.throughput_rps.std:g})" if b.throughput_rps is not None else "-",
        ),
    ]
    if b.missing_rates:
        items.append(("Missing rates", ", ".join(f"{f}={r:g}" for f, r in sorted(b.missing_rates.items()))))
    for feature, bins in sorted(b.reference_bins.items()):
        edges = ", ".join(f"{e:g}" for e in bins.edges)
        probabilities = ", ".join(f"{p:g}" for p in bins.probabilities)
        items.append((f"Reference bins {feature}", f"edges [{edges}], probabilities [{probabilities}]"))
    return Fields(tuple(items))


def _evidence(evidence: Sequence[EvidenceCheck]) -> Table:
    rows = tuple(
        (
            e.name,
            num(e.value),
            (f"{e.comparison} " if e.comparison else "") + num(e.threshold),
            "yes" if e.passed else "NO",
            format_time(e.at),
            e.approved_by,
            e.detail,
        )
        for e in evidence
    )
    return Table(("Check", "Value", "Threshold", "Passed", "At", "Approved by", "Detail"), rows, "no evidence recorded")


def _status_history(rows: Sequence[StatusChangeRow]) -> Table:
    return Table(
        ("Record", "Time", "From", "To", "Actor", "Reason"),
        tuple((str(r.seq), format_time(r.at), r.from_status, r.to_status, r.actor, r.reason) for r in rows),
        "no status change recorded",
    )


def version_blocks(
    version: VersionSpec, level: int = 2, history: Sequence[StatusChangeRow] | None = None
) -> list[Block]:
    """Everything the registry knows about one version; `history` adds its status changes from the audit."""
    blocks: list[Block] = [
        Heading(level, f"{version.tag}: {version.status}"),
        Fields(
            (
                ("Status", status_text(version)),
                ("Created", format_time(version.created)),
                ("Description", version.description or "-"),
                ("Evidence", evidence_summary(version.evidence)),
            )
        ),
        Heading(level + 1, "Provenance"),
    ]
    if version.provenance is not None:
        blocks.append(_provenance(version.provenance))
    else:
        blocks.append(Paragraph("No provenance recorded for this version.", "warn"))
    blocks.append(Heading(level + 1, "Requirements"))
    if version.requirements is not None:
        blocks.append(_requirements(version.requirements))
    else:
        blocks.append(Paragraph("No requirements recorded: compatibility is not checked before a switch."))
    if version.baseline is not None:
        blocks.extend([Heading(level + 1, "Baseline"), _baseline(version.baseline)])
    blocks.extend([Heading(level + 1, "Evidence"), _evidence(version.evidence)])
    if history is not None:
        blocks.extend([Heading(level + 1, "Status history"), _status_history(history)])
    return blocks


def _chain(report: ComplianceReport) -> list[Block]:
    chain = report.chain
    blocks: list[Block] = [Heading(2, "Audit chain")]
    if chain.intact:
        checked = " and every signature" if chain.signatures.state == "verified" else ""
        blocks.append(
            Paragraph(
                f"INTACT: all {chain.records} audit records verified (hash chain from the first record{checked}); "
                f"last record {chain.last_seq}, hash {chain.last_hash or '-'}.",
                "good",
            )
        )
    else:
        blocks.append(
            Paragraph(
                f"BROKEN: {len(chain.problems)} problem(s) in {chain.records} audit records. Records were edited, "
                "removed, reordered or re-sealed after they were written; the content below cannot be relied on.",
                "bad",
            )
        )
        blocks.append(Table(("Record", "Problem"), tuple((str(p.seq), p.problem) for p in chain.problems)))
    return blocks + _signatures(chain.signatures)


def _signatures(status: SignatureStatus) -> list[Block]:
    signers = ", ".join(repr(k) for k in status.signed_by)
    given = ", ".join(repr(k) for k in status.keys_given)
    paragraph = {
        "verified": Paragraph(f"VERIFIED: every signature checked with the key(s) given ({given}).", "good"),
        "not_checked": Paragraph(
            f"NOT CHECKED: the records are signed by {signers}, but no key was given (report --key-file): a trail "
            "re-sealed without the key would read the same.",
            "warn",
        ),
        "unsigned": Paragraph(
            "UNSIGNED: audit.signing was off. The hash chain alone does not detect a trail re-sealed by someone "
            "who can write the state store.",
            "warn",
        ),
        "failed": Paragraph(
            f"FAILED: {len(status.problems)} signature problem(s) (in the table above) with the key(s) given "
            f"({given}): records forged, or re-sealed without the key.",
            "bad",
        ),
    }[status.state]
    return [
        Heading(3, "Signatures"),
        paragraph,
        Fields(
            (
                ("Status", status.state.replace("_", " ")),
                ("Signed by", signers or "no key (unsigned)"),
                ("Checked with", given or "no key given"),
            )
        ),
        Table(
            ("First record", "Last record", "Key id", "Algorithm"),
            tuple(
                (str(run.first_seq), str(run.last_seq), run.key_id or "unsigned", run.algorithm or "-")
                for run in status.runs
            ),
            "no record",
        ),
    ]


def _summary(report: ComplianceReport) -> list[Block]:
    average = report.average_per_day()
    outcomes = Counter(r.outcome for r in report.rollbacks if r.attempted)
    return [
        Heading(2, "Summary"),
        Fields(
            (
                ("Rollbacks attempted", str(report.attempted)),
                ("Outcomes", ", ".join(f"{o or 'unknown'}: {n}" for o, n in sorted(outcomes.items())) or "-"),
                ("Suppressed triggers", f"{report.suppressed} (paused, cooldown or rate cap)"),
                ("Average per day", f"{average:.2f}" if average is not None else "-"),
                ("Average per week", f"{average * 7:.2f}" if average is not None else "-"),
                ("Traffic changes", str(len(report.traffic_changes))),
                ("Version status changes", str(len(report.status_changes))),
                ("Rollout moves", str(len(report.rollouts))),
            )
        ),
    ]


def _rollback(row: RollbackRow) -> list[Block]:
    target = row.to_version or "no target"
    return [
        Heading(
            3,
            f"{'Drill rollback' if row.drill_id else 'Rollback'} {row.rollback_id or '(no id)'}: "
            f"{row.from_version} -> {target} ({row.outcome})" + (f" [drill {row.drill_id}]" if row.drill_id else ""),
        ),
        Fields(
            (
                ("Time", format_time(row.at)),
                ("Record", str(row.seq)),
                ("Trigger", row.trigger_summary),
                ("Actor", row.actor or "-"),
                ("From", f"{row.from_version} ({format_weights(row.from_weights)})"),
                ("To", f"{target} ({format_weights(row.to_weights)})" if row.to_version else "-"),
                ("Outcome", row.outcome or "-"),
                ("Detail", row.detail or "-"),
                ("Phases total", f"{ms(row.total_ms)} ms"),
                ("Forensic archive", f"{row.archive_path} (sha256 {row.archive_sha256})" if row.archive_path else "-"),
            )
        ),
        Table(
            ("Phase", "Started", "Duration (ms)", "Outcome", "Detail"),
            tuple((p.name, format_time(p.started_at), ms(p.duration_ms), p.outcome, p.detail) for p in row.phases),
            "no phases recorded",
        ),
        Table(("Skipped target", "Reason"), row.skipped, "no target skipped"),
    ]


def rollout_table(rows: Sequence[RolloutRow]) -> Table:
    """One line per rollout move (shared by the report and `rollback-agent history`)."""
    return Table(
        ("Record", "Time", "Candidate", "Move", "Stage", "Split", "Actor", "Outcome", "Reason", "Evidence"),
        tuple(
            (
                str(r.seq),
                format_time(r.at),
                r.candidate,
                r.move,
                r.stage_change,
                split_text(r),
                r.actor,
                r.phase + (f": {r.error}" if r.error else ""),
                r.reason,
                evidence_text(r),
            )
            for r in rows
        ),
        "no rollout in this period",
    )


def mirror_table(rows: Sequence[MirrorRow]) -> Table:
    """One line per mirror change (shared by the report and `rollback-agent history`)."""
    return Table(
        ("Record", "Time", "Version", "Mirrored", "Actor", "Outcome", "ACK ms", "Reason"),
        tuple(
            (
                str(r.seq),
                format_time(r.at),
                r.version,
                f"{r.from_fraction:.0%} -> {r.to_fraction:.0%}",
                r.actor,
                r.outcome,
                ms(r.decision_to_ack_ms),
                r.reason + (f" [{r.detail.strip()}]" if r.detail else ""),
            )
            for r in rows
        ),
        "no shadow traffic in this period",
    )


def _rollout_evidence(rows: Sequence[RolloutRow]) -> list[Block]:
    """Each stage change that gates justified, with every gate's figures in full."""
    blocks: list[Block] = []
    for r in rows:
        if not r.evidence:
            continue
        blocks.append(Heading(3, f"Record {r.seq}: {r.candidate} {r.move} ({r.stage_change})"))
        blocks.append(
            Table(
                ("Gate", "Outcome", "Value", "Threshold", "Figures"),
                tuple((g.gate, g.outcome, num(g.value), num(g.threshold), g.reason) for g in r.evidence),
            )
        )
    return blocks


def report_blocks(report: ComplianceReport) -> list[Block]:
    blocks: list[Block] = [
        Heading(1, f"Rollback compliance report: {report.model}"),
        Fields(
            (
                ("Document", report.document_id),
                ("Model", report.model),
                ("Generated", format_time(report.generated_at)),
                ("Period", f"{format_time(report.period_start)} to {format_time(report.generated_at)}"),
            )
        ),
    ]
    blocks.extend(_chain(report))
    blocks.extend(_summary(report))
    blocks.append(Heading(2, "Versions"))
    if not report.versions:
        blocks.append(Paragraph("The registry lists no versions.", "warn"))
    for version in report.versions:
        blocks.extend(version_blocks(version, level=3, history=report.status_history(version.tag)))
    blocks.append(Heading(2, "Rollbacks"))
    if not report.rollbacks:
        blocks.append(Paragraph("No rollback in this period."))
    for row in report.rollbacks:
        blocks.extend(_rollback(row))
    blocks.extend(
        [
            Heading(2, "Rollback frequency"),
            Table(("Day (UTC)", "Rollbacks"), tuple((d, str(n)) for d, n in report.per_day), "no rollback"),
            Table(("ISO week", "Rollbacks"), tuple((w, str(n)) for w, n in report.per_week), "no rollback"),
            Heading(2, "Root causes"),
            Table(("Cause", "Rollbacks"), tuple((c, str(n)) for c, n in report.root_causes), "no rollback"),
            Heading(2, "Traffic changes"),
            Table(
                ("Record", "Time", "From", "To", "Actor", "Reason / trigger", "Outcome", "Decision to ACK (ms)"),
                tuple(
                    (
                        str(c.seq),
                        format_time(c.at),
                        format_weights(c.from_weights),
                        format_weights(c.to_weights),
                        c.actor,
                        c.reason + (f" [trigger: {c.trigger}]" if c.trigger else ""),
                        c.outcome + (f": {c.detail}" if c.detail else ""),
                        ms(c.decision_to_ack_ms),
                    )
                    for c in report.traffic_changes
                ),
                "no traffic change in this period",
            ),
            Heading(2, "Version status changes"),
            _status_history(report.status_changes),
            Heading(2, "Automation paused and resumed"),
            Table(
                ("Record", "Time", "Action", "Actor", "Reason"),
                tuple(
                    (str(a.seq), format_time(a.at), "paused" if a.paused else "resumed", a.actor, a.reason)
                    for a in report.automation
                ),
                "automation was not paused in this period",
            ),
            Heading(2, "Rollouts"),
            rollout_table(report.rollouts),
        ]
    )
    blocks.extend(_rollout_evidence(report.rollouts))
    blocks.extend(
        [Heading(2, "Shadow traffic (mirrored requests, never answered to a user)"), mirror_table(report.mirrors)]
    )
    blocks.extend(_identities(report))
    blocks.extend(_sign_off(report))
    return blocks


def _identities(report: ComplianceReport) -> list[Block]:
    return [
        Heading(2, "Identities on record"),
        Paragraph(
            "Who acted in the period, as the records name them: an operator is the identity the control API "
            "authenticated (its token's name), never a name the caller gave; rules, alerts and the agent act for "
            "themselves."
        ),
        Table(
            ("Actor", "Kind", "Records", "First", "Last", "What"),
            tuple(
                (
                    r.actor,
                    r.kind,
                    str(r.records),
                    format_time(r.first),
                    format_time(r.last),
                    ", ".join(f"{kind} x{n}" for kind, n in r.events),
                )
                for r in report.identities
            ),
            "no record in this period",
        ),
    ]


SIGN_OFF_ROLES: tuple[str, ...] = ("Prepared by (MLOps)", "Reviewed by (model risk)", "Approved by (model owner)")


def _sign_off(report: ComplianceReport) -> list[Block]:
    return [
        Heading(2, "Sign-off"),
        Paragraph(
            f"By signing, the reviewer attests to having reviewed document {report.document_id}, made from the audit "
            f"trail up to record {report.chain.last_seq} (hash {report.chain.last_hash or '-'}), whose check reads: "
            f"{'intact' if report.chain.intact else 'BROKEN'}; signatures {report.chain.signatures.state}."
        ),
        Table(
            ("Role", "Name", "Signature", "Date"),
            tuple((role, "", "", "") for role in SIGN_OFF_ROLES),
            "",
        ),
    ]
