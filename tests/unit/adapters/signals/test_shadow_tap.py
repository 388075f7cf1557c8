"""Envoy's admin tap stream -> traces -> the shadow join, and the sampled, redacted pairs for the forensic bundle."""

import asyncio
import contextlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.signals.shadow_tap import (
    CaptureSettings,
    JsonStream,
    ShadowCapture,
    TraceStreamError,
    parse_trace,
    shadow_samples_provider,
)
from agent.domain.shadow import REDACTED, ShadowJoin, Side, mirror_selection

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)


def trace(request_id, predict, *, shadow=None, status=200, truncated=False, ssn=123):
    """A trace as Envoy 1.40 writes it (format JSON_BODY_AS_STRING)."""
    response_headers = [{"key": ":status", "value": str(status)}, {"key": "x-served-by-version", "value": "v1"}]
    if shadow:
        response_headers.append({"key": "x-rollback-shadow", "value": shadow})
    request_body = {"inputs": [{"name": "ssn", "data": [ssn]}, {"name": "x", "data": [1.0]}]}
    response_body = {"outputs": [{"name": "predict", "data": [predict]}, {"name": "confidence", "data": [0.9]}]}
    return {
        "http_buffered_trace": {
            "request": {
                "headers": [{"key": ":path", "value": "/infer"}, {"key": "x-request-id", "value": request_id}],
                "body": {"as_string": json.dumps(request_body), "truncated": False},
            },
            "response": {
                "headers": response_headers,
                "body": {"as_string": json.dumps(response_body), "truncated": truncated},
            },
        }
    }


def test_concatenated_pretty_printed_documents_split_at_any_chunk_boundary():
    docs = [trace(f"r{i}", i % 2) for i in range(5)]
    data = "".join(json.dumps(d, indent=1) + "\n" for d in docs).encode()
    for size in (1, 7, 100, len(data)):
        stream = JsonStream(max_buffer_bytes=1 << 20)
        out = []
        for start in range(0, len(data), size):
            out.extend(stream.feed(data[start : start + size]))
        assert out == docs


def test_an_oversized_document_ends_the_stream_with_an_error():
    stream = JsonStream(max_buffer_bytes=100)
    with pytest.raises(TraceStreamError, match="100 bytes"):
        stream.feed(b'{"a": "' + b"x" * 200)


def test_the_shadow_header_tells_the_candidates_answer_from_the_users():
    live = parse_trace(trace("r1", 1))
    shadow = parse_trace(trace("r1", 0, shadow="v2"))
    assert (live.side, live.request_id, live.status) == (Side.LIVE, "r1", 200)
    assert (shadow.side, shadow.version) == (Side.SHADOW, "v2")
    assert parse_trace({"socket_buffered_trace": {}}) is None
    assert parse_trace(["not", "a", "trace"]) is None


def capture(**settings):
    return ShadowCapture(
        admin_url="http://127.0.0.1:1", config_id="m-shadow", join=ShadowJoin(), settings=CaptureSettings(**settings)
    )


def test_traces_feed_the_join_and_truncated_ones_are_left_out():
    cap = capture()
    cap.handle(trace("r1", 1))
    assert cap.handle(trace("r1", 0, shadow="v2")) is not None
    cap.handle(trace("r2", 1))
    cap.handle(trace("r2", 1, shadow="v2", truncated=True))
    assert cap.skipped == 1 and cap.join.stats().agreement_rate == 0.0


async def test_sampled_pairs_are_redacted_before_they_are_kept():
    cap = capture(sample_rate=1.0, redact_fields=frozenset({"ssn"}))
    cap.handle(trace("r1", 1, ssn=987654321))
    cap.handle(trace("r1", 1, shadow="v2"))
    [sample] = cap.samples
    assert sample["live"]["version"] == "v1" and sample["shadow"]["version"] == "v2"
    assert "987654321" not in json.dumps(sample)
    assert json.loads(sample["request"])["inputs"][0]["data"] == REDACTED
    files = await shadow_samples_provider(cap)(None)
    bundle = json.loads(files["shadow_samples.json"])
    assert bundle["agreement_rate"] == 1.0 and bundle["redacted_fields"] == ["ssn"] and len(bundle["samples"]) == 1


def test_no_samples_at_rate_zero():
    cap = capture(sample_rate=0.0)
    cap.handle(trace("r1", 1))
    cap.handle(trace("r1", 1, shadow="v2"))
    assert list(cap.samples) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
TRACE_KEYS = st.sampled_from(["http_buffered_trace", "request", "response", "headers", "body", "key", "value"])


@FUZZ
@given(st.dictionaries(TRACE_KEYS, JSON, max_size=4) | JSON)
def test_any_json_document_is_taken_or_skipped_never_an_exception(document):
    cap = capture()
    cap.handle({"http_buffered_trace": document})
    cap.handle(document)
    assert cap.traces == 2


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_give_documents_or_a_named_stream_error(data):
    stream = JsonStream(max_buffer_bytes=100)
    try:
        stream.feed(data)
    except TraceStreamError as exc:
        assert "exceeds 100 bytes" in str(exc)


def test_the_tap_selects_the_requests_the_mirror_selects_and_a_new_share_reattaches():
    cap = capture()
    assert cap.tap_request()["tap_config"]["match"] == {"any_match": True}  # everything (or nothing) mirrored
    cap.select(0.25)
    [header] = cap.tap_request()["tap_config"]["match"]["http_request_headers_match"]["headers"]
    assert header == {"name": "x-request-id", "string_match": {"safe_regex": {"regex": mirror_selection(0.25)}}}
    cap.select(1.0)
    assert cap.tap_request()["tap_config"]["match"] == {"any_match": True}


async def test_the_capture_stays_detached_while_nothing_is_mirrored():
    cap = ShadowCapture(admin_url="http://127.0.0.1:1", config_id="m-shadow", join=ShadowJoin(), mirrored=0.0)
    task = asyncio.create_task(cap.run())
    try:
        await asyncio.sleep(0)  # let it start: it waits to be wanted, and never tries the (closed) admin port
        assert not cap._wanted.is_set() and not cap.attached
        cap.select(0.5)
        assert cap._wanted.is_set() and cap.selection == mirror_selection(0.5)
        cap.select(0.0)
        assert not cap._wanted.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
