"""The reference model server (`python -m refserver`) as a subprocess.

Contract (refserver/): `python -m refserver --model NAME --version TAG --port N [--host H] [--faults JSON]
[--start-unloaded] [--memory-limit-mb MB]` run from the repo root; GET /v2/health/ready answers 200 once ready;
POST /faults (JSON) sets faults, DELETE /faults clears them; every response carries `x-model-version`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Self

from harness.http_util import HttpStatusError, request
from harness.ports import free_port
from harness.pyproc import REPO_ROOT, module_argv, python_env
from harness.service import HttpService
from harness.wait import NotYet, http_status, wait_until

__all__ = ["RefServer", "refserver_available", "start_refserver"]

READY_PATH = "/v2/health/ready"


def refserver_available() -> bool:
    """True once the refserver package exists in the repo."""
    return (REPO_ROOT / "refserver" / "__main__.py").exists()


class RefServer(HttpService):
    """One refserver process: `url`, `set_faults`, `clear_faults`, plus the HttpService lifecycle."""

    ready_path = READY_PATH

    def __init__(
        self,
        model: str,
        version: str,
        port: int | None,
        log_dir: str | os.PathLike[str],
        extra_args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        faults: Mapping[str, Any] | None = None,
        start_unloaded: bool = False,
        memory_limit_mb: float | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.start_unloaded = start_unloaded
        port = port or free_port(host)
        args = ["--model", model, "--version", version, "--port", str(port), "--host", host]
        if faults is not None:
            args += ["--faults", json.dumps(dict(faults))]
        if start_unloaded:
            args.append("--start-unloaded")
        if memory_limit_mb is not None:  # dies with exit code 137 at the limit, as an OOM-killed container
            args += ["--memory-limit-mb", f"{memory_limit_mb:g}"]
        args += list(extra_args)
        super().__init__(
            module_argv("refserver", args, python),
            name=name or f"refserver-{model}-{version}",
            host=host,
            port=port,
            log_dir=log_dir,
            cwd=REPO_ROOT,
            env=python_env(env),
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """200 on /v2/health/ready; with start_unloaded only "answers at all" (it is up but not ready)."""
        if not self.start_unloaded:
            super().wait_ready(timeout_s)
            return
        url = self.url + self.ready_path

        def probe() -> bool | NotYet:
            self.process.check_alive()
            status = http_status(url, timeout_s=0.5)
            return status is not None or NotYet(status)

        wait_until(probe, timeout_s, interval_s=0.02, what=f"{self.process.name} {url} to answer")

    def start(self, timeout_s: float = 30.0) -> Self:
        return super().start(timeout_s)

    def ready_status(self) -> int | None:
        """Status of GET /v2/health/ready, None if nothing answers."""
        return http_status(self.url + self.ready_path, timeout_s=1.0)

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """POST /faults with `faults` as JSON (schema: refserver's)."""
        resp = request("POST", f"{self.url}/faults", json_body=dict(faults), timeout_s=5.0)
        if not resp.ok:
            raise HttpStatusError("POST", f"{self.url}/faults", resp)

    def clear_faults(self) -> None:
        """DELETE /faults."""
        resp = request("DELETE", f"{self.url}/faults", timeout_s=5.0)
        if not resp.ok:
            raise HttpStatusError("DELETE", f"{self.url}/faults", resp)

    async def set_faults_async(self, faults: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.set_faults, faults)

    async def clear_faults_async(self) -> None:
        await asyncio.to_thread(self.clear_faults)


def start_refserver(
    model: str,
    version: str,
    port: int | None,
    log_dir: str | os.PathLike[str],
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    faults: Mapping[str, Any] | None = None,
    start_unloaded: bool = False,
    memory_limit_mb: float | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> RefServer:
    """Start a refserver and wait until it is ready (or, with start_unloaded, answering). `port=None` picks a
    free one."""
    server = RefServer(
        model,
        version,
        port,
        log_dir,
        extra_args,
        host=host,
        faults=faults,
        start_unloaded=start_unloaded,
        memory_limit_mb=memory_limit_mb,
        env=env,
    )
    return server.start(timeout_s)
