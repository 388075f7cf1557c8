"""`rollback-agent`: run the sidecar, or talk to a running one through its control API.

Exit codes: 0 done; 1 the agent refused or could not complete the operation; 2 bad usage or configuration;
3 the agent could not be reached; 4 (run) the state store is missing, damaged or foreign: see `state`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from agent import __version__
from agent.config import AgentConfig, ConfigError, load_config
from agent.envoy_bootstrap import render_bootstrap

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STATE_REFUSED = 0, 1, 2, 3, 4
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command ended by SIGPIPE
EXIT_CODES_HELP = (
    "exit codes: 0 done; 1 the agent refused or could not complete it (or a check failed); 2 bad usage or "
    "configuration; 3 the agent could not be reached (or the URL is not its control API); 4 the state store is "
    "missing, damaged or foreign (see `state`); 141 the output was closed early (e.g. `| head`)"
)


def _log_level(value: str) -> str:
    from agent.log_setup import LogSettingsError, parse_level

    try:
        return parse_level(value, "")
    except LogSettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None


def _duration(value: str) -> float:
    from agent.domain.durations import duration_seconds

    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {value!r} must be more than 0")
    return seconds


def _with_exit_codes(parser: argparse.ArgumentParser) -> None:
    """Every command's --help ends with the exit codes."""
    parser.epilog = parser.epilog or EXIT_CODES_HELP
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_exit_codes(child)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-agent",
        description="Sidecar that puts model traffic back on the last verified-stable version when a new one degrades.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the sidecar (xDS control plane, health, metrics, control API)")
    run.add_argument("--config", "-c", type=Path, required=True, help="agent config file (YAML)")
    run.add_argument("--dry-run", action="store_true", help="decide and record, but move no traffic (no xDS)")
    run.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: $ROLLBACK_AGENT_LOG_LEVEL, else log.level, else INFO)",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text, or json: one event per line (default: $ROLLBACK_AGENT_LOG_FORMAT, else log.format, else text)",
    )

    check = sub.add_parser("check-config", help="validate an agent config file and exit")
    check.add_argument("config", type=Path, help="agent config file (YAML)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    boot = sub.add_parser("bootstrap", help="print the Envoy bootstrap (YAML) that connects Envoy to this agent")
    boot.add_argument("--config", "-c", type=Path, required=True, help="agent config file (YAML)")
    boot.add_argument("--node-id", default=None, help="Envoy node id (default: MODEL-sidecar, or $HOSTNAME)")
    boot.add_argument("--xds-host", default=None, help="address Envoy dials for xDS (default: the xds.address)")
    boot.add_argument("--output", "-o", type=Path, help="write to this file (atomically) instead of stdout")

    rules = sub.add_parser("rules", help="rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    rules_check = rules_sub.add_parser("check", help="validate rule files: every error names the file and line")
    rules_check.add_argument("files", nargs="+", type=Path, metavar="FILE", help="rule files (YAML)")
    rules_check.add_argument("--tier", choices=["critical", "experimental"], help="resolve against this tier only")
    rules_check.add_argument("--tiers-dir", type=Path, help="tier profiles (default: the shipped rules/tiers)")
    rules_check.add_argument("--json", action="store_true", help="print the result as JSON")

    def offline(name: str, help_text: str, parent: Any = sub, fleet: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        p.add_argument("--config", "-c", type=Path, required=not fleet, help="agent config file (state dir, registry)")
        if fleet:
            p.add_argument(
                "--fleet-dsn",
                metavar="DSN",
                help="read the fleet audit store (PostgreSQL) instead of the local state: every pod's trail "
                "(--config is then optional: it adds the registry's provenance)",
            )
        return p

    versions = offline("versions", "list the model's versions (registry + runtime statuses)")
    versions.add_argument("action", nargs="?", choices=["show"], help="show one version in full")
    versions.add_argument("tag", nargs="?", help="the version to show")
    versions.add_argument("--json", action="store_true", help="print the versions as JSON")
    history = offline("history", "traffic changes, or what served at a moment (--at)", fleet=True)
    history.add_argument("--model", help="with --fleet-dsn: only this model's pods")
    history.add_argument("--at", help="RFC 3339 time or an age such as 2h, 7d: which version(s) served then")
    history.add_argument("--since", help="only changes since (RFC 3339 or an age)")
    history.add_argument("--json", action="store_true", help="print the changes (or the state at --at) as JSON")
    report = offline("report", "compliance report: versions, provenance, evidence, every rollback and why", fleet=True)
    report.add_argument("--model", help="the model (default: the config's)")
    report.add_argument("--since", help="RFC 3339 time or an age such as 30d")
    report.add_argument(
        "--format",
        choices=["md", "html", "pdf", "json"],
        default="md",
        help="output format (default: md); pdf is the html page printed by Chromium and needs --output",
    )
    report.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    report.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="the jinja2 page template of html and pdf (default: the shipped one; docs/registry.md)",
    )
    key_file_help = (
        "a key to check signatures with (HMAC secret, or Ed25519 public/private PEM); repeatable; KEY_ID "
        "defaults to the key's fingerprint id (default: audit.signing of the config)"
    )
    report.add_argument("--key-file", action="append", default=[], metavar="[KEY_ID=]PATH", help=key_file_help)
    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    verify = offline(
        "verify",
        "check the hash chain (any edited, removed or reordered record), the signatures, the anchors, and that "
        "every decision has its outcome",
        audit_sub,
        fleet=True,
    )
    verify.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="[KEY_ID=]PATH",
        help=key_file_help,
    )
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="record SEQ must exist with this hash (hex), e.g. from the head metric or log; repeatable",
    )
    verify.add_argument("--min-seq", type=int, default=0, metavar="N", help="the trail must reach record N")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    quarantine = sub.add_parser("quarantine", help="version quarantine")
    quarantine_sub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="SUBCOMMAND")
    clear = offline("clear", "end the quarantine of a version (operator action, audited)", quarantine_sub)
    clear.add_argument("tag", help="the quarantined version")
    clear.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    clear.add_argument("--actor", default="", help="your name, recorded beside the local user (unverified)")
    add = offline("add", "quarantine a version: no traffic increase, never a rollback target (audited)", quarantine_sub)
    add.add_argument("tag", help="the version to quarantine")
    add.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    add.add_argument("--actor", default="", help="your name, recorded beside the local user (unverified)")
    state = sub.add_parser("state", help="the state store: check, back up, and explicit recovery")
    state_sub = state.add_subparsers(dest="state_command", required=True, metavar="SUBCOMMAND")
    state_check = offline(
        "check", "check the state store as the agent does at start (exit 4 when it would refuse)", state_sub
    )
    state_check.add_argument("--json", action="store_true", help="print the result as JSON")
    backup = offline("backup", "write a consistent copy of the state store", state_sub)
    backup.add_argument("file", type=Path, help="where to write the copy")
    init = offline("init", "start a new state store (the old files are moved aside, never deleted); audited", state_sub)
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-envoy", action="store_true", help="start on the split the local Envoy serves now")
    source.add_argument("--from-config", action="store_true", help="start on the config's initial weights")
    init.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    init.add_argument("--actor", default="", help="your name, recorded beside the local user (unverified)")
    init.add_argument(
        "--force", action="store_true", help="--from-config even though Envoy serves a different split now"
    )
    restore = offline(
        "restore", "put a verified backup in place (the current files are moved aside); audited", state_sub
    )
    restore.add_argument("file", type=Path, help="a backup written by `state backup`")
    restore.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    restore.add_argument("--actor", default="", help="your name, recorded beside the local user (unverified)")

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        client_options(p)
        return p

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", type=Path, help="agent config file: where the control API listens")
        p.add_argument("--url", help="control API base URL (default: from --config, else http://127.0.0.1:9091)")
        p.add_argument(
            "--token-file", type=Path, help="bearer token file (default: from config, else $ROLLBACK_AGENT_TOKEN)"
        )
        p.add_argument(
            "--timeout", type=_duration, default=30.0, help="how long to wait for the agent: 30s, 2m or seconds"
        )
        p.add_argument("--json", action="store_true", help="print the response as JSON (the proto JSON mapping)")

    from agent.cli_rollout import add_rollout_commands

    add_rollout_commands(sub, client_options)
    from agent.cli_leases import add_lease_commands

    add_lease_commands(sub, client_options)
    st = client("status", "show versions, weights, and what each Envoy ACKed")
    st.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="redraw every --interval seconds, with the latest rollback's progress, until Ctrl-C (exit 130)",
    )
    st.add_argument(
        "--interval", type=_duration, default=1.0, help="time between redraws with --watch: 1s, 500ms (default 1s)"
    )
    sw = client("set-weights", "set the traffic split, e.g. set-weights v1=90 v2=10")
    sw.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT", help="the new weight of each version")
    sw.add_argument("--reason", default="set by operator", help="why (recorded in the audit trail)")
    sw.add_argument(
        "--force", action="store_true", help="allow traffic to a failed, quarantined or held version (recorded)"
    )
    rb = client("rollback", "send all traffic to the stable version (or --to VERSION)")
    rb.add_argument("--to", dest="to_version", default="", help="the version to roll back to (default: stable)")
    rb.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    rb.add_argument("--force", action="store_true", help="role admin: --to a failed or quarantined version (recorded)")
    rb.add_argument(
        "--wait",
        action="store_true",
        help="follow the procedure to its outcome (phases, verification window): exit 0 only when the target was "
        "verified (recovered), 1 for any other outcome, 130 on Ctrl-C (the procedure goes on)",
    )
    for name, text in (("pause", "pause automatic rollback for this model"), ("resume", "resume automatic rollback")):
        p = client(name, text)
        p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    hold = client("hold", "hold a version: no weight increase for it until released (audited)")
    hold.add_argument("version", help="the version to hold")
    hold.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    release = client("release", "release the hold on a version (audited)")
    release.add_argument("version", help="the held version")
    release.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    drill = client(
        "drill",
        "run a rollback drill against the running agent: inject a fault into the candidate, measure detection, "
        "decision, switch and verification, restore the split, write a report (docs/drills.md)",
    )
    drill.add_argument(
        "--fault",
        choices=["errors", "latency", "confidence", "accuracy", "drift", "hook"],
        help="the reference server's fault to inject, or hook (default: drills.fault, else errors)",
    )
    drill.add_argument(
        "--hook", metavar="CMD", help="a command that injects (CMD inject) and clears (CMD clear) the fault"
    )
    drill.add_argument("--version", dest="drill_version", help="the version to drill (default: the serving candidate)")
    drill.add_argument(
        "--report-dir", type=Path, help="where the report goes (default: drills.report_dir, STATE_DIR/drills)"
    )
    drill.add_argument(
        "--detect-timeout", type=_duration, help="fault -> rollback deadline: 60s, 2m or seconds (default: drills)"
    )
    token = sub.add_parser("token", help="control API tokens (control.tokens_file)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")
    token_sub.add_parser("hash", help="print the sha256 of a token read from stdin, for control.tokens_file")
    token_check = token_sub.add_parser("check", help="validate a tokens file: every error names the file and line")
    token_check.add_argument("file", type=Path, help="the tokens file (YAML)")
    completion = sub.add_parser("completion", help="print a shell completion script (source it from your shell rc)")
    completion.add_argument("shell", choices=["bash"], help="the shell")
    _with_exit_codes(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`rollback-agent history | head -1`): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 128 + 2


def _dispatch(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "completion":
            from agent.cli_completion import bash_completion

            print(bash_completion(parser), end="")
            return EXIT_OK
        if args.command == "check-config":
            if args.json:
                return _check_config_json(args.config)
            config = load_config(args.config)
            print(f"{args.config}: ok (model {config.model.name}, {len(config.versions)} versions)")
            for version in config.versions:
                names = ", ".join(f"{k}={v}" for k, v in version.metric_names.metric_names().items()) or "none"
                print(f"  {version.tag}: server {version.server.profile}, metrics {version.metrics_url} ({names})")
            return EXIT_OK
        if args.command == "bootstrap":
            return _bootstrap(args)
        if args.command == "rules":
            return _rules_check(args)
        if args.command == "token":
            return _token(args)
        if getattr(args, "fleet_dsn", None):
            from agent.cli_fleet import run_fleet

            return run_fleet(args)
        if args.command in ("history", "report", "audit") and args.config is None:
            raise ConfigError("--config is required (or --fleet-dsn DSN to read the fleet audit store)")
        if args.command in ("versions", "history", "report", "audit", "quarantine"):
            from agent.cli_records import run_offline

            return asyncio.run(run_offline(args))
        if args.command == "state":
            from agent.cli_state import run_state

            return asyncio.run(run_state(args))
        if args.command == "drill":
            from agent.cli_drill import run_drill

            return run_drill(args)
        if args.command == "rollout":
            from agent.cli_rollout import run_rollout

            return run_rollout(args)
        if args.command in ("lease", "pin", "unpin"):
            from agent.cli_leases import run_leases

            return run_leases(args)
        return _client(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from agent.log_buffer import RecentLogHandler
    from agent.log_setup import ContextFilter, LogSettingsError, configure_logging, parse_format, parse_level
    from agent.ports.store import StateRefusedError
    from agent.runtime import StartupError, run_agent

    config = load_config(args.config)
    try:  # the command line, then the environment, then the config file
        level = args.log_level or parse_level(
            os.environ.get("ROLLBACK_AGENT_LOG_LEVEL") or config.log.level, "ROLLBACK_AGENT_LOG_LEVEL"
        )
        fmt = args.log_format or parse_format(
            os.environ.get("ROLLBACK_AGENT_LOG_FORMAT") or config.log.format, "ROLLBACK_AGENT_LOG_FORMAT"
        )
    except LogSettingsError as exc:
        raise ConfigError(str(exc)) from None
    configure_logging(level, fmt)
    log_tail = RecentLogHandler()
    log_tail.addFilter(ContextFilter())
    logging.getLogger().addHandler(log_tail)
    try:
        return asyncio.run(run_agent(config, dry_run=args.dry_run, log_tail=log_tail))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StateRefusedError as exc:
        logging.getLogger("agent").critical("state refused: %s", exc)
        print(f"error: state refused: {exc}", file=sys.stderr)
        return EXIT_STATE_REFUSED


def _check_config_json(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(json.dumps({"file": str(path), "ok": False, "errors": str(exc).splitlines()}, indent=2))
        return EXIT_USAGE
    summary = {"file": str(path), "ok": True, "model": config.model.name, "versions": config.tags}
    print(json.dumps(summary, indent=2))
    return EXIT_OK


class _EnvoyYamlDumper(yaml.SafeDumper):
    """Quotes every string Envoy's YAML 1.1 reader would take for a boolean (y, n, yes, off...): PyYAML leaves y/n
    bare, and a node id `n` would otherwise reach Envoy as false."""


def _quote_ambiguous(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value.lower() in {"y", "n", "yes", "no", "on", "off", "true", "false", "~", "null"} else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_EnvoyYamlDumper.add_representer(str, _quote_ambiguous)


def _bootstrap(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    node_id = args.node_id or os.environ.get("HOSTNAME") or f"{config.model.name}-sidecar"
    bootstrap = render_bootstrap(
        node_id=node_id,
        node_cluster=config.model.name,
        xds_host=args.xds_host or config.xds.address,
        xds_port=config.xds.port,
        admin_host=config.envoy.admin.address,
        admin_port=config.envoy.admin.port,
    )
    text = yaml.dump(bootstrap, Dumper=_EnvoyYamlDumper, sort_keys=False)
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    partial = args.output.with_name(args.output.name + ".tmp")
    try:
        partial.write_text(text)
        partial.replace(args.output)  # Envoy never sees a half-written bootstrap
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"bootstrap for node {node_id} written to {args.output}")
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    from agent.http.identities import token_sha256
    from agent.http.tokens_file import TokensFileError, load_tokens_file

    if args.token_command == "check":
        try:
            identities = load_tokens_file(args.file)
        except TokensFileError as exc:
            print(exc, file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.file}: ok ({', '.join(f'{i.name} ({i.role.value})' for i in identities)})")
        return EXIT_OK
    token = sys.stdin.buffer.read(64 * 1024).strip()
    if not token:
        print('error: no token on stdin (e.g. printf %s "$TOKEN" | rollback-agent token hash)', file=sys.stderr)
        return EXIT_USAGE
    if len(token) < 16:
        print("warning: a token shorter than 16 characters is easy to guess", file=sys.stderr)
    print(token_sha256(token))
    return EXIT_OK


def _rules_check(args: argparse.Namespace) -> int:
    from agent.rollout.plan import split_plan_files
    from agent.triggers.loader import check_rule_files

    # Rollout plans kept beside the rules (rules/tiers/rollout-*.yaml) are checked as plans.
    rule_files, errors = split_plan_files([Path(f) for f in args.files])
    errors += check_rule_files(rule_files, tier=args.tier, tiers_dir=args.tiers_dir)
    if args.json:
        found = [{"file": e.source, "line": e.line, "message": e.message} for e in errors]
        print(json.dumps({"files": [str(f) for f in args.files], "ok": not errors, "errors": found}, indent=2))
        return EXIT_FAILED if errors else EXIT_OK
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return EXIT_FAILED
    print(f"{len(args.files)} rule file(s) ok")
    return EXIT_OK


class NotControlApiError(urllib.error.URLError):
    """The URL answered, but not as the agent's control API (a URLError, so every caller's "cannot reach the
    agent" handling reports it, exit 3)."""


def _json_object(payload: bytes, status: int, url: str, content_type: str) -> dict[str, Any]:
    try:
        parsed = json.loads(payload or b"{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise NotControlApiError(
            f"{url} answered HTTP {status} ({content_type or 'no content type'}), which is not the agent's control "
            "API: check --url or control.listen"
        )
    return parsed


class ControlClient:
    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                kind = response.headers.get("Content-Type", "")
                return response.status, _json_object(response.read(), response.status, request.full_url, kind)
        except urllib.error.HTTPError as exc:
            kind = exc.headers.get("Content-Type", "") if exc.headers else ""
            return exc.code, _json_object(exc.read(), exc.code, request.full_url, kind)


def _client_settings(args: argparse.Namespace) -> tuple[str, str]:
    config: AgentConfig | None = load_config(args.config) if args.config else None
    url = args.url
    if url is None:
        listen = config.control.listen if config else None
        url = f"http://{listen.address}:{listen.port}" if listen else "http://127.0.0.1:9091"
    token_file = args.token_file or (config.control.token_file if config else None)
    env_name = config.control.token_env if config else "ROLLBACK_AGENT_TOKEN"
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read the token: {exc.strerror}") from None
    else:
        token = os.environ.get(env_name, "").strip()
    if not token:
        raise ConfigError(f"no control API token: pass --token-file or set {env_name}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not the control API's base URL (e.g. http://127.0.0.1:9091)")
    return url, token


def _parse_weights(items: Sequence[str]) -> list[dict[str, Any]]:
    weights = []
    for item in items:
        version, sep, value = item.partition("=")
        if not sep or not version or not value.isdigit():
            raise ConfigError(f"weight {item!r} must look like VERSION=WEIGHT, e.g. v1=90")
        weights.append({"version": version, "weight": int(value)})
    return weights


def _client(args: argparse.Namespace) -> int:
    url, token = _client_settings(args)
    client = ControlClient(url, token, args.timeout)
    calls: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "status": ("GET", "/v1/status", None),
        "set-weights": (
            "POST",
            "/v1/traffic",
            {
                "weights": _parse_weights(getattr(args, "weights", []) or []),
                "reason": getattr(args, "reason", ""),
                "force": bool(getattr(args, "force", False)),
                "actor": _claimed_name(),
            },
        ),
        "rollback": (
            "POST",
            "/v1/rollback",
            {
                "to_version": getattr(args, "to_version", ""),
                "reason": getattr(args, "reason", ""),
                "force": bool(getattr(args, "force", False)),
                "actor": _claimed_name(),
            },
        ),
        "pause": ("POST", "/v1/pause", {"reason": getattr(args, "reason", ""), "actor": _claimed_name()}),
        "resume": ("POST", "/v1/resume", {"reason": getattr(args, "reason", ""), "actor": _claimed_name()}),
        "hold": (
            "POST",
            "/v1/hold",
            {"version": getattr(args, "version", ""), "reason": getattr(args, "reason", ""), "actor": _claimed_name()},
        ),
        "release": (
            "POST",
            "/v1/release",
            {"version": getattr(args, "version", ""), "reason": getattr(args, "reason", ""), "actor": _claimed_name()},
        ),
    }
    if args.command == "status" and args.watch:
        from agent.cli_watch import watch_status

        return watch_status(client, max(0.2, args.interval), json_out=args.json)
    method, path, body = calls[args.command]
    try:
        status, payload = client.call(method, path, body)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach the agent at {url}: {reason}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.command == "rollback" and args.wait and payload.get("rollback_id"):
        from agent.cli_watch import wait_for_rollback

        if not args.json:
            print(format_change(payload), flush=True)
        return wait_for_rollback(client, payload["rollback_id"], json_out=args.json)
    if status >= 400:
        print(f"error ({status} {payload.get('code', '')}): {payload.get('message', payload)}", file=sys.stderr)
        return EXIT_FAILED
    if args.command == "rollback" and args.wait and payload.get("outcome") == "suppressed":
        print(format_change(payload), file=sys.stderr)
        return EXIT_FAILED
    rollout = _rollout_of(client) if args.command == "status" else None
    if rollout is not None:
        payload["rollout"] = rollout
    if args.json:
        print(json.dumps(payload, indent=2))
    elif args.command in ("status", "pause", "resume", "hold", "release"):
        print(format_status(payload))
        if rollout is not None:
            from agent.cli_rollout import format_rollout

            print(format_rollout(rollout))
    else:
        print(format_change(payload))
    return EXIT_OK


def _rollout_of(client: ControlClient) -> dict[str, Any] | None:
    """The rollout for `status`, when one was started (an agent without rollouts, or an error: none)."""
    try:
        status, payload = client.call("GET", "/v1/rollout")
    except (urllib.error.URLError, OSError):
        return None
    return payload if status == 200 and payload.get("exists") else None


def _claimed_name() -> str:
    """The CLI user's login, sent as the request's claimed name (the agent records the token's identity)."""
    return os.environ.get("USER", "")


def _weights_text(policy: dict[str, Any]) -> str:
    return " ".join(f"{w.get('version')}={w.get('weight', 0)}" for w in policy.get("weights", []))


def format_change(payload: dict[str, Any]) -> str:
    policy = payload.get("policy", {})
    acks = payload.get("acks", [])
    verb = "moved" if payload.get("changed") else "unchanged (already served)"
    nodes = ", ".join(a.get("node_id", "?") for a in acks) or "none"
    lines = []
    if payload.get("rollback_id") or payload.get("outcome"):
        lines.append(
            f"rollback {payload.get('rollback_id') or '-'}: {payload.get('outcome', '')}: {payload.get('detail', '')}"
        )
    lines.append(f"traffic {verb}: {_weights_text(policy)} (revision {policy.get('revision', '?')})")
    if payload.get("route_version"):
        lines.append(
            f"route version {payload.get('route_version', '')} ACKed by {nodes} in "
            f"{float(payload.get('decision_to_ack_ms', 0.0)):.1f} ms"
        )
    return "\n".join(lines)


_HEALTH_LABELS = {"ready": "ready", "golden_inference": "golden", "feature_pipeline": "pipeline"}


def _version_health_lines(v: dict[str, Any]) -> list[str]:
    """The agent's probes of one version: readiness and the last golden result, each with its age."""
    checks = []
    for h in v.get("health", []):
        label = _HEALTH_LABELS.get(h.get("name", ""), h.get("name", ""))
        verdict = "ok" if h.get("ok") else f"FAILED ({h.get('detail', '')})"
        checks.append(f"{label} {verdict} {float(h.get('age_s', 0.0)):.1f}s ago")
    lines = ["; ".join(checks)] if checks else []
    if v.get("warm_up_unavailable"):
        lines.append(f"no warm-up: {v['warm_up_unavailable']}")
    return lines


def format_status(s: dict[str, Any]) -> str:
    lines = [
        f"model {s.get('model')} (tier {s.get('tier')})  ready: {'yes' if s.get('ready') else 'NO'}"
        f"  automation: {'PAUSED (' + s.get('pause_reason', '') + ')' if s.get('paused') else 'on'}",
        f"desired revision {s.get('desired', {}).get('revision', '?')} by {s.get('desired', {}).get('actor', '?')}: "
        f"{s.get('desired', {}).get('reason', '')}",
        "",
        f"{'VERSION':<14}{'ROLE':<11}{'STATUS':<13}{'DESIRED':>8}{'SERVED':>8}  ENDPOINT",
    ]
    for v in s.get("versions", []):
        lines.append(
            f"{v.get('version', ''):<14}{v.get('role', ''):<11}{v.get('registry_status', ''):<13}"
            f"{v.get('desired_weight', 0):>8}"
            f"{v.get('served_weight', 0):>8}  {v.get('endpoint', '')}"
        )
        lines.extend(f"{'':<14}{line}" for line in _version_health_lines(v))
    envoys = s.get("envoys", [])
    if s.get("store_id"):
        lines.append(f"state store {s['store_id']}, {s.get('audit_head_seq', '0')} audit records")
    if s.get("signal_source"):
        live = {"stream": "the access-log stream", "envoy": "Envoy's stats"}.get(s["signal_source"], s["signal_source"])
        lines.append(f"request figures from {live}")
    lines.append("")
    lines.append(f"route version {s.get('route_version', '')}; {len(envoys)} Envoy(s) connected")
    for e in envoys:
        acked = {t.get("type_url", "").rsplit(".", 1)[-1]: t for t in e.get("types", [])}
        route = acked.get("RouteConfiguration", {})
        lines.append(
            f"  {e.get('node_id') or e.get('stream_id')}: {'in sync' if e.get('in_sync') else 'NOT in sync'}; "
            f"route ACKed {route.get('acked_version', '-')} at {route.get('acked_at', '-')}"
        )
    rules = s.get("rules", [])
    if rules:
        lines.append("")
        lines.append(f"{'RULE':<22}{'VERSION':<10}{'STATE':<23}{'FOR':>7}  VERDICT")
        for r in sorted(rules, key=lambda r: (r.get("state") == "ok", r.get("rule", ""), r.get("version", ""))):
            lines.append(
                f"{r.get('rule', ''):<22}{r.get('version', ''):<10}{r.get('state', ''):<23}"
                f"{float(r.get('for_s', 0.0)):>6.0f}s  {r.get('reason', '')}"
            )
    if s.get("rules_error"):
        lines.append(f"rule file {s.get('rules_file')} REFUSED (previous rules in force): {s['rules_error']}")
    for version, why in sorted(s.get("holds", {}).items()):
        lines.append(f"HOLD {version}: {why}")
    for version, why in sorted(s.get("pins", {}).items()):
        lines.append(f"PIN {version}: {why} (no automatic rollback away from it)")
    if s.get("leases"):
        from agent.cli_leases import lease_lines

        lines.append("")
        lines.extend(lease_lines(s["leases"]))
    for escalation in s.get("escalations", [])[-5:]:
        lines.append(f"ESCALATION: {escalation}")
    for n in s.get("recent_nacks", [])[-5:]:
        lines.append(
            f"  NACK from {n.get('node_id')} at {n.get('at')}: {n.get('type_url', '').rsplit('.', 1)[-1]} "
            f"{n.get('rejected_version')} rejected, serving {n.get('serving_version') or '-'}: {n.get('error')}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
