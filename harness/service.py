"""`HttpService`: a ManagedProcess that serves HTTP on 127.0.0.1 and has a readiness URL (base of the
Prometheus and Alertmanager handles)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.process import ManagedProcess
from harness.wait import NotYet, http_status, wait_until

__all__ = ["HttpService"]


class HttpService:
    """A process with `url` and a readiness path; `start()` waits for the path to answer 200."""

    ready_path = "/-/ready"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        host: str,
        port: int,
        log_dir: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.log_dir = Path(log_dir)
        self.process = ManagedProcess(argv, name=name, log_dir=log_dir, cwd=cwd, env=env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start and wait for `ready_path` to answer 200; kills the process and re-raises if it does not."""
        self.process.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.process.kill()
            raise
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        url = self.url + self.ready_path

        def probe() -> bool | NotYet:
            self.process.check_alive()
            status = http_status(url, timeout_s=0.5)
            return status == 200 or NotYet(status)

        wait_until(probe, timeout_s, interval_s=0.02, what=f"{self.process.name} {url} to answer 200")

    async def start_async(self, timeout_s: float = 15.0) -> Self:
        return await asyncio.to_thread(self.start, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        return self.process.stop(timeout_s)

    def kill(self) -> int | None:
        return self.process.kill()

    def log_tail(self, n_lines: int = 50) -> str:
        return self.process.log_tail(n_lines)

    def __enter__(self) -> Self:
        if self.process.pid is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url}, pid={self.pid}, alive={self.alive})"
