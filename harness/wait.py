"""Polling with a deadline instead of fixed sleeps.

`wait_until(predicate, timeout_s)` calls `predicate()` every `interval_s` until it returns a truthy value,
which is returned. Exceptions raised by the predicate count as "not yet" (a server that is still starting
refuses connections). On timeout a `WaitTimeout` (a `TimeoutError`) names what was awaited, the last value
observed and the last exception, so a failing test says why.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from harness.http_util import request

__all__ = [
    "NotYet",
    "WaitAborted",
    "WaitTimeout",
    "async_http_ok",
    "async_wait_until",
    "http_ok",
    "http_status",
    "wait_until",
]

T = TypeVar("T")

_NOTHING = object()


class NotYet:
    """A falsy predicate result that carries what was observed, for the timeout message: `return
    NotYet(state)`."""

    __slots__ = ("observed",)

    def __init__(self, observed: object) -> None:
        self.observed = observed

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.observed)


class WaitAborted(Exception):
    """Raise this (or a subclass) from a predicate to stop waiting at once, e.g. the awaited process has
    died."""


class WaitTimeout(TimeoutError):
    """Raised by `wait_until` / `async_wait_until` when the deadline passes."""

    def __init__(
        self, what: str, timeout_s: float, attempts: int, last_value: object, last_error: BaseException | None
    ) -> None:
        parts = [f"timed out after {timeout_s:.3g}s ({attempts} attempts) waiting for {what}"]
        if last_value is not _NOTHING:
            parts.append(f"last value: {_short(last_value)}")
        if last_error is not None:
            parts.append(f"last exception: {type(last_error).__name__}: {_short(last_error)}")
        super().__init__("; ".join(parts))
        self.what = what
        self.last_value = None if last_value is _NOTHING else last_value
        self.last_error = last_error


def _short(value: object, limit: int = 300) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def wait_until(
    predicate: Callable[[], T | NotYet],
    timeout_s: float,
    interval_s: float = 0.01,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy (returned) or `timeout_s` passes (WaitTimeout).

    The predicate is always tried at least once, and once more at the deadline. Exceptions from the predicate
    are remembered and retried, except `WaitAborted`, which propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    last_value: object = _NOTHING
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            value = predicate()
        except WaitAborted:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if value and not isinstance(value, NotYet):
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(what, timeout_s, attempts, last_value, last_error)
        time.sleep(min(interval_s, remaining))


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T | NotYet]],
    timeout_s: float,
    interval_s: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T | NotYet],
    timeout_s: float,
    interval_s: float = ...,
    what: str = ...,
) -> T: ...


async def async_wait_until(
    predicate: Callable[[], Any],
    timeout_s: float,
    interval_s: float = 0.01,
    what: str = "condition",
) -> Any:
    """Async `wait_until`: the predicate may be a plain function or return an awaitable (a coroutine
    function).

    A predicate call that is still running at the deadline is cancelled and counts as a timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_value: object = _NOTHING
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            result = predicate()
            if inspect.isawaitable(result):
                remaining = max(deadline - loop.time(), 0.001)
                value = await asyncio.wait_for(result, remaining)
            else:
                value = result
        except asyncio.CancelledError:
            raise
        except WaitAborted:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if value and not isinstance(value, NotYet):
                return value
            last_value = value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise WaitTimeout(what, timeout_s, attempts, last_value, last_error)
        await asyncio.sleep(min(interval_s, remaining))


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The HTTP status `url` answers with, or None if nothing answered (refused, reset, timed out)."""
    try:
        return request("GET", url, timeout_s=timeout_s).status
    except (OSError, ValueError, http.client.HTTPException):
        return None


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True if GET `url` answers 2xx."""
    status = http_status(url, timeout_s)
    return status is not None and 200 <= status < 300


async def async_http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """`http_ok` in a worker thread, so the event loop keeps running (e.g. an in-process server under
    test)."""
    return await asyncio.to_thread(http_ok, url, timeout_s)
