"""The agent (`python -m agent run --config PATH`) as a subprocess. Deliberately generic: the config format
is the agent's business; this only starts, logs and stops the process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from harness.process import ManagedProcess
from harness.pyproc import REPO_ROOT, module_argv, python_env
from harness.wait import NotYet, http_status, wait_until

__all__ = ["start_agent", "wait_http_ready", "wait_http_ready_async"]


def start_agent(
    config_path: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    extra_args: Sequence[str] = (),
    name: str = "agent",
    python: str | None = None,
) -> ManagedProcess:
    """Start `python -m agent run --config PATH [extra_args]` from the repo root; does not wait for anything
    (use `wait_http_ready` on whatever endpoint the config exposes)."""
    argv = module_argv("agent", ["run", "--config", str(config_path), *extra_args], python)
    return ManagedProcess(argv, name=name, log_dir=log_dir, env=python_env(env), cwd=REPO_ROOT).start()


def wait_http_ready(
    url: str,
    timeout_s: float = 20.0,
    *,
    process: ManagedProcess | None = None,
    require_2xx: bool = True,
) -> int:
    """Wait until GET `url` answers 2xx (or anything, with require_2xx=False); returns the status. With
    `process`, fail at once (ProcessExitedError, with its log) if it exits meanwhile."""

    def probe() -> int | NotYet:
        if process is not None:
            process.check_alive()
        status = http_status(url, timeout_s=0.5)
        if status is not None and (not require_2xx or 200 <= status < 300):
            return status
        return NotYet(status)

    return wait_until(probe, timeout_s, interval_s=0.02, what=f"{url} to answer" + (" 2xx" if require_2xx else ""))


async def wait_http_ready_async(
    url: str,
    timeout_s: float = 20.0,
    *,
    process: ManagedProcess | None = None,
    require_2xx: bool = True,
) -> int:
    """`wait_http_ready` in a worker thread (the event loop keeps serving)."""
    return await asyncio.to_thread(wait_http_ready, url, timeout_s, process=process, require_2xx=require_2xx)
