"""Shadow capture: the answers users got and the candidate's answers to the mirrored copies, from Envoy's tap filter.

Both the live listener and the shadow listener carry a tap filter with one admin config id (resources.shadow_tap_id);
the agent attaches to it with one streaming POST /tap on Envoy's admin API, and Envoy writes every finished request
the mirror selected (its x-request-id matches mirror_selection of the mirrored share, as the route's does; the
answers of requests that were not mirrored are never serialized) with headers and bodies up to `max_body_bytes` to
that stream as a JSON document. The tap buffers a copy of each body and
writes it after the response was sent; it does nothing while no stream is attached, and the agent attaches only while
a version is mirrored. Which half a trace is: SHADOW_HEADER, which only the shadow route adds to responses. The join
by x-request-id and the comparison are agent/domain/shadow.py.

Sampled request/answer pairs (by a hash of the request id, so both halves of a request are kept or neither) are
kept for the forensic bundle, with the named fields redacted before they are stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.domain.shadow import (
    REQUEST_ID_HEADER,
    SHADOW_HEADER,
    VERSION_HEADER,
    Pair,
    ShadowJoin,
    Side,
    mirror_selection,
    parse_oip_answer,
    redact_body,
)
from agent.ports.rollback import ForensicInputs

log = logging.getLogger(__name__)


class TraceStreamError(ValueError):
    """The tap stream is not a sequence of JSON documents, or one is larger than the buffer allows."""


class JsonStream:
    """Splits a byte stream of concatenated JSON documents (Envoy's admin tap output) into documents."""

    def __init__(self, max_buffer_bytes: int) -> None:
        self._buffer = ""
        self._max = max_buffer_bytes
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[Any]:
        self._buffer += chunk.decode("utf-8", errors="replace")
        documents = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                break
            try:
                document, end = self._decoder.raw_decode(text)
            except RecursionError:
                raise TraceStreamError("a tap trace is nested deeper than the parser goes") from None
            except json.JSONDecodeError:
                self._buffer = text
                if len(text) > self._max:
                    raise TraceStreamError(f"a tap trace exceeds {self._max} bytes") from None
                break
            documents.append(document)
            self._buffer = text[end:]
        return documents


@dataclass(frozen=True, slots=True)
class Trace:
    side: Side
    request_id: str
    status: int
    version: str
    request_body: str
    response_body: str
    truncated: bool


def _headers(message: Mapping[str, Any]) -> dict[str, str]:
    headers = message.get("headers")
    if not isinstance(headers, list):
        return {}
    return {str(h.get("key", "")).lower(): str(h.get("value", "")) for h in headers if isinstance(h, dict)}


def _body(message: Mapping[str, Any]) -> tuple[str, bool]:
    body = message.get("body")
    if not isinstance(body, dict):
        return "", False
    return str(body.get("as_string", "")), bool(body.get("truncated", False))


def parse_trace(document: Any) -> Trace | None:
    """One tap trace (format JSON_BODY_AS_STRING); None when it is not an HTTP trace with a request id."""
    trace = document.get("http_buffered_trace") if isinstance(document, dict) else None
    if not isinstance(trace, dict):
        return None
    request, response = trace.get("request"), trace.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        return None
    req_headers, resp_headers = _headers(request), _headers(response)
    request_id = req_headers.get("x-request-id", "")
    if not request_id:
        return None
    try:
        status = int(resp_headers.get(":status", "0"))
    except ValueError:
        status = 0
    request_body, request_cut = _body(request)
    response_body, response_cut = _body(response)
    shadow = resp_headers.get(SHADOW_HEADER)
    return Trace(
        side=Side.SHADOW if shadow else Side.LIVE,
        request_id=request_id,
        status=status,
        version=shadow or resp_headers.get(VERSION_HEADER, ""),
        request_body=request_body,
        response_body=response_body,
        truncated=request_cut or response_cut,
    )


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    max_body_bytes: int = 65_536  # per body; a larger answer is truncated by Envoy and left out of the comparison
    prediction_output: str = "predict"
    confidence_output: str = "confidence"
    sample_rate: float = 0.01  # share of mirrored requests kept, redacted, for the forensic bundle
    max_samples: int = 200
    redact_fields: frozenset[str] = frozenset()
    retry_s: float = 1.0


def sampled(request_id: str, rate: float) -> bool:
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


class ShadowCapture:
    """Feeds the join from Envoy's tap; keeps sampled, redacted request/answer pairs."""

    def __init__(
        self,
        *,
        admin_url: str,
        config_id: str,
        join: ShadowJoin,
        settings: CaptureSettings = CaptureSettings(),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        mirrored: float = 1.0,
    ) -> None:
        """`mirrored`: the share mirrored now (the agent starts at 0 and is told each change through `select`);
        while it is 0 the capture stays detached, so Envoy's tap serializes nothing."""
        self._url = admin_url.rstrip("/") + "/tap"
        self._config_id = config_id
        self.join = join
        self.settings = settings
        self._clock = clock
        self._wall = wall_clock
        self._sample_halves: dict[str, Trace] = {}
        self.samples: deque[dict[str, Any]] = deque(maxlen=settings.max_samples)
        self.traces = 0
        self.skipped = 0  # truncated or not an HTTP trace
        self.attached = False
        self.selection: str | None = None  # mirror_selection of the mirrored share; None: every request
        self.attached_with: str | None = None  # the selection the attached stream matches (valid while attached)
        self._response: aiohttp.ClientResponse | None = None
        self._reselected = False
        self._wanted = asyncio.Event()  # set while something is mirrored: attach
        self.select(mirrored)

    def select(self, fraction: float) -> None:
        """Capture only the requests a `fraction` mirror copies (the route selects them the same way); a change
        re-attaches the tap with the new match, and 0 (nothing mirrored) detaches it."""
        if fraction <= 0:
            if not self._wanted.is_set():
                return
            self._wanted.clear()
        else:
            selection = mirror_selection(fraction)
            if selection == self.selection and self._wanted.is_set():
                return
            self.selection = selection
            self._wanted.set()
        if self._response is not None:
            self._reselected = True
            self._response.close()  # `run` attaches again at once, with the new match, or waits to be wanted

    def tap_request(self) -> dict[str, Any]:
        limit = self.settings.max_body_bytes
        match: dict[str, Any] = {"any_match": True}
        if self.selection is not None:
            header = {"name": REQUEST_ID_HEADER, "string_match": {"safe_regex": {"regex": self.selection}}}
            match = {"http_request_headers_match": {"headers": [header]}}
        return {
            "config_id": self._config_id,
            "tap_config": {
                "match": match,
                "output_config": {
                    "sinks": [{"format": "JSON_BODY_AS_STRING", "streaming_admin": {}}],
                    "max_buffered_rx_bytes": limit,
                    "max_buffered_tx_bytes": limit,
                },
            },
        }

    async def run(self) -> None:
        """Attach to the tap and keep attached (re-attaching after Envoy restarts) until cancelled."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wanted.wait()
                try:
                    await self._attach(session)
                except (aiohttp.ClientError, OSError, TraceStreamError) as exc:
                    if not self._reselected:
                        log.warning("shadow capture: %s; re-attaching in %.1fs", exc, self.settings.retry_s)
                finally:
                    self.attached = False
                    self._response = None
                if self._reselected:
                    self._reselected = False
                    if self._wanted.is_set():
                        log.info("shadow capture: attaching for the mirrored share (x-request-id %s)", self.selection)
                    else:
                        log.info("shadow capture: detached (nothing mirrored)")
                    continue
                await asyncio.sleep(self.settings.retry_s)

    async def _attach(self, session: aiohttp.ClientSession) -> None:
        sent = self.selection
        async with session.post(self._url, json=self.tap_request()) as response:
            if response.status != 200:
                detail = (await response.text())[:200].strip()
                raise aiohttp.ClientError(f"Envoy admin /tap answered {response.status}: {detail}")
            if (
                self.selection != sent or not self._wanted.is_set()
            ):  # the share changed while this attach was on its way
                self._reselected = True
                return
            self._response = response
            self.attached_with = sent
            self.attached = True
            stream = JsonStream(max_buffer_bytes=4 * self.settings.max_body_bytes + 65_536)
            async for chunk in response.content.iter_any():
                for document in stream.feed(chunk):
                    self.handle(document)

    def handle(self, document: Any) -> Pair | None:
        trace = parse_trace(document)
        self.traces += 1
        if trace is None or trace.truncated:
            self.skipped += 1
            return None
        answer = parse_oip_answer(
            trace.status,
            trace.response_body,
            prediction_output=self.settings.prediction_output,
            confidence_output=self.settings.confidence_output,
        )
        pair = self.join.add(trace.side, trace.request_id, answer, self._clock())
        if sampled(trace.request_id, self.settings.sample_rate):
            self._keep_sample(trace)
        return pair

    def _keep_sample(self, trace: Trace) -> None:
        other = self._sample_halves.pop(trace.request_id, None)
        if other is None:
            if len(self._sample_halves) >= self.settings.max_samples:
                self._sample_halves.pop(next(iter(self._sample_halves)))
            self._sample_halves[trace.request_id] = trace
            return
        live, shadow = (trace, other) if trace.side == Side.LIVE else (other, trace)
        fields = self.settings.redact_fields
        self.samples.append(
            {
                "request_id": trace.request_id,
                "at": self._wall(),
                "request": redact_body(live.request_body, fields),
                "live": {
                    "version": live.version,
                    "status": live.status,
                    "body": redact_body(live.response_body, fields),
                },
                "shadow": {
                    "version": shadow.version,
                    "status": shadow.status,
                    "body": redact_body(shadow.response_body, fields),
                },
            }
        )


def shadow_samples_provider(capture: ShadowCapture) -> Callable[[ForensicInputs], Any]:
    """A forensic bundle part: the sampled request/answer pairs of the shadow capture (already redacted)."""

    async def provide(_inputs: ForensicInputs) -> Mapping[str, str]:
        stats = capture.join.stats()
        summary = {
            "pairs": stats.pairs,
            "agreement_rate": stats.agreement_rate,
            "abs_error_mean": stats.abs_error_mean,
            "shadow_failures": stats.shadow_failures,
            "redacted_fields": sorted(capture.settings.redact_fields),
            "samples": list(capture.samples),
        }
        return {"shadow_samples.json": json.dumps(summary, indent=2, sort_keys=True) + "\n"}

    return provide
