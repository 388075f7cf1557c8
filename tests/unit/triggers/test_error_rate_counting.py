"""What the error-rate kinds count as failed: `count` (classes, codes, model_failures) and `exclude`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from triggers_testkit import Stream, judge, make_rule, traffic

from agent.domain.signals import Signal
from agent.triggers import VerdictStatus
from agent.triggers.errors import RuleFileError
from agent.triggers.loader import check_rule_files, load_rules

BREACH, OK = VerdictStatus.BREACH, VerdictStatus.OK
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)


def mlserver_like(rps: int = 10, bad_input: float = 0.0, model_errors: float = 0.0, seconds: int = 60) -> Stream:
    """Envoy sees MLServer's answers: model failures as 400 (and in its failure counter), bad input as 422."""
    stream = Stream()
    failed, rejected = rps * model_errors, rps * bad_input
    stream.run(
        seconds,
        inc={
            **traffic(rps),
            Signal.ENVOY_RQ_4XX: failed + rejected,
            Signal.envoy_code(400): failed,
            Signal.envoy_code(422): rejected,
            Signal.MODEL_REQUESTS: rps,
            Signal.MODEL_ERRORS: failed,
        },
    )
    return stream


class TestWhatIsCounted:
    def test_model_failures_answered_400_breach_by_default_and_are_named(self) -> None:
        verdict = judge(make_rule("error_rate"), mlserver_like(model_errors=0.5))
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.5)
        assert verdict.reason.endswith("(300 requests; failed: 5xx 0, model failures 150)")

    def test_a_400_is_counted_from_envoy_when_listed_even_without_a_model_failure_counter(self) -> None:
        stream = Stream()
        stream.run(60, inc={**traffic(10), Signal.ENVOY_RQ_4XX: 5, Signal.envoy_code(400): 5})
        assert judge(make_rule("error_rate"), stream).status is OK  # 5xx only: a 400 is not an error by default
        verdict = judge(make_rule("error_rate", count=["5xx", 400, 404]), stream)
        assert verdict.status is BREACH
        assert verdict.reason.endswith("failed: 5xx 0, 400 150, 404 0)")

    def test_client_4xx_is_left_out_unless_counted(self) -> None:
        stream = mlserver_like(bad_input=0.3)
        assert judge(make_rule("error_rate"), stream).status is OK
        assert judge(make_rule("error_rate", count=["5xx", "4xx"]), stream).status is BREACH
        excluded = judge(make_rule("error_rate", count=["5xx", "4xx"], exclude=[422]), stream)
        assert excluded.status is OK
        assert "4xx except 422 0" in excluded.reason

    def test_overlapping_counts_are_not_added_twice(self) -> None:
        stream = Stream()  # every model failure is also a 500 at Envoy
        stream.run(60, inc={**traffic(10, 0.04), Signal.MODEL_ERRORS: 0.4})
        verdict = judge(make_rule("error_rate"), stream)
        assert verdict.status is OK
        assert verdict.value == pytest.approx(0.04)

    def test_a_scrape_landing_in_a_short_window_does_not_inflate_the_rate(self) -> None:
        # Access-log batches every 125 ms at 3,000 requests/s, the model server scraped once a second: each scrape
        # brings a second's worth of failures (4.5 %, under the 5 % threshold) into the sequential test's shortest
        # window (~0.5 s). Counted raw against that window's requests they would read 9 % and roll a healthy
        # candidate back.
        stream = Stream()
        for step in range(480):
            scraped = step % 8 == 7
            inc = {**traffic(375), Signal.MODEL_REQUESTS: 3000 * scraped, Signal.MODEL_ERRORS: 135 * scraped}
            stream.step(0.125, inc=inc)
        verdict = judge(make_rule("error_rate_sequential", "critical"), stream)
        assert verdict.status is OK, verdict.reason
        assert judge(make_rule("error_rate", "critical"), stream).value == pytest.approx(0.045, abs=0.005)

    def test_sequential_kind_counts_the_same_and_names_it(self) -> None:
        stream = mlserver_like(model_errors=0.5, seconds=30)
        verdict = judge(make_rule("error_rate_sequential", "critical", count=["5xx", 400]), stream)
        assert verdict.status is BREACH
        assert "failed as 5xx or 400" in verdict.reason
        assert judge(make_rule("error_rate_sequential", "critical", count=["5xx"]), stream).status is OK

    def test_model_source_reads_only_the_failure_counter(self) -> None:
        verdict = judge(make_rule("error_rate", source="model"), mlserver_like(model_errors=0.5))
        assert verdict.status is BREACH
        assert "failed: model failures 150" in verdict.reason


RULE = """\
rules:
  - name: errors
    kind: error_rate
    count: {count}
"""


class TestValidation:
    @pytest.mark.parametrize(
        ("count", "message"),
        [
            ("[5xx, 200]", "200 is not an error code"),
            ("[3xx]", "'3xx' is not 4xx, 5xx, a code 400..599 or model_failures"),
            ("[5xx, 5xx]", "listed twice: 5xx"),
            ("[]", "at least 1 item"),
            ("[true]", "True is not a response code"),
        ],
    )
    def test_bad_count_names_file_line_and_field(self, count: str, message: str) -> None:
        with pytest.raises(RuleFileError) as caught:
            load_rules(RULE.format(count=count), "rules.yaml")
        [error] = caught.value.errors
        assert error.line == 4
        assert "count" in error.message and message in error.message

    @pytest.mark.parametrize(
        ("extra", "message", "line"),
        [
            ("count: [5xx, 4xx, 404]", "count: 404 is already counted by 4xx", 5),
            ("count: [5xx, 404]\n    exclude: [422]", "exclude: 422: 4xx is not counted", 6),
            ("source: model\n    count: [5xx, 400]", "count: source model reads only the model server's failure", 6),
        ],
    )
    def test_inconsistent_pairs_are_reported_with_their_line(
        self, tmp_path: Path, extra: str, message: str, line: int
    ) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(f"tier: critical\nrules:\n  - name: errors\n    kind: error_rate\n    {extra}\n")
        errors = check_rule_files([path])
        assert len(errors) == 1 and message in errors[0].message
        assert errors[0].line == line

    def test_single_values_and_code_strings_are_accepted(self) -> None:
        rule = make_rule("error_rate", count="4xx", exclude=422)
        assert (rule.count, rule.exclude) == (("4xx",), (422,))  # type: ignore[attr-defined]


@FUZZ
@given(st.lists(st.one_of(st.integers(-1000, 1000), st.text(max_size=6), st.booleans(), st.none()), max_size=5))
def test_any_count_value_is_accepted_or_refused_with_a_message_never_a_crash(values: list[object]) -> None:
    text = "rules:\n  - name: errors\n    kind: error_rate\n    count: " + repr(values).replace("None", "null") + "\n"
    try:
        rules = load_rules(text, "fuzz.yaml")
    except RuleFileError as exc:
        assert all(e.message and e.line >= 1 for e in exc.errors)
        return
    assert rules.rules[0].count  # type: ignore[attr-defined]
