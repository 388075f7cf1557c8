"""Which responses the error-rate kinds count as failed: the rule's `count` and `exclude`.

`count` lists response classes (`5xx`, `4xx`), single codes (400..599) and `model_failures`, the model server's own
failure counter (`model.errors`, where its server profile names one). The default, `[5xx, model_failures]`, is what
a user means by "failed": every 5xx at Envoy, and every request the model server itself says failed, whatever HTTP
code it chose (MLServer answers a model's InferenceError with 400). A 4xx the client caused (bad input) is left out
unless listed; list the codes the server uses for its own failures (`count: [5xx, 400, 404]`), or count the whole
class and `exclude` the client's codes (`count: [5xx, 4xx]`, `exclude: [422, 429]`).

HTTP classes and codes come from Envoy's per-version stats or the access-log stream (`envoy.rq_5xx`, `envoy.rq_4xx`,
`envoy.rq_code.<code>`); a code never seen counts zero. The model failure counter is counted apart, and the larger of
the two counts is the number of failed requests: the same failure can show in both (a model error answered 500 is
a 5xx at Envoy too), so adding them would count it twice. With `source: model` the failure counter is all there is.

The model server is scraped about once a second, Envoy's figures come per access-log batch: a short window holds a
whole scrape's worth of model failures against a fraction of a second of requests. So the model's share is its own
failure rate over the window (`model.errors / model.requests`, both from the same scrapes) applied to the requests
Envoy counted; a window in which the server's counters did not move gives no model share. Without a request counter
the raw failure count is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field

from agent.domain.signals import Signal, Window

MODEL_FAILURES: Final = "model_failures"
CLASSES: Final[dict[str, tuple[str, int]]] = {"5xx": (Signal.ENVOY_RQ_5XX, 5), "4xx": (Signal.ENVOY_RQ_4XX, 4)}
DEFAULT_COUNT: Final = ("5xx", MODEL_FAILURES)
_SHAPE = "4xx, 5xx, a code 400..599 or model_failures"


def _code(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a response code")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError(f"{value!r} is not {_SHAPE}")
    if not 400 <= value <= 599:
        raise ValueError(f"{value} is not an error code: {_SHAPE}")
    return value


def _token(value: Any) -> str | int:
    if isinstance(value, str) and value.strip().lower() in (*CLASSES, MODEL_FAILURES):
        return value.strip().lower()
    return _code(value)


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"listed twice: {', '.join(str(v) for v in seen)}")
    return values


CountedErrors = Annotated[
    tuple[Annotated[str | int, BeforeValidator(_token)], ...],
    BeforeValidator(_listed),
    Field(min_length=1),
    AfterValidator(_distinct),
]
ExcludedCodes = Annotated[
    tuple[Annotated[int, BeforeValidator(_code)], ...], BeforeValidator(_listed), AfterValidator(_distinct)
]


def counting_problems(source: str, count: Sequence[str | int], exclude: Sequence[int]) -> list[tuple[str, str]]:
    """(field, message) for a `count` / `exclude` pair that cannot mean what it says."""
    found: list[tuple[str, str]] = []
    http = [t for t in count if t != MODEL_FAILURES]
    if source == "model" and (http or exclude) and tuple(count) != DEFAULT_COUNT:
        found.append(("count", "source model reads only the model server's failure counter; use source envoy"))
    classes = {CLASSES[t][1] for t in http if isinstance(t, str)}
    for code in http:
        if isinstance(code, int) and code // 100 in classes:
            found.append(("count", f"{code} is already counted by {code // 100}xx"))
    for code in exclude:
        if code // 100 not in classes:
            found.append(("exclude", f"{code}: {code // 100}xx is not counted, so there is nothing to exclude"))
    return found


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Failed requests in a window and what they were made of, for the verdict."""

    errors: float
    parts: tuple[tuple[str, float], ...]  # (what was counted, how many), in the order of `count`

    def describe(self) -> str:
        """ "5xx 3, 400 120, model failures 118" (model failures only where the server reports them)."""
        return ", ".join(f"{label} {n:,.0f}" for label, n in self.parts)


def _model_share(window: Window, requests: float | None) -> float | None:
    """Failed requests by the model server's own counters, scaled to `requests` (see the module docstring)."""
    failures = window.delta(Signal.MODEL_ERRORS)
    if failures is None:
        return None
    served = window.delta(Signal.MODEL_REQUESTS)
    if served is None or requests is None:
        return failures
    return min(failures, served) / served * requests if served > 0 else 0.0


def count_errors(window: Window, source: str, count: Sequence[str | int], exclude: Sequence[int]) -> ErrorCount:
    """Failed requests over `window` as the rule counts them (see the module docstring)."""
    if source == "model":
        failures = window.delta(Signal.MODEL_ERRORS) or 0.0
        return ErrorCount(failures, (("model failures", failures),))
    model_failures = _model_share(window, window.delta(Signal.ENVOY_RQ_TOTAL)) if MODEL_FAILURES in count else None
    parts: list[tuple[str, float]] = []
    http = 0.0
    for token in count:
        if token == MODEL_FAILURES:
            if model_failures is not None:  # a server without a failure counter: nothing to add, nothing to say
                parts.append(("model failures", model_failures))
            continue
        if isinstance(token, str):
            signal, digit = CLASSES[token]
            excluded = [c for c in exclude if c // 100 == digit]
            n = window.delta(signal) or 0.0
            n -= sum(window.delta(Signal.envoy_code(c)) or 0.0 for c in excluded)
            label = token + (f" except {', '.join(str(c) for c in excluded)}" if excluded else "")
        else:
            n, label = window.delta(Signal.envoy_code(token)) or 0.0, str(token)
        n = max(0.0, n)
        http += n
        parts.append((label, n))
    return ErrorCount(max(http, model_failures or 0.0), tuple(parts))
