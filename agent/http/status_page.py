"""The live status page and the read views behind it, on the control listener (docs/status-page.md).

`GET /status` serves a static page (HTML, JS and CSS shipped in the package: no build step, no CDN) holding no
data. It asks for a control API token, keeps it in the tab's sessionStorage and polls `GET /v1/overview` with it
as a bearer token, so the page shows what the token's identity may read (role read-only suffices) and nothing
without one. `GET /v1/rollbacks/{id}` is one rollback's progress (`rollback --wait`). Both views are read-only
and are served even with `status_page: off`, which only removes the page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from agent.config import StatusPageSection
from agent.http.control_app import PUBLIC_PATHS, error_response, proto_response
from agent.http.decision_feed import DecisionFeed
from agent.http.rollback_progress import StepWatch, rfc3339, rollback_progress
from agent.http.status_view import StatusView
from agent.pb.rollback_agent.v1 import control_pb2

ASSETS_DIR = Path(__file__).with_name("status_page_assets")
PAGE_PATHS = {
    "/status": ("index.html", "text/html"),
    "/status/status.js": ("status.js", "text/javascript"),
    "/status/status.css": ("status.css", "text/css"),
}
# The page runs only its own script and talks only to this listener; nothing it shows is ever parsed as markup.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
log = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass
class WatchViews:
    status_view: StatusView
    feed: DecisionFeed
    steps: StepWatch
    settings: StatusPageSection
    clock: Callable[[], float] = time.time

    async def _refresh(self) -> str:
        """Read what is new in the audit trail; on a storage fault, say so and show what was read before."""
        try:
            await self.feed.refresh()
        except Exception as exc:
            log.warning("status views: the audit trail is unreadable: %s", exc)
            return f"the audit trail is unreadable right now ({exc}); decisions as last read"
        return ""

    async def overview(self) -> dict[str, Any]:
        trail_error = await self._refresh()
        status = json_format.MessageToDict(
            self.status_view.status(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        latest = self.feed.latest_rollback_id()
        rollout = self.status_view.rollout()
        return {
            "now": rfc3339(self.clock()),
            "refresh_s": self.settings.refresh_s,
            "status": status,
            "rollout": _as_dict(rollout) if rollout is not None else None,
            "decisions": self.feed.decisions(self.settings.decisions),
            "rollback": self._progress(latest) if latest else None,
            "trail_error": trail_error,
        }

    async def rollback(self, rollback_id: str) -> dict[str, Any] | None:
        await self._refresh()
        return self._progress(rollback_id)

    def _progress(self, rollback_id: str) -> dict[str, Any] | None:
        return rollback_progress(self.feed.rollback_records(rollback_id), self.steps, self.clock())


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


M = TypeVar("M", bound=Message)

WATCH_VIEWS = web.AppKey("watch_views", WatchViews)


def _message(data: dict[str, Any], message: M) -> M:
    """The answer as its proto message (control.proto): the API is defined there, whatever built the dict."""
    return json_format.ParseDict(data, message)


def _no_store(response: web.Response) -> web.Response:
    response.headers.update(NO_STORE)
    return response


async def get_overview(request: web.Request) -> web.Response:
    overview = _message(await request.app[WATCH_VIEWS].overview(), control_pb2.Overview())
    return _no_store(proto_response(overview))


async def get_rollback(request: web.Request) -> web.Response:
    rollback_id = request.match_info["rollback_id"]
    progress = await request.app[WATCH_VIEWS].rollback(rollback_id)
    if progress is None:
        return error_response(404, "not_found", f"no recent rollback {rollback_id!r}")
    return _no_store(proto_response(_message(progress, control_pb2.RollbackProgress())))


def add_watch_views(app: web.Application, views: WatchViews) -> None:
    app[WATCH_VIEWS] = views
    app.router.add_get("/v1/overview", get_overview)
    app.router.add_get("/v1/rollbacks/{rollback_id}", get_rollback)


def _asset_handler(body: bytes, content_type: str) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)

    return handle


def add_status_page(app: web.Application) -> None:
    """Serve the page's files without a token (they hold no data); everything they fetch needs one."""
    for path, (name, content_type) in PAGE_PATHS.items():
        app.router.add_get(path, _asset_handler((ASSETS_DIR / name).read_bytes(), content_type))
    app[PUBLIC_PATHS] = frozenset(PAGE_PATHS)
