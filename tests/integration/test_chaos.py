"""The fast subset of `make chaos` (bench/chaos.py, docs/chaos.md): the same scenarios with small counts.

One SIGKILL of the agent around a rollback per trigger kind (operator, alert, rule); three of the six state-file
faults (tests/integration/test_state_trust.py refuses all six) plus a read-only state dir and a full disk (proxy)
while running; a 3 s agent outage under load; 2 Envoy restarts. About 55 s on 2 cores. Every check of the run must
pass; a failure lists each failed check with what was seen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.binaries import MissingBinaryError
from harness.envoy import envoy_binary
from harness.process import ManagedProcess
from harness.pyproc import REPO_ROOT, python_env
from harness.refserver import refserver_available
from tests.integration.conftest import require, unavailable

FAST_FAULTS = ("delete", "corrupt", "remove_dir")  # the marker, SQLite damage, Envoy's memory as evidence
FAST = [
    "--only",
    "kill,storage,outage,envoy-restarts",
    "--kills",
    "3",
    "--storage-faults",
    ",".join(FAST_FAULTS),
    "--outage-s",
    "3",
    "--envoy-restarts",
    "2",
    "--window",
    "100",
]


def test_chaos_fast_subset_passes_every_check(tmp_path: Path, tmp_logs: Path) -> None:
    try:
        envoy_binary()
    except MissingBinaryError as err:
        unavailable(str(err))
    require(refserver_available(), "refserver/__main__.py (the reference model server)")
    output = tmp_path / "chaos.json"
    argv = [sys.executable, str(REPO_ROOT / "bench" / "chaos.py"), *FAST, "--seed", "7", "--output", str(output)]
    bench = ManagedProcess(
        argv, name="chaos", log_dir=tmp_logs, env=python_env({"CHAOS_KEEP_LOGS": str(tmp_logs)}), cwd=REPO_ROOT
    )
    with bench.start():  # SIGTERM on the way out: the bench then stops everything it started
        try:
            code = bench.wait(timeout_s=240)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bench/chaos.py still running after 240 s:\n{bench.log_tail(40)}") from None
    assert output.exists(), f"bench/chaos.py exited {code} without a result:\n{bench.log_tail(60)}"
    result = json.loads(output.read_text())
    failures = "\n".join(result["failures"])
    assert result["all_checks_passed"], f"{result['checks_failed']} chaos check(s) failed:\n{failures}"
    assert code == 0
    assert result["kill"]["cycles"] == 3
    assert result["kill"]["by_trigger"] == {"operator": 1, "alert": 1, "rule": 1}
    assert {row["fault"] for row in result["storage"]["faults"]} == set(FAST_FAULTS)
    assert set(result["storage"]["running_faults"]) == {"read_only", "disk_full"}
    assert result["envoy_restarts"]["restarts"] == 2
