"""Headless Chromium (Debian's `chromium`) driven through its DevTools protocol over a websocket (aiohttp):
load a page, run JavaScript in it, take screenshots. No browser download, no playwright.

The browser runs as a ManagedProcess (its own process group, stopped with everything it spawned); its profile
lives in the test's tmp dir; it only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from harness.process import ManagedProcess
from harness.wait import async_wait_until

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # the port it chose is written to DevToolsActivePort in the profile
    "--window-size=1280,1700",
)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PageError(AssertionError):
    """A script evaluated in the page threw."""


class HeadlessChromium:
    def __init__(self, binary: str, work_dir: Path, log_dir: Path) -> None:
        self.profile = work_dir / "profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"], name="chromium", log_dir=log_dir
        )
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def start(self, timeout_s: float = 30.0) -> HeadlessChromium:
        self.process.start()
        port_file = self.profile / "DevToolsActivePort"

        def written() -> bool:
            return port_file.exists() and port_file.read_text().strip() != ""

        await async_wait_until(written, timeout_s, what="chromium's DevToolsActivePort file")
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        session = self._session

        async def page_target() -> str | None:
            try:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json()
            except aiohttp.ClientError:
                return None
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)

        ws_url = await async_wait_until(page_target, timeout_s, what="chromium's page target")
        self._ws = await session.ws_connect(ws_url, max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._ws is not None, "start() first"
        message_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:  # events arrive in between; the answer carries our id
            msg = await self._ws.receive(timeout=30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"DevTools connection ended during {method}: {msg.type.name}")
            data = json.loads(msg.data)
            if data.get("id") == message_id:
                if "error" in data:
                    raise PageError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise PageError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return result.get("result", {}).get("value")

    async def navigate(self, url: str, timeout_s: float = 15.0) -> None:
        await self.send("Page.navigate", {"url": url})

        async def loaded() -> bool:
            return bool(
                await self.evaluate(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
            )

        await async_wait_until(loaded, timeout_s, what=f"{url} loaded")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self.process.stop()
