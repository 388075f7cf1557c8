"""How a drill puts its fault into a model version: the reference server's fault switches, or a user's command.

Reference server: POST http://ENDPOINT/faults with the fault's fields, DELETE /faults to clear (refserver/README.md).
Hook: the command (split like a shell would, never run through one) with `inject` or `clear` appended, and the
environment variables DRILL_ACTION, DRILL_VERSION, DRILL_ENDPOINT, DRILL_FAULT; exit 0 means done.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from agent.domain.drill import REFSERVER_FAULTS
from agent.engine.drill_runner import DrillStepError

_HOOK_OUTPUT_CHARS = 500


class RefserverFaults:
    """The reference server's fault switches, over HTTP on each version's endpoint."""

    def __init__(self, endpoints: Mapping[str, str], fault: str, timeout_s: float = 5.0) -> None:
        if fault not in REFSERVER_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(REFSERVER_FAULTS)}")
        self._endpoints = dict(endpoints)
        self._fault = fault
        self._timeout_s = timeout_s

    def _url(self, version: str) -> str:
        if version not in self._endpoints:
            raise DrillStepError(f"no endpoint for version {version!r}")
        return f"http://{self._endpoints[version]}/faults"

    def _call(self, method: str, url: str, body: Mapping[str, Any] | None) -> None:
        data = None if body is None else json.dumps(dict(body)).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DrillStepError(f"{method} {url}: HTTP {exc.code}: {exc.read(300).decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DrillStepError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None

    async def inject(self, version: str) -> str:
        url, fields = self._url(version), REFSERVER_FAULTS[self._fault]
        await asyncio.to_thread(self._call, "POST", url, fields)
        return f"fault {self._fault} injected into {version}: POST {url} {json.dumps(dict(fields))}"

    async def clear(self, version: str) -> str:
        url = self._url(version)
        await asyncio.to_thread(self._call, "DELETE", url, None)
        return f"fault cleared on {version}: DELETE {url}"


class HookFaults:
    """A user's command injects and clears the fault (any model server)."""

    def __init__(
        self,
        command: str,
        *,
        endpoints: Mapping[str, str],
        fault: str = "hook",
        timeout_s: float = 60.0,
    ) -> None:
        self._argv = shlex.split(command)
        if not self._argv:
            raise ValueError("the hook command is empty")
        self._endpoints = dict(endpoints)
        self._fault = fault
        self._timeout_s = timeout_s

    async def _run(self, action: str, version: str) -> str:
        env = {
            **os.environ,
            "DRILL_ACTION": action,
            "DRILL_VERSION": version,
            "DRILL_ENDPOINT": self._endpoints.get(version, ""),
            "DRILL_FAULT": self._fault,
        }
        argv = [*self._argv, action]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as exc:
            raise DrillStepError(f"hook {shlex.join(argv)}: cannot start: {exc.strerror or exc}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise DrillStepError(f"hook {shlex.join(argv)}: no exit within {self._timeout_s:g}s (killed)") from None
        text = output.decode(errors="replace").strip()[-_HOOK_OUTPUT_CHARS:]
        if process.returncode != 0:
            raise DrillStepError(f"hook {shlex.join(argv)} exited {process.returncode}: {text or 'no output'}")
        return f"hook {action} on {version}: ok" + (f" ({text})" if text else "")

    async def inject(self, version: str) -> str:
        return await self._run("inject", version)

    async def clear(self, version: str) -> str:
        return await self._run("clear", version)
