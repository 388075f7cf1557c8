"""The audit trail through the CLI: `audit verify`, `history --at`, `report`, run as subprocesses against a state dir.

The trail is made in-process by the real engine on the real SQLite store: a TrafficController over the dry-run
route sink (NopRouteSink), and the real RollbackOrchestrator (registry planner on the file registry, forensic
archiver) for an operator rollback. A fake wall clock spaces the changes ten minutes apart, an hour ago, so
`history --at` can ask about moments between them without waiting. Tampering is done with sqlite3 on copies of
the state dir, the way someone with file access would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from agent.adapters.archive.forensic_archive import ForensicArchiver
from agent.adapters.nop_route_sink import NopRouteSink
from agent.adapters.registry.file_registry import open_registry
from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.config import RollbackSection, load_config
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.admission import Admission
from agent.engine.decisions import Action, Cause, DecisionOutcome, TriggerEvent
from agent.engine.orchestrator import RollbackOrchestrator
from agent.engine.planner import RegistryPlanner
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.rollback import CheckResult, VerificationResult
from agent.registry import Constraints
from agent.telemetry import AgentMetrics
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT

MODEL = "cancer"
REASON = "scores drift after the feature change (INC-7)"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Healthy:
    async def live_checks(self, version: str, *, max_age_s: float) -> Sequence[CheckResult]:
        return [CheckResult("ready", True, "ready")]

    async def is_loaded(self, version: str) -> bool:
        return True

    async def warm(self, version: str, timeout_s: float) -> None:
        return None

    async def confirm(self, version: str, timeout_s: float) -> tuple[bool, str]:
        return True, f"requests reach {version}"

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        return VerificationResult(True, f"{version} within its baseline")


@dataclass(frozen=True)
class Trail:
    config: Path
    times: dict[str, float]  # t0 (initial policy), t1, t2 (operator changes), t3 (the rollback)
    rollback_id: str
    records: int


def write_config(directory: Path) -> Path:
    config = {
        "model": {"name": MODEL},
        "versions": [{"tag": "v1", "endpoint": "127.0.0.1:18001"}, {"tag": "v2", "endpoint": "127.0.0.1:18002"}],
        "stable": "v1",
        "candidate": "v2",
        "state_dir": "state",
    }
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def make_trail(directory: Path) -> Trail:
    config_path = write_config(directory)
    config = load_config(config_path)
    t0 = float(int(time.time()) - 3600)  # whole seconds: exact in floats, timestamps and RFC 3339
    clock = Clock(t0)
    times = {"t0": t0, "t1": t0 + 600, "t2": t0 + 1200, "t3": t0 + 1800}
    initial = TrafficPolicy((("v1", 100), ("v2", 0)), 1, "initial weights from the config file", "config", t0)
    store = await SqliteStateStore.create(
        config.state_dir / "state.db",
        model=MODEL,
        establish=audit_pb2.StateEstablished(how="first_start", policy=policy_to_pb(initial)),
        actor="agent",
        clock=clock,
    )
    registry = await open_registry(config)
    try:
        metrics = AgentMetrics(MODEL)
        traffic = TrafficController(
            model=MODEL,
            versions=config.tags,
            stable="v1",
            store=store,
            sink=NopRouteSink(),
            metrics=metrics,
            ack_timeout_s=1,
            wall_clock=clock,
        )
        await traffic.start()
        clock.now = times["t1"]
        await traffic.set_weights({"v1": 90, "v2": 10}, reason="canary 10%", actor="operator:alice")
        clock.now = times["t2"]
        await traffic.set_weights({"v1": 50, "v2": 50}, reason="canary 50%", actor="operator:alice")
        clock.now = times["t3"]
        healthy = Healthy()
        orchestrator = RollbackOrchestrator(
            traffic=traffic,
            planner=RegistryPlanner(registry, Constraints(deployed=frozenset(config.tags))),
            health=healthy,
            warmer=healthy,
            confirmer=healthy,
            verifier=healthy,
            archiver=ForensicArchiver(config.state_dir / "archive", {}),
            store=store,
            metrics=metrics,
            settings=RollbackSection(verify_window_s=0),
            wall_clock=clock,
        )
        admission = Admission(traffic=traffic, store=store, procedure=orchestrator)
        decision = await admission.handle(
            TriggerEvent(
                cause=Cause.OPERATOR,
                action=Action.ROLLBACK,
                version=None,
                summary=f"operator bob: {REASON}",
                record=audit_pb2.Trigger(operator=audit_pb2.OperatorTrigger(identity="bob", reason=REASON)),
            )
        )
        assert decision.outcome is DecisionOutcome.ROLLED_BACK, decision

        async def rollback_written() -> bool:
            # The final record (a rollback that moved traffic first writes one with outcome "switched").
            return any(
                r.WhichOneof("event") == "rollback" and r.rollback.outcome != "switched" for r in await store.records()
            )

        await async_wait_until(rollback_written, 10, what="the Rollback audit record")
        await orchestrator.close()
        records = len(await store.records())
    finally:
        await registry.close()
        await store.close()
    return Trail(config_path, times, decision.rollback_id, records)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return asyncio.run(make_trail(tmp_path_factory.mktemp("audit-trail")))


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def copy_trail(trail: Trail, directory: Path) -> Path:
    """A copy of the state dir (and config) to tamper with."""
    shutil.copytree(trail.config.parent / "state", directory / "state")
    return write_config(directory)


def db_of(config: Path) -> sqlite3.Connection:
    return sqlite3.connect(config.parent / "state" / "state.db", isolation_level=None)


def seq_of(config: Path, event: str, which: int = 0) -> int:
    records = read_audit_records(config.parent / "state" / "state.db")
    return [r.seq for r in records if r.WhichOneof("event") == event][which]


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


# --- audit verify -------------------------------------------------------------------------------------------------


def test_intact_chain_verifies(trail: Trail):
    result = cli(trail.config, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert f"audit chain intact: {trail.records} records" in result.stdout


def test_edited_record_is_detected_and_named(trail: Trail, tmp_path: Path):
    config = copy_trail(trail, tmp_path)
    seq = seq_of(config, "traffic_changed", 1)  # the operator's second change
    with contextlib.closing(db_of(config)) as db:
        [(blob,)] = db.execute("SELECT record FROM audit WHERE seq = ?", (seq,)).fetchall()
        assert b"operator:alice" in blob
        # Same length, still a valid record: only the hash chain can tell.
        db.execute(
            "UPDATE audit SET record = ? WHERE seq = ?", (blob.replace(b"operator:alice", b"operator:mallo"), seq)
        )
    result = cli(config, "audit", "verify")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"BROKEN record {seq}: content does not match its hash (edited)" in result.stderr
    assert "audit chain BROKEN: 1 problem(s)" in result.stderr


def test_edit_that_re_seals_the_record_breaks_the_next_link(trail: Trail, tmp_path: Path):
    """A forger who recomputes the edited record's own hash still breaks the link to the next record."""
    from agent.domain.audit_chain import record_hash

    config = copy_trail(trail, tmp_path)
    seq = seq_of(config, "traffic_changed", 0)
    with contextlib.closing(db_of(config)) as db:
        [(blob,)] = db.execute("SELECT record FROM audit WHERE seq = ?", (seq,)).fetchall()
        record = audit_pb2.AuditRecord.FromString(blob)
        record.actor = "operator:mallory"
        record.hash = record_hash(record)
        db.execute("UPDATE audit SET record = ? WHERE seq = ?", (record.SerializeToString(deterministic=True), seq))
    result = cli(config, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN record {seq + 1}: does not follow the record before it" in result.stderr


def test_deleted_record_is_detected(trail: Trail, tmp_path: Path):
    config = copy_trail(trail, tmp_path)
    seq = seq_of(config, "traffic_changed", 1)
    with contextlib.closing(db_of(config)) as db:
        db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    result = cli(config, "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert f"BROKEN record {seq + 1}: out of sequence: expected record {seq} here" in result.stderr
    assert f"BROKEN record {seq + 1}: does not follow the record before it" in result.stderr


def test_swapped_records_are_detected(trail: Trail, tmp_path: Path):
    config = copy_trail(trail, tmp_path)
    a, b = seq_of(config, "traffic_changed", 0), seq_of(config, "traffic_changed", 1)
    with contextlib.closing(db_of(config)) as db:
        db.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
        db.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
        db.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))
    result = cli(config, "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert f"BROKEN record {b}: out of sequence: expected record {a} here" in result.stderr
    assert f"BROKEN record {a}: out of sequence" in result.stderr


def test_unreadable_record_is_reported_not_a_crash(trail: Trail, tmp_path: Path):
    config = copy_trail(trail, tmp_path)
    seq = seq_of(config, "traffic_changed", 0)
    with contextlib.closing(db_of(config)) as db:
        db.execute("UPDATE audit SET record = ? WHERE seq = ?", (b"\xff\xff\xff garbage", seq))
    result = cli(config, "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert f"record {seq}" in result.stderr, result.stderr


# --- history --at -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "offset_s", "expected"),
    [
        ("t0", -60, None),  # before the first policy: unknown, not a guess
        ("t0", 0, "v1=100, v2=0"),  # the initial policy, from its own time on
        ("t0", 300, "v1=100, v2=0"),
        ("t1", 0, "v1=90, v2=10"),  # a change counts from its record's time, inclusive
        ("t1", 300, "v1=90, v2=10"),
        ("t2", 300, "v1=50, v2=50"),
        ("t3", 60, "v1=100, v2=0"),  # after the rollback
    ],
)
def test_history_at_answers_the_weights_in_force(trail: Trail, moment: str, offset_s: float, expected: str | None):
    result = cli(trail.config, "history", "--at", iso(trail.times[moment] + offset_s))
    assert result.returncode == 0, result.stderr
    if expected is None:
        assert "Unknown: before the first recorded policy" in result.stdout, result.stdout
        assert "Weights" not in result.stdout
    else:
        weights = next(line for line in result.stdout.splitlines() if line.strip().startswith("Weights"))
        assert weights.split(None, 1)[1].strip() == expected, result.stdout
    if moment == "t3":
        assert trail.rollback_id in result.stdout and REASON in result.stdout, result.stdout


def test_history_lists_every_change_with_its_rollback(trail: Trail):
    result = cli(trail.config, "history")
    assert result.returncode == 0, result.stderr
    assert "canary 10%" in result.stdout and "canary 50%" in result.stdout
    assert REASON in result.stdout


def test_history_rejects_a_time_without_timezone(trail: Trail):
    result = cli(trail.config, "history", "--at", "2024-08-12T09:30:00")
    assert result.returncode == 2
    assert "timezone" in result.stderr


# --- report -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_report_contains_the_rollback_and_its_reason(trail: Trail, fmt: str):
    result = cli(trail.config, "report", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert trail.rollback_id in result.stdout
    assert REASON in result.stdout
    if fmt == "json":
        report = json.loads(result.stdout)
        assert report["audit_chain"]["intact"] is True
        [rollback] = report["rollbacks"]
        assert rollback["rollback_id"] == trail.rollback_id
        assert (rollback["from_version"], rollback["to_version"]) == ("v2", "v1")
        assert REASON in json.dumps(rollback["trigger"])
        assert rollback["outcome"] == "recovered"
        assert {p["name"] for p in rollback["phases"]} >= {"select", "validate", "switch", "ack", "verify", "archive"}
        assert rollback["to_weights"] == {"v1": 100, "v2": 0}
        # The failing version's status change is in the trail, with the rollback as its reason.
        [change] = report["status_changes"]
        assert (change["version"], change["from_status"], change["to_status"]) == ("v2", "candidate", "failed")
        assert trail.rollback_id in change["reason"]
    if fmt == "html":
        assert result.stdout.lstrip().lower().startswith("<!doctype html")


def test_report_of_a_tampered_trail_says_so(trail: Trail, tmp_path: Path):
    config = copy_trail(trail, tmp_path)
    seq = seq_of(config, "traffic_changed", 1)
    with contextlib.closing(db_of(config)) as db:
        db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    result = cli(config, "report", "--format", "json")
    assert result.returncode == 0, result.stderr
    chain = json.loads(result.stdout)["audit_chain"]
    assert chain["intact"] is False
    assert seq + 1 in {p["seq"] for p in chain["problems"]}


def _poppler(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:  # scripts/install-system-deps.sh installs poppler-utils (as .ci/run does)
        pytest.fail(f"{tool} not found: install Debian's poppler-utils (scripts/install-system-deps.sh)")
    return found


def test_the_pdf_report_is_printed_with_its_document_id_on_every_page_and_renders(trail: Trail, tmp_path: Path):
    pdf = tmp_path / "report.pdf"
    result = cli(trail.config, "report", "--format", "pdf", "-o", str(pdf))
    assert result.returncode == 0, result.stderr
    assert pdf.read_bytes().startswith(b"%PDF-") and f"report written to {pdf}" in result.stdout
    pages = subprocess.run(
        [_poppler("pdftotext"), "-layout", str(pdf), "-"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\f")
    pages = [p for p in pages if p.strip()]
    assert len(pages) >= 2
    found = re.search(r"Document (RBA-\d{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4})", pages[0])
    assert found, pages[0][:500]
    doc = found.group(1)
    for number, text in enumerate(pages, start=1):
        assert f"Document {doc}" in text and f"Page {number} of {len(pages)}" in text, (number, text[-300:])
    whole = "\n".join(pages)
    assert trail.rollback_id in whole and "Sign-off" in whole and "Reviewed by (model risk)" in whole
    assert "Identities on record" in whole and "operator:" in whole
    # Rendered to images, as a reviewer's viewer would: one PNG per page, none of them blank.
    subprocess.run([_poppler("pdftoppm"), "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == len(pages)
    assert all(image.stat().st_size > 2_000 for image in images)


def test_a_report_from_a_teams_template_and_a_broken_template_that_writes_nothing(trail: Trail, tmp_path: Path):
    ours = tmp_path / "ours.html.j2"
    ours.write_text(
        "<h1>ACME {{ document_id }}</h1>{% for r in report.rollbacks %}<p>{{ r.rollback_id }}</p>{% endfor %}"
    )
    out = tmp_path / "ours.html"
    result = cli(trail.config, "report", "--format", "html", "--template", str(ours), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("<h1>ACME RBA-") and trail.rollback_id in out.read_text()
    broken = tmp_path / "broken.html.j2"
    broken.write_text("<h1>ok</h1>\n{% if %}\n")
    target = tmp_path / "never.pdf"
    result = cli(trail.config, "report", "--format", "pdf", "--template", str(broken), "-o", str(target))
    assert result.returncode == 2 and f"error: {broken}:2:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not target.exists()
    result = cli(trail.config, "report", "--format", "pdf")
    assert result.returncode == 2 and "needs --output" in result.stderr
