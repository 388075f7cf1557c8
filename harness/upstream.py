"""A tiny in-process aiohttp upstream that answers every request with `x-model-version: <version>`.

For harness tests and benchmarks that need a stand-in model server without a subprocess:

    async with VersionUpstream("v1") as up:
        ... up.port, up.url, up.requests ...

`status` and `delay_s` can be changed while it runs (fault injection).
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Self

from aiohttp import web

from harness.ports import free_port

__all__ = ["VersionUpstream"]


class VersionUpstream:
    def __init__(
        self,
        version: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        status: int = 200,
        delay_s: float = 0.0,
        header: str = "x-model-version",
    ) -> None:
        self.version = version
        self.host = host
        self.port = port or free_port(host)
        self.status = status
        self.delay_s = delay_s
        self.header = header
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        body = json.dumps({"version": self.version, "path": request.path})
        return web.Response(
            status=self.status,
            text=body,
            content_type="application/json",
            headers={self.header: self.version},
        )

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
