"""Shadow comparison: join by request id in bounded memory, agreement rate, error distribution, redaction."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.shadow import REDACTED, Answer, ShadowJoin, Side, compare, parse_oip_answer, redact, redact_body

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)


def oip(predict, confidence, status=200):
    body = {
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [len(predict)], "data": predict},
            {"name": "confidence", "datatype": "FP32", "shape": [len(confidence)], "data": confidence},
        ]
    }
    return parse_oip_answer(status, json.dumps(body))


def test_an_oip_answer_gives_its_predictions_and_confidences():
    answer = oip([1, 0], [0.9, 0.6])
    assert answer == Answer(200, (1.0, 0.0), (0.9, 0.6))
    assert parse_oip_answer(200, '{"outputs": [{"name": "predict", "data": [[1], [0]]}]}').predictions == (1.0, 0.0)


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"outputs": 3}', b'{"outputs": [{"name": "predict", "data": ["a"]}]}', b"\xff\xfe"],
)
def test_a_body_that_is_not_an_oip_answer_has_no_predictions(body):
    answer = parse_oip_answer(200, body)
    assert answer.predictions == () and not answer.ok


def test_halves_join_in_either_order():
    join = ShadowJoin()
    assert join.add(Side.SHADOW, "r1", oip([1], [0.8]), at=1.0) is None
    pair = join.add(Side.LIVE, "r1", oip([0], [0.9]), at=1.1)
    assert pair is not None and pair.live.predictions == (0.0,) and pair.shadow.predictions == (1.0,)
    assert join.pending == 0 and join.pairs() == [pair]


def test_a_half_without_its_other_half_expires_and_is_counted():
    join = ShadowJoin(pending_ttl_s=5)
    join.add(Side.LIVE, "lonely", oip([1], [0.9]), at=0.0)
    join.add(Side.LIVE, "later", oip([1], [0.9]), at=6.0)
    assert join.pending == 1 and join.unmatched[Side.LIVE] == 1
    # The expired half does not pair with a late other half: that becomes a new pending half.
    assert join.add(Side.SHADOW, "lonely", oip([1], [0.9]), at=6.1) is None


def test_memory_is_bounded():
    join = ShadowJoin(max_pending=10, max_pairs=5)
    for i in range(100):
        join.add(Side.LIVE, f"live-{i}", oip([1], [0.9]), at=float(i) / 1000)
    assert join.pending == 10 and join.unmatched[Side.LIVE] == 90
    for i in range(20):
        join.add(Side.LIVE, f"p{i}", oip([1], [0.9]), at=1.0)
        join.add(Side.SHADOW, f"p{i}", oip([1], [0.9]), at=1.0)
    assert len(join.pairs()) == 5


def test_a_reused_request_id_keeps_the_first_half():
    join = ShadowJoin()
    join.add(Side.LIVE, "r", oip([1], [0.9]), at=0)
    assert join.add(Side.LIVE, "r", oip([0], [0.9]), at=0) is None
    assert join.duplicates == 1
    assert join.add(Side.SHADOW, "r", oip([1], [0.9]), at=0).live.predictions == (1.0,)


def test_agreement_rate_counts_rows_and_a_failed_candidate_disagrees():
    join = ShadowJoin()
    for i in range(8):
        join.add(Side.LIVE, f"r{i}", oip([1, 1], [0.9, 0.8]), at=0)
        join.add(Side.SHADOW, f"r{i}", oip([1, 0 if i < 2 else 1], [0.7, 0.6]), at=0)
    join.add(Side.LIVE, "failed", oip([1, 1], [0.9, 0.9]), at=0)
    join.add(Side.SHADOW, "failed", Answer(500), at=0)
    join.add(Side.LIVE, "user-error", Answer(503), at=0)  # the user got no answer: not compared
    join.add(Side.SHADOW, "user-error", oip([1], [0.5]), at=0)
    stats = join.stats()
    assert (stats.pairs, stats.rows, stats.agreeing_rows, stats.shadow_failures) == (9, 18, 14, 1)
    assert stats.agreement_rate == pytest.approx(14 / 18)
    assert len(stats.live_confidences) == 18 and len(stats.shadow_confidences) == 16


def test_regression_gives_the_error_distribution_and_no_agreement_rate():
    pairs = []
    join = ShadowJoin()
    for i, (a, b) in enumerate([(1.0, 1.5), (2.0, 2.0), (3.0, 1.0)]):
        join.add(
            Side.LIVE, f"r{i}", parse_oip_answer(200, json.dumps({"outputs": [{"name": "predict", "data": [a]}]})), 0
        )
        pairs.append(
            join.add(
                Side.SHADOW,
                f"r{i}",
                parse_oip_answer(200, json.dumps({"outputs": [{"name": "predict", "data": [b]}]})),
                0,
            )
        )
    stats = compare(pairs, "regression")
    assert stats.abs_errors == (0.5, 0.0, 2.0)
    assert stats.abs_error_mean == pytest.approx(2.5 / 3)
    assert stats.abs_error_quantile(0.99) == 2.0 and stats.abs_error_quantile(0.5) == 0.5
    assert stats.agreement_rate is None


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_any_interleaving_of_halves_gives_the_same_agreement(labels, rng):
    events = [(Side.LIVE, f"r{i}", live) for i, (live, _) in enumerate(labels)]
    events += [(Side.SHADOW, f"r{i}", shadow) for i, (_, shadow) in enumerate(labels)]
    rng.shuffle(events)
    join = ShadowJoin()
    for side, request_id, label in events:
        join.add(side, request_id, oip([label], [0.9]), at=0.0)
    expected = sum(1 for a, b in labels if a == b) / len(labels)
    assert join.pending == 0
    assert join.stats().agreement_rate == pytest.approx(expected)


def test_redaction_of_named_fields_and_oip_tensors():
    doc = {
        "id": "x",
        "inputs": [{"name": "ssn", "data": [1, 2]}, {"name": "income", "data": [3]}],
        "parameters": {"customer": "alice", "labels": [1]},
    }
    out = redact(doc, frozenset({"ssn", "customer"}))
    assert out["inputs"][0]["data"] == REDACTED and out["inputs"][1]["data"] == [3]
    assert out["parameters"] == {"customer": REDACTED, "labels": [1]}
    assert doc["inputs"][0]["data"] == [1, 2]  # the original is untouched
    assert redact_body("not json with ssn", frozenset({"ssn"})) == REDACTED
    assert redact_body("kept as is", frozenset()) == "kept as is"


def test_a_body_nested_deeper_than_the_parser_goes_is_not_an_answer_and_is_withheld():
    deep = "[" * 100_000
    assert parse_oip_answer(200, deep).predictions == ()
    assert redact_body(deep, frozenset({"ssn"})) == REDACTED


def test_the_mirror_selection_picks_exactly_the_share_of_request_id_prefixes() -> None:
    import re
    import uuid

    from agent.domain.shadow import mirror_selection, selection_steps

    assert mirror_selection(1.0) is None  # everything: no pattern
    for fraction in (1 / 4096, 0.05, 0.1, 0.25, 0.5, 0.73, 0.999):
        pattern = re.compile(mirror_selection(fraction) or "")
        steps = selection_steps(fraction)
        # Envoy matches the whole header value; every 3-digit prefix, either case, is in or out as its value says.
        for n in range(4096):
            prefix = f"{n:03x}"
            assert bool(pattern.fullmatch(prefix + "e4b-4d2c")) == (n < steps), (fraction, prefix)
            assert bool(pattern.fullmatch(prefix.upper() + "E4B")) == (n < steps), (fraction, prefix)
        ids = [str(uuid.UUID(int=(i * 2654435761) % 2**128 | 1 << 76)) for i in range(1, 4097)]
        assert all(pattern.fullmatch(i) is not None for i in ids if int(i[:3], 16) < steps)
    assert abs(selection_steps(0.1) / 4096 - 0.1) < 1 / 4096
    assert re.fullmatch(mirror_selection(0.5) or "", "request-from-a-client") is None
    with pytest.raises(ValueError):
        mirror_selection(0.0)
