"""`rollback --wait` / `status --watch` rendering and exit codes, against a scripted control API."""

from __future__ import annotations

import io
import urllib.error
from typing import Any

from agent.cli import NotControlApiError
from agent.cli_watch import EXIT_INTERRUPTED, Screen, progress_lines, wait_for_rollback, watch_status

SWITCHED = {
    "rollback_id": "rb1",
    "from_version": "v2",
    "to_version": "v1",
    "trigger": "operator ana: drill",
    "done": False,
    "outcome": "switched",
    "phases": [{"name": n, "outcome": "ok", "duration_ms": 1.0, "detail": ""} for n in ("select", "switch", "mark")],
    "pending": ["confirm", "verify", "archive"],
    "running": None,
}


def _running(remaining: float) -> dict[str, Any]:
    return SWITCHED | {
        "running": {"name": "verify", "elapsed_s": 10 - remaining, "limit_s": 10.0, "remaining_s": remaining},
        "pending": ["archive"],
    }


def _done(outcome: str) -> dict[str, Any]:
    phases = SWITCHED["phases"] + [
        {"name": n, "outcome": "ok", "duration_ms": 2.0, "detail": ""} for n in ("confirm", "verify", "archive")
    ]
    return SWITCHED | {"done": True, "outcome": outcome, "detail": "checked", "phases": phases, "pending": []}


class _Client:
    base_url = "http://127.0.0.1:1"

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        self.calls.append(path)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class _Out(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_off_a_terminal_each_phase_is_printed_once_and_the_window_counts_down():
    answers = [(200, SWITCHED), (200, _running(9.5)), (200, _running(8.9)), (200, _running(8.2)), (200, _running(7.5))]
    client = _Client([*answers, (200, _done("recovered"))])
    out = _Out(tty=False)
    code = wait_for_rollback(client, "rb1", out=out, sleep=lambda s: None)  # type: ignore[arg-type]
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "rollback rb1: v2 -> v1  (operator ana: drill)"
    assert [line.split()[1] for line in lines if line.startswith("  + ")] == [
        "select", "switch", "mark", "confirm", "verify", "archive"
    ]  # fmt: skip
    countdown = [line for line in lines if "verification window" in line]
    assert [c.split(": ")[1] for c in countdown] == ["10 s left of 10 s", "9 s left of 10 s", "8 s left of 10 s"]
    assert lines[-1] == "outcome: recovered: checked"
    assert client.calls == ["/v1/rollbacks/rb1"] * 6, "polls until the outcome, then stops"


def test_any_outcome_but_recovered_exits_1():
    for outcome in ("verification_failed", "inconclusive", "no_eligible_target", "interrupted"):
        client = _Client([(200, _done(outcome))])
        assert wait_for_rollback(client, "rb1", out=_Out(False), sleep=lambda s: None) == 1  # type: ignore[arg-type]


def test_ctrl_c_stops_watching_cleanly_and_restores_the_cursor():
    client = _Client([(200, SWITCHED), KeyboardInterrupt()])
    out = _Out(tty=True)
    assert wait_for_rollback(client, "rb1", out=out, sleep=lambda s: None) == EXIT_INTERRUPTED  # type: ignore[arg-type]
    assert out.getvalue().startswith("\x1b[?25l") and out.getvalue().endswith("\x1b[?25h")


def test_an_agent_briefly_unreachable_is_retried():
    down = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    client = _Client([down, down, (200, _done("recovered"))])
    assert wait_for_rollback(client, "rb1", out=_Out(False), sleep=lambda s: None) == 0  # type: ignore[arg-type]


def test_on_a_terminal_the_frame_is_redrawn_in_place():
    out = _Out(tty=True)
    screen = Screen(out, tty=True)
    screen.show(progress_lines(SWITCHED))
    first = out.getvalue()
    screen.show(progress_lines(_running(5.0)))
    redraw = out.getvalue()[len(first) :]
    drawn = len(progress_lines(SWITCHED))
    assert redraw.startswith(f"\x1b[{drawn}F\x1b[J"), "moves up over the previous frame and clears it"
    assert "5 s left of 10 s" in redraw


def test_a_url_that_is_not_the_control_api_exits_3_at_once():
    wrong = NotControlApiError("http://127.0.0.1:1/v1/overview answered HTTP 200 (text/html), which is not ...")
    for watch in (
        lambda c, out: wait_for_rollback(c, "rb1", out=out, sleep=lambda s: None),
        lambda c, out: watch_status(c, 1.0, out=out, sleep=lambda s: None),
    ):
        client = _Client([wrong])
        assert watch(client, _Out(False)) == 3
        assert len(client.calls) == 1


def test_status_watch_off_a_terminal_prints_the_status_once_then_what_happens():
    def overview(served: dict[str, int], rollback: dict[str, Any] | None) -> dict[str, Any]:
        versions = [{"version": v, "desired_weight": w, "served_weight": w} for v, w in served.items()]
        return {"status": {"model": "credit", "versions": versions}, "rollback": rollback, "decisions": []}

    frames = [overview({"v1": 50, "v2": 50}, None)] * 2 + [overview({"v1": 100, "v2": 0}, _done("recovered"))]
    client = _Client([(200, f) for f in frames] + [KeyboardInterrupt()])
    out = _Out(False)
    assert watch_status(client, 1.0, out=out, sleep=lambda s: None) == EXIT_INTERRUPTED  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.count("model credit") == 1, "the full status once"
    assert text.count("served split: v1=50 v2=50") == 1 and "served split: v1=100 v2=0" in text
    assert text.rstrip().endswith("outcome: recovered: checked")
