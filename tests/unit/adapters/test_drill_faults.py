"""A user's hook command injects and clears a drill's fault: its arguments and environment, and its failures named."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from agent.adapters.drill_faults import HookFaults, RefserverFaults
from agent.engine.drill_runner import DrillStepError

SCRIPT = """\
import os, sys
with open(sys.argv[1], "a") as out:
    out.write(" ".join([sys.argv[2], os.environ["DRILL_ACTION"], os.environ["DRILL_VERSION"],
                        os.environ["DRILL_ENDPOINT"], os.environ["DRILL_FAULT"]]) + "\\n")
print("done")
"""


async def test_the_hook_gets_the_action_as_argument_and_the_drill_in_its_environment(tmp_path: Path):
    script, log = tmp_path / "hook.py", tmp_path / "calls.txt"
    script.write_text(SCRIPT)
    hook = HookFaults(shlex.join([sys.executable, str(script), str(log)]), endpoints={"v2": "127.0.0.1:8002"})
    assert await hook.inject("v2") == "hook inject on v2: ok (done)"
    assert await hook.clear("v2") == "hook clear on v2: ok (done)"
    assert log.read_text().splitlines() == [
        "inject inject v2 127.0.0.1:8002 hook",
        "clear clear v2 127.0.0.1:8002 hook",
    ]


async def test_a_failing_hook_is_a_step_error_with_its_output(tmp_path: Path):
    hook = HookFaults(
        shlex.join([sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"]), endpoints={}
    )
    with pytest.raises(DrillStepError, match=r"exited 3: no such model"):
        await hook.inject("v2")


async def test_a_hook_that_does_not_exist_or_hangs_is_named(tmp_path: Path):
    with pytest.raises(DrillStepError, match="cannot start"):
        await HookFaults(str(tmp_path / "missing"), endpoints={}).inject("v2")
    slow = HookFaults(shlex.join([sys.executable, "-c", "import time; time.sleep(30)"]), endpoints={}, timeout_s=0.5)
    with pytest.raises(DrillStepError, match=r"no exit within 0.5s \(killed\)"):
        await slow.inject("v2")


async def test_refserver_faults_name_an_unreachable_server():
    faults = RefserverFaults({"v2": "127.0.0.1:9"}, "errors", timeout_s=1)
    with pytest.raises(DrillStepError, match=r"POST http://127.0.0.1:9/faults"):
        await faults.inject("v2")
    with pytest.raises(DrillStepError, match="no endpoint for version 'v9'"):
        await faults.clear("v9")
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        RefserverFaults({}, "explode")
