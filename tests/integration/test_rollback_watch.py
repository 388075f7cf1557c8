"""Issue 13: `rollback-agent rollback --wait` and `status --watch` against the real agent (real Envoy, two reference
model servers): the phases as they complete, the verification window counting down, the outcome as the exit code,
and Ctrl-C leaving cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import pytest

from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT, TOKEN, AgentStack, body_factory

CONFIG = {"rollback": {"verify_window_s": 4, "cooldown_s": 0}}
PHASES = ("detect", "select", "validate", "warm", "switch", "ack", "mark", "confirm", "verify", "archive")
PHASE_LINE = re.compile(r"^  \S (\w+)\s+(ok|failed|skipped)\s")


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory) -> AgentStack:
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=CONFIG)
    s.start_upstreams()
    s.start_agent()
    s.start_envoy()
    return s


async def cli(stack: AgentStack, *args: str) -> asyncio.subprocess.Process:
    assert stack.config_path is not None
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        "--config",
        str(stack.config_path),
        cwd=ROOT,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


class Lines:
    """A subprocess's stdout, read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, predicate, timeout_s: float, what: str) -> str:
        assert self.process.stdout is not None
        stdout = self.process.stdout

        async def next_match() -> str:
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise AssertionError(f"{what}: output ended; so far {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if predicate(line):
                    return line

        try:
            return await asyncio.wait_for(next_match(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {timeout_s} s; so far {self.lines}") from None


async def test_rollback_wait_follows_the_procedure_and_status_watch_shows_it(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    watcher = await cli(stack, "status", "--watch", "--interval", "0.3")
    watched = Lines(watcher)
    try:
        await watched.until(lambda line: line == "served split: v1=50 v2=50", 15, "the first status frame")
        async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=150, concurrency=6) as generator:
            await generator.wait_for_responses(200, timeout_s=15)
            waiter = await cli(stack, "rollback", "--wait", "--reason", "drill: scores look wrong")
            waited = Lines(waiter)
            await waited.until(lambda line: line.startswith("outcome: "), 30, "the outcome")
            out, err = await asyncio.wait_for(waiter.communicate(), 10)
        waited.lines += out.decode().splitlines()
        print("\n".join(waited.lines))
        assert waiter.returncode == 0, (waited.lines, err.decode())
        # Each phase once, in the order the procedure ran it; the window counted down; the outcome last.
        phases = [m[1] for line in waited.lines if (m := PHASE_LINE.match(line))]
        assert phases == list(PHASES), waited.lines
        countdown = [line for line in waited.lines if "verification window" in line]
        assert len(countdown) >= 3 and "left of 4 s" in countdown[0], waited.lines
        assert waited.lines[-1].startswith("outcome: recovered"), waited.lines
        assert any(line.startswith("rollback ") and "v2 -> v1" in line for line in waited.lines), waited.lines

        # The watcher saw the split move and the rollback's outcome; Ctrl-C leaves it cleanly.
        await watched.until(lambda line: line == "served split: v1=100 v2=0", 15, "the split moved in the watch")
        await watched.until(lambda line: line.startswith("outcome: recovered"), 15, "the outcome in the watch")
        watcher.send_signal(signal.SIGINT)
        _, watch_err = await asyncio.wait_for(watcher.communicate(), 10)
        assert watcher.returncode == 130, watch_err.decode()
        assert "Traceback" not in watch_err.decode() and "stopped watching" in watch_err.decode()
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


async def test_rollback_wait_exits_1_when_nothing_is_verified(stack):
    """With no traffic, verification has no evidence: inconclusive is not recovered."""
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    waiter = await cli(stack, "rollback", "--wait", "--reason", "drill without traffic")
    out, err = await asyncio.wait_for(waiter.communicate(), 30)
    lines = out.decode().splitlines()
    assert waiter.returncode == 1, (lines, err.decode())
    assert lines[-1].startswith("outcome: inconclusive"), lines

    async def on_v1() -> bool:
        _, body = await stack.control("GET", "/v1/status")
        return [v["served_weight"] for v in body["versions"]] == [100, 0]

    await async_wait_until(on_v1, 5, what="traffic on v1 all the same")
