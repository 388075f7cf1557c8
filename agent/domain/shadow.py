"""Shadow comparison: the candidate's and the stable version's answers to the same request, joined by x-request-id.

Envoy mirrors a share of live requests to the candidate (agent/adapters/xds/mirror.py); the answer the user got and
the candidate's answer arrive separately and in any order (agent/adapters/signals/shadow_tap.py). A request whose
other half does not arrive within `pending_ttl_s` is dropped and counted. Memory is bounded: at most `max_pending`
half-joined requests and the last `max_pairs` joined ones.

From the joined pairs: the agreement rate (classification: the share of rows where both predicted the same class),
the error distribution (regression: |candidate - stable| per row) and both versions' confidence distributions. A
candidate that failed (5xx, or an answer without predictions) disagrees on every row the user was answered on.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

REDACTED: Final = "[redacted]"
# Envoy stamps every answer with the version that served it; the shadow route adds SHADOW_HEADER to the candidate's
# answers to mirrored copies (the only way the tap tells them from the answers users got).
VERSION_HEADER: Final = "x-served-by-version"
SHADOW_HEADER: Final = "x-rollback-shadow"

Task = Literal["classification", "regression"]

REQUEST_ID_HEADER: Final = "x-request-id"
# Which requests are mirrored is decided by the first SELECTION_DIGITS hex digits of x-request-id (a random UUID that
# Envoy generates), so the route that mirrors and the tap that captures select the very same requests: shares come
# in steps of 1 / 16**SELECTION_DIGITS (1/4096).
SELECTION_DIGITS: Final = 3
_HEX: Final = "0123456789abcdef"


def _hex_class(digits: str) -> str:
    chars = "".join(sorted(set(digits + digits.upper())))
    return chars if len(chars) == 1 else f"[{chars}]"


def selection_steps(fraction: float) -> int:
    """How many of the 16**SELECTION_DIGITS request-id prefixes a mirrored `fraction` selects (at least one)."""
    total = 16**SELECTION_DIGITS
    return max(1, min(total, round(fraction * total)))


def mirror_selection(fraction: float) -> str | None:
    """The RE2 pattern, matched against the whole x-request-id, that selects `fraction` of requests (those whose
    leading hex digits read below fraction x 4096), or None for every request (fraction 1). A request id that does
    not start with hex digits (one a client sent) is never selected."""
    if fraction <= 0:
        raise ValueError(f"a mirrored fraction is above 0, got {fraction}")
    limit = selection_steps(fraction)
    if limit >= 16**SELECTION_DIGITS:
        return None
    digits = [(limit // 16 ** (SELECTION_DIGITS - 1 - i)) % 16 for i in range(SELECTION_DIGITS)]
    alternatives = []
    for position, digit in enumerate(digits):
        if digit == 0:
            continue
        prefix = "".join(_hex_class(_HEX[d]) for d in digits[:position])
        rest = SELECTION_DIGITS - 1 - position
        tail = f"[0-9a-fA-F]{{{rest}}}" if rest else ""
        alternatives.append(prefix + _hex_class(_HEX[:digit]) + tail)
    # Envoy's regex matchers match the whole value (RE2 FullMatch), so the rest of the id is matched too.
    return "(?:" + "|".join(alternatives) + ").*"


class Side(StrEnum):
    LIVE = "live"  # the answer the user got
    SHADOW = "shadow"  # the candidate's answer to the mirrored copy


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    predictions: tuple[float, ...] = ()  # one per row
    confidences: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status < 500 and bool(self.predictions)


def _floats(data: object) -> tuple[float, ...]:
    """A tensor's `data`, flattened (nested rows accepted); non-numbers make the whole tensor unusable."""
    out: list[float] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return ()
        else:
            out.append(float(item))
    return tuple(out) if all(math.isfinite(v) for v in out) else ()


def parse_oip_answer(
    status: int, body: str | bytes, *, prediction_output: str = "predict", confidence_output: str = "confidence"
) -> Answer:
    """An Open Inference Protocol v2 answer's predictions and confidences; none when the body is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        return Answer(status)
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        return Answer(status)
    by_name = {o.get("name"): o.get("data") for o in outputs if isinstance(o, dict)}
    return Answer(
        status,
        predictions=_floats(by_name.get(prediction_output)),
        confidences=_floats(by_name.get(confidence_output)),
    )


@dataclass(frozen=True, slots=True)
class Pair:
    at: float
    request_id: str
    live: Answer
    shadow: Answer


@dataclass(frozen=True, slots=True)
class ShadowStats:
    task: Task
    pairs: int  # requests both answered (the user successfully)
    rows: int  # rows compared
    agreeing_rows: int
    abs_errors: tuple[float, ...]  # |candidate - stable| per row both predicted
    live_confidences: tuple[float, ...]
    shadow_confidences: tuple[float, ...]
    shadow_failures: int  # mirrored requests the candidate failed

    @property
    def agreement_rate(self) -> float | None:
        """Classification only: the share of compared rows where both versions predicted the same class."""
        return self.agreeing_rows / self.rows if self.rows and self.task == "classification" else None

    @property
    def abs_error_mean(self) -> float | None:
        return sum(self.abs_errors) / len(self.abs_errors) if self.abs_errors else None

    def abs_error_quantile(self, q: float) -> float | None:
        if not self.abs_errors:
            return None
        ordered = sorted(self.abs_errors)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def compare(pairs: list[Pair], task: Task = "classification") -> ShadowStats:
    rows = agreeing = failures = 0
    errors: list[float] = []
    live_conf: list[float] = []
    shadow_conf: list[float] = []
    for pair in pairs:
        live, shadow = pair.live, pair.shadow
        if not live.ok:
            continue  # the user got no answer: nothing to compare against
        live_conf.extend(live.confidences)
        if not shadow.ok or len(shadow.predictions) != len(live.predictions):
            failures += 1
            rows += len(live.predictions)
            continue
        shadow_conf.extend(shadow.confidences)
        for a, b in zip(live.predictions, shadow.predictions, strict=True):
            rows += 1
            error = abs(a - b)
            errors.append(error)
            agreeing += error == 0.0
    return ShadowStats(
        task=task,
        pairs=sum(1 for p in pairs if p.live.ok),
        rows=rows,
        agreeing_rows=agreeing,
        abs_errors=tuple(errors),
        live_confidences=tuple(live_conf),
        shadow_confidences=tuple(shadow_conf),
        shadow_failures=failures,
    )


class ShadowJoin:
    """Joins the two answers to one request by its id, in bounded memory."""

    def __init__(self, *, max_pending: int = 10_000, pending_ttl_s: float = 30.0, max_pairs: int = 10_000) -> None:
        if max_pending < 1 or max_pairs < 1 or pending_ttl_s <= 0:
            raise ValueError("max_pending and max_pairs must be >= 1 and pending_ttl_s > 0")
        self._max_pending = max_pending
        self._ttl = pending_ttl_s
        self._pending: OrderedDict[str, tuple[Side, Answer, float]] = OrderedDict()
        self._pairs: deque[Pair] = deque(maxlen=max_pairs)
        self.unmatched = {Side.LIVE: 0, Side.SHADOW: 0}  # halves dropped without their other half
        self.duplicates = 0

    def add(self, side: Side, request_id: str, answer: Answer, at: float) -> Pair | None:
        self._expire(at)
        waiting = self._pending.get(request_id)
        if waiting is None:
            self._pending[request_id] = (side, answer, at)
            if len(self._pending) > self._max_pending:
                dropped_side, _, _ = self._pending.popitem(last=False)[1]
                self.unmatched[dropped_side] += 1
            return None
        other_side, other, _ = waiting
        if other_side == side:
            self.duplicates += 1  # a client reusing a request id: keep the first, count the second
            return None
        del self._pending[request_id]
        live, shadow = (answer, other) if side == Side.LIVE else (other, answer)
        pair = Pair(at, request_id, live, shadow)
        self._pairs.append(pair)
        return pair

    def _expire(self, now: float) -> None:
        while self._pending:
            request_id, (side, _, at) = next(iter(self._pending.items()))
            if now - at <= self._ttl:
                return
            del self._pending[request_id]
            self.unmatched[side] += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pairs(self, since: float = -math.inf) -> list[Pair]:
        return [p for p in self._pairs if p.at >= since]

    def stats(self, since: float = -math.inf, task: Task = "classification") -> ShadowStats:
        return compare(self.pairs(since), task)


def redact(document: Any, fields: frozenset[str]) -> Any:
    """A copy of a JSON document with the values of the named fields replaced by "[redacted]": any object key of
    that name, and the `data` of any Open Inference Protocol tensor of that name (`{"name": ..., "data": ...}`)."""
    if not fields:
        return document
    if isinstance(document, list):
        return [redact(item, fields) for item in document]
    if not isinstance(document, dict):
        return document
    out = {k: (REDACTED if k in fields else redact(v, fields)) for k, v in document.items()}
    if isinstance(document.get("name"), str) and document["name"] in fields and "data" in out:
        out["data"] = REDACTED
    return out


def redact_body(body: str, fields: frozenset[str]) -> str:
    """`redact` on a JSON body; a body that is not JSON is withheld whole when any field is to be redacted."""
    if not fields:
        return body
    try:
        return json.dumps(redact(json.loads(body), fields), separators=(",", ":"))
    except (ValueError, RecursionError):
        return REDACTED
