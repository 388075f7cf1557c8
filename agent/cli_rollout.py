"""`rollback-agent rollout start|status|pause|resume|promote|abort` (docs/rollouts.md).

`start --plan FILE` checks the plan locally first (every error with its file and line) and sends the document; the
agent checks it again and records its digest. `status --watch` redraws stage, time in stage, and each gate's value
against its threshold with its verdict, until Ctrl-C (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, ControlClient, _claimed_name, _client_settings
from agent.cli_watch import EXIT_INTERRUPTED, Screen
from agent.config import ConfigError
from agent.rollout.plan import load_plan
from agent.triggers import RuleFileError

ACTIONS = {
    "pause": "pause the rollout: the clock stops and nothing moves automatically (audited)",
    "resume": "resume a paused rollout (audited)",
    "promote": "skip to the next stage now (the last: complete the rollout), with a reason (audited)",
    "abort": "send all traffic back to stable and quarantine the candidate (audited)",
}


def add_rollout_commands(sub: Any, client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    rollout = sub.add_parser("rollout", help="progressive delivery: take a candidate through the plan's stages")
    actions = rollout.add_subparsers(dest="rollout_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a rollout of VERSION through a plan (audited)")
    start.add_argument("version", help="the candidate version")
    start.add_argument(
        "--plan", type=Path, help="the rollout plan (YAML); default: the agent's rollout.plan, else its tier's plan"
    )
    start.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    client_options(start)
    status = actions.add_parser("status", help="the rollout's stage, time in stage and gates")
    status.add_argument("--watch", "-w", action="store_true", help="redraw every second until Ctrl-C (exit 130)")
    client_options(status)
    for name, text in ACTIONS.items():
        parser = actions.add_parser(name, help=text)
        parser.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        client_options(parser)


def run_rollout(args: argparse.Namespace) -> int:
    url, token = _client_settings(args)
    client = ControlClient(url, token, args.timeout)
    action = args.rollout_action
    try:
        if action == "status" and args.watch:
            return _watch(client, args.json)
        if action == "status":
            status, payload = client.call("GET", "/v1/rollout")
        elif action == "start":
            body: dict[str, Any] = {"version": args.version, "reason": args.reason, "actor": _claimed_name()}
            if args.plan is not None:
                try:
                    load_plan(args.plan)  # every error with its file and line, before anything is sent
                except RuleFileError as exc:
                    raise ConfigError(str(exc)) from None
                body["plan"] = args.plan.read_text(encoding="utf-8")
                body["plan_source"] = str(args.plan)
            status, payload = client.call("POST", "/v1/rollout/start", body)
        else:
            status, payload = client.call(
                "POST", f"/v1/rollout/{action}", {"reason": args.reason, "actor": _claimed_name()}
            )
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach the agent at {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if status >= 400:
        print(f"error ({status} {payload.get('code', '')}): {payload.get('message', payload)}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(payload, indent=2) if args.json else format_rollout(payload))
    return EXIT_OK


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def rollout_lines(s: dict[str, Any]) -> list[str]:
    if not s.get("exists"):
        return [f"no rollout has been started (stable: {s.get('model_stable', '?')})"]
    stages = s.get("stages", [])
    index = int(s.get("stage", 0))
    lines = [
        f"rollout of {s['candidate']} (stable {s['stable']}): {s['status']}"
        + (" — HELD" if s.get("held") else "")
        + f"; breaches {s.get('breaches', 0)} of {s.get('max_breaches', 0)} (on breach: {s.get('on_breach', '')})"
    ]
    for i, stage in enumerate(stages):
        share = f"{stage['weight']} %" if stage.get("weight") else f"mirror {float(stage.get('mirror', 0)):.0%}"
        mark = ">" if i == index and s["status"] in ("running", "paused") else ("+" if i < index else " ")
        minimum = float(stage.get("min_duration_s", 0))
        spent = f"{float(s.get('in_stage_s', 0)):.0f}s of {minimum:.0f}s" if i == index else f"{minimum:.0f}s"
        lines.append(f"  {mark} {stage['name']:<16} {share:<12} {spent}")
    if s.get("waiting_for"):
        lines.append(f"  waiting: {s['waiting_for']}")
    for gate in s.get("gates", []):
        lines.append(
            f"  gate {gate['gate']}: {gate['outcome']} (value {_number(gate.get('value'))}, "
            f"threshold {_number(gate.get('threshold'))}) {gate.get('reason', '')}"
        )
    if s.get("last_move"):
        lines.append(f"  last move: {s['last_move']}")
    return lines


def format_rollout(s: dict[str, Any]) -> str:
    return "\n".join(rollout_lines(s))


def _watch(client: ControlClient, json_out: bool) -> int:
    screen = Screen(sys.stdout, sys.stdout.isatty() and not json_out)
    try:
        while True:
            status, payload = client.call("GET", "/v1/rollout")
            if status >= 400:
                print(f"error ({status}): {payload.get('message', payload)}", file=sys.stderr)
                return EXIT_FAILED
            if json_out:
                print(json.dumps(payload), flush=True)
            else:
                screen.show([(line, line) for line in rollout_lines(payload)])  # off a terminal: each new line once
            time.sleep(1.0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: the agent stopped answering: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        screen.close()
