"""Terminal output of `rollback-agent versions`, `versions show TAG`, `history` (traffic changes, then rollout moves)
and `history --at T`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.registry.fallback import created_text
from agent.registry.model import Version, VersionSpec
from agent.reporting.document import Block, Fields, Heading, Paragraph, Table
from agent.reporting.layout import evidence_summary, mirror_table, ms, rollout_table, status_text, version_blocks
from agent.reporting.mirrors import MirrorRow
from agent.reporting.render_text import render_text
from agent.reporting.rollbacks import StatusChangeRow
from agent.reporting.rollouts import RolloutRow
from agent.reporting.timeline import ServingState, TrafficChange, format_weights
from agent.reporting.when import format_time


def _short_digest(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest


def _note(version: VersionSpec) -> str:
    if not isinstance(version, Version) or version.status_change is None:
        return ""
    change = version.status_change
    note = f"by {change.actor} {format_time(change.at)}"
    if version.status != version.declared_status:
        note = f"declared {version.declared_status}; {note}"
    return note + (f": {change.reason}" if change.reason else "")


def format_versions(versions: Sequence[VersionSpec], weights: Mapping[str, int] | None = None) -> str:
    """`rollback-agent versions`: one line per version; WEIGHT when the current split is given."""
    headers = ["TAG", "STATUS", "CREATED"]
    if weights is not None:
        headers.append("WEIGHT")
    headers += ["RUNTIME", "MEMORY", "ARTIFACT", "EVIDENCE", "NOTE"]
    rows = []
    for v in versions:
        row = [v.tag, str(v.status), created_text(v.created, format_time(v.created))]
        if weights is not None:
            row.append(str(weights.get(v.tag, 0)))
        requirements = v.requirements
        row += [
            requirements.runtime if requirements else "-",
            f"{requirements.memory_mb} MB" if requirements else "-",
            _short_digest(v.provenance.artifact_digest) if v.provenance else "-",
            evidence_summary(v.evidence),
            _note(v),
        ]
        rows.append(tuple(row))
    return render_text([Table(tuple(headers), tuple(rows), "the registry lists no versions")])


def format_version(version: VersionSpec, history: Sequence[StatusChangeRow] | None = None) -> str:
    """`rollback-agent versions show TAG`: every field, and the status history when the audit is at hand."""
    return render_text(version_blocks(version, level=1, history=history))


def _worth_showing(change: TrafficChange) -> bool:
    """The detail of a change that did not simply succeed, or that an operator forced."""
    return bool(change.detail) and (change.outcome != "acked" or change.detail.startswith("FORCED"))


def format_changes(changes: Sequence[TrafficChange]) -> str:
    """`rollback-agent history`: one line per traffic change, oldest first."""
    rows = tuple(
        (
            str(c.seq),
            format_time(c.at),
            format_weights(c.from_weights),
            format_weights(c.to_weights),
            c.actor,
            c.outcome,
            ms(c.decision_to_ack_ms),
            c.reason
            + (f" [trigger: {c.trigger}]" if c.trigger else "")
            + (f" [{c.detail.strip()}]" if _worth_showing(c) else ""),
        )
        for c in changes
    )
    return render_text(
        [
            Table(
                ("SEQ", "TIME", "FROM", "TO", "ACTOR", "OUTCOME", "ACK_MS", "REASON"),
                rows,
                "no traffic change recorded",
            )
        ]
    )


def format_rollouts(rows: Sequence[RolloutRow]) -> str:
    """`rollback-agent history`, after the traffic changes: every rollout move with its gates' verdicts."""
    return render_text([Heading(2, "Rollouts"), rollout_table(rows)])


def format_mirrors(rows: Sequence[MirrorRow]) -> str:
    """`rollback-agent history`, after the rollouts: every change of the shadow traffic."""
    return render_text([Heading(2, "Shadow traffic"), mirror_table(rows)])


def format_serving_state(state: ServingState) -> str:
    """`rollback-agent history --at T`: the split served then, and what each serving version is."""
    blocks: list[Block] = [Heading(1, f"Served at {format_time(state.at)}")]
    if not state.known:
        blocks.append(
            Paragraph(
                f"Unknown: {state.source} (the agent was not deciding this model's routing yet, or its state "
                "was reset).",
                "warn",
            )
        )
        return render_text(blocks)
    blocks.append(
        Fields(
            (
                ("Weights", format_weights(state.weights)),
                ("Revision", str(state.revision)),
                ("Since", format_time(state.since)),
                ("Source", state.source),
                ("Actor", state.actor or "-"),
                ("Reason", state.reason or "-"),
            )
        )
    )
    if state.uncertain:
        blocks.append(Paragraph(f"Uncertain: {state.uncertain}", "warn"))
    for served in state.serving:
        blocks.append(Heading(2, f"{served.tag}: weight {served.weight} ({served.share:.0%})"))
        version = served.version
        if version is None:
            blocks.append(Paragraph("Not in the registry: provenance unknown.", "warn"))
            continue
        p = version.provenance
        blocks.append(
            Fields(
                (
                    ("Status now", status_text(version)),
                    ("Created", created_text(version.created, format_time(version.created))),
                    ("Artifact", f"{p.artifact_uri} ({p.artifact_digest})" if p else "not recorded"),
                    ("Training data", f"{p.training_data_uri} ({p.training_data_hash})" if p else "not recorded"),
                    ("Feature code commit", p.feature_code_commit if p else "not recorded"),
                    ("Image", p.image if p else "not recorded"),
                )
            )
        )
    return render_text(blocks)
