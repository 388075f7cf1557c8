"""`rollback --wait` and `status --watch`: the rollback procedure's progress as it happens.

On a terminal the view is redrawn in place (like `kubectl argo rollouts get rollout --watch`); otherwise (a pipe, a
CI log) each phase is printed once as it completes and the verification window's countdown every few seconds.
Ctrl-C stops watching (exit 130) and leaves the procedure running in the agent.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import urllib.error
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, ControlClient, NotControlApiError, format_status

EXIT_INTERRUPTED = 130  # Ctrl-C: the shell's convention for SIGINT
POLL_S = 0.5
UNREACHABLE_LIMIT_S = 30.0  # `rollback --wait` gives up after the agent stayed unreachable this long
_MARKS = {"ok": "✔", "failed": "✘", "skipped": "↷"}
_ASCII_MARKS = {"ok": "+", "failed": "x", "skipped": "-"}

Line = tuple[str, str]  # (identity, text): off a terminal a line is printed once per identity


class Screen:
    """Shows successive frames: redrawn in place on a terminal, else each new line printed once."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0
        self._printed: set[str] = set()
        if tty:
            out.write("\x1b[?25l")  # hide the cursor while redrawing

    def show(self, lines: Sequence[Line]) -> None:
        if self.tty:
            # A wrapped line, or a frame taller than the terminal (scrolled off), would break the redraw.
            size = shutil.get_terminal_size()
            width = max(20, size.columns - 1)
            frame = [text[:width] for _, text in lines][: max(1, size.lines - 1)]
            erase = f"\x1b[{self._drawn}F" if self._drawn else "\r"
            self.out.write(erase + "\x1b[J" + "".join(f"{text}\n" for text in frame))
            self._drawn = len(frame)
        else:
            for key, text in lines:
                if key.startswith("~") or key in self._printed:
                    continue
                self._printed.add(key)
                self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h")
            self.out.flush()


def _marks(out: TextIO) -> dict[str, str]:
    encoding = (getattr(out, "encoding", "") or "").lower().replace("-", "")
    return _MARKS if encoding == "utf8" else _ASCII_MARKS


def progress_lines(p: dict[str, Any], marks: dict[str, str] = _ASCII_MARKS) -> list[Line]:
    """The lines showing one rollback's progress (GET /v1/rollbacks/{id})."""
    rollback_id = p.get("rollback_id", "")
    lines: list[Line] = [
        (
            f"head:{rollback_id}",
            f"rollback {rollback_id}: {p.get('from_version', '')} -> {p.get('to_version') or '-'}"
            f"  ({p.get('trigger', '')})",
        )
    ]
    for s in p.get("skipped", []):
        lines.append((f"skip:{rollback_id}:{s.get('version')}", f"  skipped {s.get('version')}: {s.get('reason')}"))
    for phase in p.get("phases", []):
        outcome = phase.get("outcome", "")
        detail = f"  {phase['detail']}" if phase.get("detail") else ""
        lines.append(
            (
                f"phase:{rollback_id}:{phase.get('name')}",
                f"  {marks.get(outcome, '?')} {phase.get('name', ''):<9}{outcome:<8}"
                f"{float(phase.get('duration_ms', 0.0)):>10.1f} ms{detail}",
            )
        )
    running = p.get("running")
    if running:
        name, left, limit = running.get("name", ""), float(running["remaining_s"]), float(running["limit_s"])
        what = "verification window" if name == "verify" else "waiting for Envoy's counters to show the target"
        seconds_left = math.ceil(left)
        step = 1 if limit <= 10 else 5  # off a terminal: a countdown line every `step` seconds
        lines.append(
            (
                f"running:{rollback_id}:{name}:{math.ceil(seconds_left / step)}",
                f"  ~ {name:<9}running {float(running['elapsed_s']):>8.0f} s   {what}: {seconds_left} s left of "
                f"{limit:.0f} s",
            )
        )
    for name in p.get("pending", []):
        lines.append((f"~pending:{name}", f"    {name:<9}pending"))
    if p.get("done"):
        detail = f": {p['detail']}" if p.get("detail") else ""
        lines.append((f"outcome:{rollback_id}", f"outcome: {p.get('outcome', '')}{detail}"))
    return lines


def _unreachable(exc: Exception) -> str:
    return str(getattr(exc, "reason", exc))


def wait_for_rollback(
    client: ControlClient,
    rollback_id: str,
    *,
    out: TextIO = sys.stdout,
    json_out: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow one rollback until its outcome: 0 when the target was verified (recovered), 1 for any other
    outcome (escalated, verification failed or inconclusive, interrupted), 3 when the agent stays unreachable."""
    screen = Screen(out, out.isatty() and not json_out)
    marks = _marks(out)
    progress: dict[str, Any] = {}
    unreachable_since: float | None = None
    try:
        while True:
            try:
                status, payload = client.call("GET", f"/v1/rollbacks/{rollback_id}")
            except NotControlApiError as exc:
                screen.close()
                print(f"error: {exc.reason}", file=sys.stderr)
                return EXIT_UNREACHABLE
            except (urllib.error.URLError, OSError) as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_LIMIT_S:
                    screen.close()
                    print(f"error: the agent stayed unreachable: {_unreachable(exc)}", file=sys.stderr)
                    return EXIT_UNREACHABLE
                sleep(POLL_S)
                continue
            unreachable_since = None
            if status >= 400:
                screen.close()
                print(f"error ({status} {payload.get('code', '')}): {payload.get('message', payload)}", file=sys.stderr)
                return EXIT_FAILED
            progress = payload
            if not json_out:
                screen.show(progress_lines(progress, marks))
            if progress.get("done"):
                break
            sleep(POLL_S)
    except KeyboardInterrupt:
        screen.close()
        print("\nstopped watching: the rollback goes on in the agent (rollback-agent status --watch)", file=sys.stderr)
        return EXIT_INTERRUPTED
    screen.close()
    if json_out:
        print(json.dumps(progress, indent=2), file=out)
    return EXIT_OK if progress.get("outcome") == "recovered" else EXIT_FAILED


def overview_lines(overview: dict[str, Any], marks: dict[str, str] = _ASCII_MARKS, first: bool = True) -> list[Line]:
    """`status` and, when there is one, the latest rollback's progress (GET /v1/overview). Off a terminal the
    full status is printed once (`first`), then only what happens: split changes, phases, decisions."""
    status = overview.get("status", {})
    prefix = "status" if first else "~status"
    lines: list[Line] = [(f"{prefix}:{i}", text) for i, text in enumerate(format_status(status).split("\n"))]
    served = " ".join(f"{v.get('version')}={v.get('served_weight', 0)}" for v in status.get("versions", []))
    lines.append((f"served:{served}", f"served split: {served}"))
    progress = overview.get("rollback")
    if progress:
        lines.append(("~blank", ""))
        lines.extend(progress_lines(progress, marks))
    decisions = overview.get("decisions", [])[:5]
    if decisions:
        lines.append(("~blank2", ""))
        lines.append(("~decisions", "RECENT DECISIONS"))
        for d in decisions:
            reason = f" ({d['reason']})" if d.get("reason") else ""
            lines.append(
                (
                    f"decision:{d.get('seq')}:{d.get('outcome')}",
                    f"  {d.get('at', '')} {d.get('summary', '')}{reason}: {d.get('outcome', '')}",
                )
            )
    return lines


def watch_status(
    client: ControlClient,
    interval_s: float,
    *,
    out: TextIO = sys.stdout,
    json_out: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the status every interval until Ctrl-C (exit 130); an unreachable agent is shown and retried."""
    tty = out.isatty() and not json_out
    screen = Screen(out, tty)
    marks = _marks(out)
    last_json = ""
    shown = False
    try:
        while True:
            try:
                status, payload = client.call("GET", "/v1/overview")
            except NotControlApiError as exc:
                screen.close()
                print(f"error: {exc.reason}", file=sys.stderr)
                return EXIT_UNREACHABLE
            except (urllib.error.URLError, OSError) as exc:
                message = f"agent unreachable at {client.base_url}: {_unreachable(exc)}; retrying"
                if json_out:
                    print(json.dumps({"error": message}), file=out, flush=True)
                else:
                    screen.show([(f"unreachable:{time.monotonic() // 10}", message)])
                sleep(interval_s)
                continue
            if status in (401, 403):
                screen.close()
                print(f"error ({status} {payload.get('code', '')}): {payload.get('message', payload)}", file=sys.stderr)
                return EXIT_FAILED
            if json_out:
                text = json.dumps(payload, separators=(",", ":"))
                if text != last_json:
                    print(text, file=out, flush=True)
                    last_json = text
            elif status >= 400:
                screen.show([(f"error:{status}", f"error ({status}): {payload.get('message', payload)}")])
            else:
                screen.show(overview_lines(payload, marks, first=not shown))
                shown = True
            sleep(interval_s)
    except KeyboardInterrupt:
        screen.close()
        print("\nstopped watching", file=sys.stderr)
        return EXIT_INTERRUPTED
