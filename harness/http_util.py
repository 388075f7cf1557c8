"""Synchronous stdlib HTTP helpers for the process handles (admin APIs, readiness probes).

Proxies from the environment are ignored on purpose: everything the harness talks to is on 127.0.0.1.
Non-2xx answers are returned, not raised, by `request`; connection failures raise `OSError` (URLError is one).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpResponse", "HttpStatusError", "get_json", "post_json", "request"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpStatusError(RuntimeError):
    """A request answered with a non-2xx status where a 2xx was required."""

    def __init__(self, method: str, url: str, response: HttpResponse) -> None:
        super().__init__(f"{method} {url} -> HTTP {response.status}: {response.text[:500]}")
        self.response = response


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 2.0,
) -> HttpResponse:
    """Send one request and return the answer whatever its status. Raises OSError if nothing answered."""
    hdrs = dict(headers or {})
    if json_body is not None:
        if body is not None:
            raise ValueError("pass body or json_body, not both")
        body = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, headers=hdrs, method=method)
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return HttpResponse(int(resp.status), resp.read(), dict(resp.headers.items()))
    except urllib.error.HTTPError as err:
        try:
            payload = err.read()
        finally:
            err.close()
        return HttpResponse(int(err.code), payload, dict(err.headers.items()) if err.headers else {})


def get_json(url: str, *, timeout_s: float = 2.0) -> Any:
    """GET `url` and decode its JSON body; raises HttpStatusError on a non-2xx answer."""
    resp = request("GET", url, timeout_s=timeout_s)
    if not resp.ok:
        raise HttpStatusError("GET", url, resp)
    return resp.json()


def post_json(url: str, payload: Any, *, timeout_s: float = 2.0) -> HttpResponse:
    """POST `payload` as JSON; raises HttpStatusError on a non-2xx answer."""
    resp = request("POST", url, json_body=payload, timeout_s=timeout_s)
    if not resp.ok:
        raise HttpStatusError("POST", url, resp)
    return resp
