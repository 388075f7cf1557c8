"""`rollback-agent lease acquire|renew|release|revoke|list` and `pin` / `unpin` (docs/leases.md).

A batch job takes a lease on the version it started with and sends `x-rollback-lease: <lease id>` on each request;
Envoy routes those requests to that version whatever the weights are, until the lease ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
from collections.abc import Callable
from typing import Any

from agent.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ControlClient,
    _claimed_name,
    _client_settings,
    _duration,
    format_status,
)


def add_lease_commands(sub: Any, client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    lease = sub.add_parser("lease", help="batch-job leases: pin a job's requests to the version it started with")
    actions = lease.add_subparsers(dest="lease_action", required=True, metavar="ACTION")
    acquire = actions.add_parser(
        "acquire", help="take a lease; prints its id (send it as x-rollback-lease on every request of the job)"
    )
    acquire.add_argument(
        "--version", dest="lease_version", metavar="VERSION", required=True, help="the version the job runs on"
    )
    acquire.add_argument("--ttl", type=_duration, required=True, help="how long it lasts: 2h, 30m, 1h30m or seconds")
    acquire.add_argument("--holder", required=True, help="who holds it (the job's name), shown in list and metrics")
    acquire.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    acquire.add_argument(
        "--force", action="store_true", help="role admin: a lease on a failed, quarantined or held version (recorded)"
    )
    renew = actions.add_parser("renew", help="the lease now ends TTL from now (audited)")
    renew.add_argument("lease_id", help="the lease id (l-...)")
    renew.add_argument("--ttl", type=_duration, required=True, help="from now: 2h, 30m or seconds")
    renew.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    renew.add_argument("--force", action="store_true", help="role admin: renew a lease on a quarantined version")
    release = actions.add_parser("release", help="end a lease: its requests get 410 from now on (audited)")
    release.add_argument("lease_id", help="the lease id (l-...)")
    release.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    revoke = actions.add_parser(
        "revoke", help="role admin: force every live lease of a version off, e.g. quarantined for safety (audited)"
    )
    revoke.add_argument(
        "--version", dest="lease_version", metavar="VERSION", required=True, help="the version whose leases end"
    )
    revoke.add_argument("--reason", required=True, help="why (recorded in the audit trail; the holders see it)")
    revoke.add_argument("--force", action="store_true", required=True, help="required: this breaks their batches")
    listing = actions.add_parser("list", help="live leases, then the recently ended with how and why they ended")
    for parser in (acquire, renew, release, revoke, listing):
        client_options(parser)
    pin = sub.add_parser("pin", help="automation moves no traffic away from VERSION until unpinned (audited)")
    pin.add_argument("version", help="a version that serves")
    pin.add_argument("--reason", required=True, help="why (recorded in the audit trail, shown in status)")
    client_options(pin)
    unpin = sub.add_parser("unpin", help="end a pin (audited)")
    unpin.add_argument("version", help="the pinned version")
    unpin.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    client_options(unpin)


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    claimed = _claimed_name()
    if args.command in ("pin", "unpin"):
        return "POST", f"/v1/{args.command}", {"version": args.version, "reason": args.reason, "actor": claimed}
    action = args.lease_action
    if action == "list":
        return "GET", "/v1/leases", None
    body: dict[str, Any] = {"reason": args.reason, "actor": claimed}
    if action == "acquire":
        body |= {"version": args.lease_version, "holder": args.holder, "ttl_s": args.ttl, "force": args.force}
        return "POST", "/v1/leases", body
    if action == "revoke":
        return "POST", "/v1/leases/revoke", body | {"version": args.lease_version, "force": True}
    lease_id = args.lease_id
    if action == "renew":
        return "POST", f"/v1/leases/{lease_id}/renew", body | {"ttl_s": args.ttl, "force": args.force}
    return "POST", f"/v1/leases/{lease_id}/release", body


def run_leases(args: argparse.Namespace) -> int:
    url, token = _client_settings(args)
    client = ControlClient(url, token, args.timeout)
    method, path, body = _request(args)
    try:
        status, payload = client.call(method, path, body)
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: cannot reach the agent at {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if status >= 400:
        print(f"error ({status} {payload.get('code', '')}): {payload.get('message', payload)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(payload, indent=2))
    elif args.command in ("pin", "unpin"):
        print(format_status(payload))
    elif "leases" in payload or args.lease_action in ("list", "revoke"):
        print(format_leases(payload.get("leases", [])))
    else:
        print(format_leases([payload]))
        if args.lease_action == "acquire":
            print(f"send '{payload.get('header', 'x-rollback-lease')}: {payload.get('lease_id')}' on every request")
    return EXIT_OK


def lease_lines(leases: list[dict[str, Any]], now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    if not leases:
        return ["no leases"]
    lines = [f"{'LEASE':<20}{'VERSION':<10}{'HOLDER':<24}{'STATE':<13}WHEN"]
    for x in leases:
        state = x.get("state", "")
        if state == "active":
            when = f"expires in {max(0.0, float(x.get('expires_at', 0)) - now):.0f}s"
        else:
            ago = max(0.0, now - float(x.get("ended_at", 0) or x.get("expires_at", 0)))
            when = f"{ago:.0f}s ago: {x.get('end_reason', '')}"
        lines.append(f"{x.get('lease_id', ''):<20}{x.get('version', ''):<10}{x.get('holder', ''):<24}{state:<13}{when}")
    return lines


def format_leases(leases: list[dict[str, Any]]) -> str:
    return "\n".join(lease_lines(leases))
