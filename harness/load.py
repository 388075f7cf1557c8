"""`TrafficGenerator`: the load generator used by tests, `make demo` and the benchmarks.

One aiohttp ClientSession with keep-alive connections (at most `concurrency` of them) and `concurrency`
worker tasks. Closed loop (`rate_per_s=None`): each worker sends its next request as soon as the previous one
is answered. Open loop (`rate_per_s=R`): request i is due at start + i / R and the next free worker sends it
then; if all workers are busy it goes out late (the actual send time is what is recorded), so the achieved
rate can fall below R when the server is slower than concurrency / R.

Every response goes into a compact columnar `ResponseLog` (array.array columns, ~28 bytes per response, so
100k responses cost ~3 MB and no per-response objects): send time, completion time (after the body has been
read), status (0 = no HTTP response), the `x-model-version` header and an error string for exceptions.

Clock: all times are `time.monotonic()` seconds (stored as `time.monotonic_ns()`). On Linux that is
CLOCK_MONOTONIC, shared by every process on the machine, so timestamps taken by the agent with
`time.monotonic()` (e.g. the moment it decided to roll back) can be compared with these directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from harness.results import CANCELLED_AT_STOP, Response, ResponseLog, Results
from harness.split import SplitCheck, split_within_tolerance

__all__ = [
    "Response",
    "ResponseLog",
    "Results",
    "SideBySide",
    "SplitCheck",
    "TrafficGenerator",
    "side_by_side",
    "split_within_tolerance",
]

BodyFactory = Callable[[int], "bytes | str | Mapping[str, Any] | Sequence[Any] | None"]

_NS = 1_000_000_000


class TrafficGenerator:
    """Sends requests to `url` and records every response; see the module docstring.

        async with TrafficGenerator(url, concurrency=16) as gen:   # started
            ...
        gen.counts_by_version()                                    # stopped and drained

    or `results = await TrafficGenerator(url).run(n=2000)`.

    `body_factory(i)` gives the body of request i: bytes / str are sent as is, a mapping or list as JSON, None
    means no body. The method defaults to POST with a body factory, else GET.
    """

    def __init__(
        self,
        url: str,
        body_factory: BodyFactory | None = None,
        *,
        rate_per_s: float | None = None,
        concurrency: int = 8,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout_s: float = 5.0,
        max_requests: int | None = None,
        version_header: str = "x-model-version",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0 (or None for closed loop)")
        self.url = url
        self.body_factory = body_factory
        self.rate_per_s = rate_per_s
        self.concurrency = concurrency
        self.method = method or ("POST" if body_factory is not None else "GET")
        self.headers = dict(headers or {})
        self.request_timeout_s = request_timeout_s
        self.max_requests = max_requests
        self.version_header = version_header
        self.log = ResponseLog()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._next = 0
        self._start_ns = 0
        self._rate_base = 0  # ticket number at start(): open-loop schedule is relative to it
        self._inflight = [0] * concurrency  # send time (ns) per worker slot, 0 = idle
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is not None:
            raise RuntimeError("already started")
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.request_timeout_s)
        )
        self._stopping = False
        self._start_ns = time.monotonic_ns()
        self._rate_base = self._next
        self.started_at = self._start_ns / _NS
        self._workers = [asyncio.create_task(self._worker(k), name=f"traffic-{k}") for k in range(self.concurrency)]

    async def stop(self, drain_timeout_s: float = 5.0) -> Results:
        """Stop sending, let in-flight requests finish (up to `drain_timeout_s`, then they are cancelled and
        recorded as failures), close the session. Returns the final results. Idempotent."""
        self._stopping = True
        if self._workers:
            # Workers with nothing in flight are waiting for their open-loop send slot: end them now.
            for slot, task in enumerate(self._workers):
                if not self._inflight[slot]:
                    task.cancel()
            _done, pending = await asyncio.wait(self._workers, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
            self.stopped_at = time.monotonic()
        self._wake_waiters(force=True)
        return self.snapshot()

    async def run(self, n: int | None = None, duration_s: float | None = None) -> Results:
        """Start, send `n` requests (or for `duration_s`, or both: whichever ends first), stop; returns
        results."""
        if n is None and duration_s is None:
            raise ValueError("give n and/or duration_s")
        if n is not None:
            self.max_requests = self._next + n
        if self._session is None:
            await self.start()
        workers = list(self._workers)
        if duration_s is not None:
            await asyncio.wait(workers, timeout=duration_s)
        else:
            await asyncio.wait(workers)
        return await self.stop()

    async def wait_for_responses(self, n: int, timeout_s: float = 30.0) -> None:
        """Wait until at least `n` responses are recorded in total (raises TimeoutError)."""
        if len(self.log) >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"only {len(self.log)} of {n} responses after {timeout_s}s ({self.url})") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((n, fut))
        if len(self.log) < n:
            raise RuntimeError(f"generator stopped after {len(self.log)} of {n} responses")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._workers)

    @property
    def sent(self) -> int:
        """Requests sent (or being sent) so far."""
        return len(self.log) + self.in_flight

    @property
    def in_flight(self) -> int:
        return sum(1 for t in self._inflight if t)

    def snapshot(self) -> Results:
        """Immutable results so far; requests still in flight are not in it (see `Results.horizon`)."""
        busy = [t for t in self._inflight if t]
        return self.log.snapshot(min(busy) if busy else None)

    @property
    def results(self) -> Results:
        return self.snapshot()

    def counts_by_version(
        self, since: float | None = None, until: float | None = None, *, ok_only: bool = False
    ) -> dict[str | None, int]:
        return self.snapshot().counts_by_version(since, until, ok_only=ok_only)

    def failed(self, since: float | None = None, until: float | None = None) -> list[Response]:
        return self.snapshot().failed(since, until)

    def first_time_all_from(self, version: str, after_t: float, *, ok_only: bool = False) -> float | None:
        """See `Results.first_time_all_from`."""
        return self.snapshot().first_time_all_from(version, after_t, ok_only=ok_only)

    # -- internals -------------------------------------------------------------------------------------------

    def _wake_waiters(self, force: bool = False) -> None:
        n = len(self.log)
        for target, fut in self._waiters:
            if (force or n >= target) and not fut.done():
                fut.set_result(None)

    def _request_kwargs(self, i: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.body_factory is None:
            return kwargs
        body = self.body_factory(i)
        if isinstance(body, bytes | str):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        return kwargs

    async def _worker(self, slot: int) -> None:
        session = self._session
        assert session is not None
        rate = self.rate_per_s
        log = self.log
        header = self.version_header
        while not self._stopping:
            i = self._next
            if self.max_requests is not None and i >= self.max_requests:
                return
            self._next = i + 1
            if rate is not None:
                due = self._start_ns + int((i - self._rate_base) * _NS / rate)
                delay = (due - time.monotonic_ns()) / _NS
                if delay > 0:
                    await asyncio.sleep(delay)
                    if self._stopping:
                        return
            kwargs = self._request_kwargs(i)
            t_sent = time.monotonic_ns()
            self._inflight[slot] = t_sent
            status, version, error = 0, None, None
            try:
                async with session.request(self.method, self.url, **kwargs) as resp:
                    await resp.read()
                    status = resp.status
                    version = resp.headers.get(header)
            except asyncio.CancelledError:
                log.append(t_sent, time.monotonic_ns(), 0, None, CANCELLED_AT_STOP)
                self._inflight[slot] = 0
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            log.append(t_sent, time.monotonic_ns(), status, version, error)
            self._inflight[slot] = 0
            if self._waiters:
                self._wake_waiters()


@dataclass(frozen=True)
class SideBySide:
    """Latencies (s) and failed requests per side of a side-by-side measurement, and the seconds measured."""

    latencies_s: dict[str, list[float]]
    failed: dict[str, int]
    seconds: float


async def side_by_side(
    urls: Mapping[str, str],
    body: Callable[[int], bytes],
    *,
    rate_per_s: float,
    seconds: float,
    concurrency: int = 16,
) -> SideBySide:
    """Two targets under the same open-loop load in the same seconds, so they share the machine's noise.

    Two generators at one rate fire in the same instants, and where their requests meet (one model server behind
    both, one core) the generator started first is served first. The measurement is therefore two halves that start
    the generators in opposite orders; each half warms its connections before it counts."""
    sides = list(urls)
    if len(sides) != 2:
        raise ValueError(f"side_by_side compares two targets, got {sides}")
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    failed = dict.fromkeys(sides, 0)
    measured = 0.0
    for order in (sides, sides[::-1]):
        generators = {
            side: TrafficGenerator(urls[side], body, rate_per_s=rate_per_s, concurrency=concurrency) for side in order
        }
        async with generators[order[0]], generators[order[1]]:
            for generator in generators.values():
                await generator.wait_for_responses(max(1, int(rate_per_s)), timeout_s=20)
            t0 = time.monotonic()
            await asyncio.sleep(seconds / 2)
            t1 = time.monotonic()
        for side, generator in generators.items():
            latencies[side].extend(generator.results.latencies_s(since=t0, until=t1))
            failed[side] += len(generator.results.failed(since=t0, until=t1))
        measured += t1 - t0
    return SideBySide(latencies, failed, measured)
