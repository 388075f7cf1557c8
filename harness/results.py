"""The response log of the load generator and its analyses.

`ResponseLog` is append-only and columnar (array.array columns, ~28 bytes per response: 100k responses cost
~3 MB and create no per-response objects). `Results` is an immutable snapshot with the analyses used by tests
and benchmarks: counts by version / status, failures, latency quantiles, the split check, and
`first_time_all_from` ("decision -> all traffic").

All times are `time.monotonic()` seconds (stored as `time.monotonic_ns()`): CLOCK_MONOTONIC on Linux, shared by
every process on the machine.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from harness.split import SplitCheck, split_within_tolerance

__all__ = ["CANCELLED_AT_STOP", "Response", "ResponseLog", "Results"]

_NS = 1_000_000_000
CANCELLED_AT_STOP = "cancelled at stop (still in flight after the drain timeout)"


def _to_ns(t: float | None) -> int | None:
    return None if t is None else round(t * _NS)


class Response(NamedTuple):
    """One request's outcome. Times are time.monotonic() seconds; status 0 means no HTTP response."""

    t_sent: float
    t_done: float
    status: int
    version: str | None
    error: str | None

    @property
    def latency_s(self) -> float:
        return self.t_done - self.t_sent

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class _Interner:
    """str <-> small int, so columns stay numeric. Index -1 is None."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, value: str | None) -> int:
        if value is None:
            return -1
        idx = self._index.get(value)
        if idx is None:
            idx = self._index[value] = len(self.values)
            self.values.append(value)
        return idx


class ResponseLog:
    """Append-only columnar log of responses (in completion order)."""

    def __init__(self) -> None:
        self.sent_ns = array("q")
        self.done_ns = array("q")
        self.status = array("i")
        self.version_idx = array("i")
        self.error_idx = array("i")
        self.versions = _Interner()
        self.errors = _Interner()

    def append(self, t_sent_ns: int, t_done_ns: int, status: int, version: str | None, error: str | None) -> None:
        self.sent_ns.append(t_sent_ns)
        self.done_ns.append(t_done_ns)
        self.status.append(status)
        self.version_idx.append(self.versions.index(version))
        self.error_idx.append(self.errors.index(error))

    def __len__(self) -> int:
        return len(self.sent_ns)

    def snapshot(self, horizon_ns: int | None = None) -> Results:
        """An immutable copy (array copies are memcpy-cheap)."""
        return Results(
            array("q", self.sent_ns),
            array("q", self.done_ns),
            array("i", self.status),
            array("i", self.version_idx),
            array("i", self.error_idx),
            tuple(self.versions.values),
            tuple(self.errors.values),
            horizon_ns,
        )


class Results:
    """An immutable snapshot of a ResponseLog with the analyses. Time filters (`since`, `until`, seconds on
    the time.monotonic() clock) select requests by SEND time: since <= t_sent < until.

    `horizon` is the send time of the oldest request still in flight when the snapshot was taken (None if none
    was): nothing is known yet about requests sent at or after it, which `first_time_all_from` respects.
    """

    def __init__(
        self,
        sent_ns: array[int],
        done_ns: array[int],
        status: array[int],
        version_idx: array[int],
        error_idx: array[int],
        versions: tuple[str, ...],
        errors: tuple[str, ...],
        horizon_ns: int | None = None,
    ) -> None:
        self._sent = sent_ns
        self._done = done_ns
        self._status = status
        self._ver = version_idx
        self._err = error_idx
        self._versions = versions
        self._errors = errors
        self.horizon_ns = horizon_ns

    @property
    def horizon(self) -> float | None:
        return None if self.horizon_ns is None else self.horizon_ns / _NS

    def __len__(self) -> int:
        return len(self._sent)

    def __iter__(self) -> Iterator[Response]:
        return (self._record(i) for i in range(len(self._sent)))

    def _record(self, i: int) -> Response:
        v, e = self._ver[i], self._err[i]
        return Response(
            self._sent[i] / _NS,
            self._done[i] / _NS,
            self._status[i],
            self._versions[v] if v >= 0 else None,
            self._errors[e] if e >= 0 else None,
        )

    def _indices(self, since: float | None, until: float | None) -> Iterator[int]:
        lo, hi = _to_ns(since), _to_ns(until)
        sent = self._sent
        if lo is None and hi is None:
            return iter(range(len(sent)))
        return (i for i in range(len(sent)) if (lo is None or sent[i] >= lo) and (hi is None or sent[i] < hi))

    def records(self, since: float | None = None, until: float | None = None) -> list[Response]:
        """The responses sent in [since, until), in completion order."""
        return [self._record(i) for i in self._indices(since, until)]

    def counts_by_version(
        self, since: float | None = None, until: float | None = None, *, ok_only: bool = False
    ) -> dict[str | None, int]:
        """{x-model-version value (None if absent): responses}. Every request that got an HTTP response
        counts (whatever its status, unless `ok_only`: status 200 only); requests that got no response (status
        0) are left out - see `failed`."""
        counts: dict[int, int] = {}
        st, ver = self._status, self._ver
        for i in self._indices(since, until):
            s = st[i]
            if s == 0 or (ok_only and s != 200):
                continue
            counts[ver[i]] = counts.get(ver[i], 0) + 1
        return {(self._versions[k] if k >= 0 else None): c for k, c in counts.items()}

    def counts_by_status(self, since: float | None = None, until: float | None = None) -> dict[int, int]:
        """{status: requests}; 0 = no HTTP response (an exception, see `failed`)."""
        counts: dict[int, int] = {}
        for i in self._indices(since, until):
            counts[self._status[i]] = counts.get(self._status[i], 0) + 1
        return counts

    def failed(self, since: float | None = None, until: float | None = None) -> list[Response]:
        """Requests answered with a status other than 200, or not answered at all (exception, timeout,
        cancelled at stop)."""
        st, err = self._status, self._err
        return [self._record(i) for i in self._indices(since, until) if st[i] != 200 or err[i] >= 0]

    def latencies_s(self, since: float | None = None, until: float | None = None) -> list[float]:
        return [(self._done[i] - self._sent[i]) / _NS for i in self._indices(since, until)]

    def latency_quantiles(
        self, qs: Sequence[float] = (0.5, 0.9, 0.99), since: float | None = None, until: float | None = None
    ) -> dict[float, float]:
        """Nearest-rank latency quantiles in seconds ({} if no responses)."""
        lat = sorted(self.latencies_s(since, until))
        if not lat:
            return {}
        return {q: lat[min(len(lat) - 1, max(0, int(q * len(lat) + 0.5) - 1))] for q in qs}

    def first_time_all_from(
        self, version: str, after_t: float, *, until: float | None = None, ok_only: bool = False
    ) -> float | None:
        """The first moment after `after_t` from which EVERY request was answered by `version`.

        Precisely: order the requests sent at or after `after_t` by send time. The answer is the send time of
        the earliest request R such that R and every request sent after R were answered with
        `x-model-version: version` (and status 200 if `ok_only`); None if the last request sent was not (the
        switch has not happened, or did not hold), or no request was sent after `after_t`.

        Why send time: with concurrent requests, completion order says nothing about routing. A request sent
        before a route change may be answered by the old version after a newer request was already answered by
        the new one; what the traffic switch controls is which version a request sent at time t reaches.
        "Decision -> all traffic" latency is then `first_time_all_from(new, t_decision) - t_decision`; its
        resolution is the gap between consecutive sends, so keep the generator busy (closed loop) when
        measuring.

        Details: a failed request (no response, or no version header) breaks the run like a wrong version.
        Ties in send time count as "sent together": R must not share its send time with a non-matching
        request. `until` bounds the window (e.g. the next switch's decision).
        Requests sent at or after `horizon` (the oldest request still in flight at snapshot time) are
        ignored, because an in-flight request could still come back from the old version; stop the generator
        (or let it drain) before asking for a final answer.
        """
        lo = _to_ns(after_t)
        assert lo is not None
        hi = self.horizon_ns
        bound = _to_ns(until)
        if bound is not None:
            hi = bound if hi is None else min(hi, bound)
        target = self._versions.index(version) if version in self._versions else -2
        sent, ver, st = self._sent, self._ver, self._status
        idx = [i for i in range(len(sent)) if sent[i] >= lo and (hi is None or sent[i] < hi)]
        if not idx:
            return None
        idx.sort(key=sent.__getitem__)

        def match(i: int) -> bool:
            return ver[i] == target and st[i] != 0 and (not ok_only or st[i] == 200)

        k = len(idx)
        while k > 0 and match(idx[k - 1]):
            k -= 1
        if k == len(idx):
            return None
        if k > 0:
            # Exclude requests sharing a send time with the last non-matching one.
            bad_t = sent[idx[k - 1]]
            while k < len(idx) and sent[idx[k]] == bad_t:
                k += 1
            if k == len(idx):
                return None
        return sent[idx[k]] / _NS

    def split(
        self,
        expected_weights: Mapping[str, float],
        since: float | None = None,
        until: float | None = None,
        *,
        alpha: float = 1e-5,
    ) -> SplitCheck:
        """`split_within_tolerance` over every request sent in [since, until); failed requests count against
        the split (n includes them)."""
        counts = self.counts_by_version(since, until, ok_only=True)
        n = sum(1 for _ in self._indices(since, until))
        return split_within_tolerance(counts, expected_weights, n, alpha=alpha)
