"""The wheel users install carries what the agent needs at run time (tier profiles, typing marker)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_tier_profiles_and_no_test_fixtures(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"agent/triggers/profiles/critical.yaml", "agent/triggers/profiles/experimental.yaml"} <= names
    assert "agent/py.typed" in names and "model_metrics/README.md" in names
    assert "agent/reporting/templates/compliance.html.j2" in names  # report --format html|pdf
    assert {"agent/rollout/plans/critical.yaml", "agent/rollout/plans/experimental.yaml"} <= names
    assert not any(n.startswith(("refserver/", "harness/", "tests/")) for n in names)
