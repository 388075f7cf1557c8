"""The CLI's offline commands: they read the state store and the registry directly, so they work (and can be
trusted) whether or not the agent runs: versions, history, report, audit verify, quarantine clear."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.adapters.pdf_printer import PdfError, print_pdf
from agent.adapters.registry.file_registry import FileRegistry, open_registry
from agent.adapters.registry.mlflow_registry import MlflowRegistry, MlflowRegistryError
from agent.adapters.store.signing import SigningKeyError, load_signer, load_verify_key, verify_key_of
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.cli_state import local_actor
from agent.config import AgentConfig, ConfigError, load_config
from agent.domain.audit_chain import Anchor
from agent.domain.audit_signing import RecordSigner, SignatureKey
from agent.domain.audit_verification import TrailVerdict, verify_trail
from agent.engine.reconcile import open_intents
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.registry import StatusTransitionError, UnknownVersionError, VersionStatus
from agent.ports.store import StateRefusedError
from agent.registry import RegistryFileError
from agent.reporting import (
    changes,
    compliance_report,
    format_changes,
    format_mirrors,
    format_rollouts,
    format_serving_state,
    format_version,
    format_versions,
    history_at,
    mirror_changes,
    parse_when,
    rollouts,
)
from agent.reporting.render_json import change_data, signature_data, version_data
from agent.reporting.render_template import TemplateError
from agent.reporting.when import format_time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


async def run_offline(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    db = config.state_dir / "state.db"
    if not db.exists():
        print(f"error: no state store at {db}: has the agent run with this config?", file=sys.stderr)
        return EXIT_USAGE
    signing = config.audit.signing
    try:
        # Records written offline (quarantine clear) are signed like the agent's own.
        signer = load_signer(signing.mode, signing.key_file, signing.key_id) if args.command == "quarantine" else None
        keys = verify_keys(args.key_file, config) if args.command in ("audit", "report") else None
        anchors = [Anchor.parse(text) for text in args.anchor] if args.command == "audit" else []
    except (SigningKeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = await SqliteStateStore.open_existing(db, model=config.model.name, signer=signer)
    except StateRefusedError as exc:
        print(f"error: {exc}; see `rollback-agent state check`", file=sys.stderr)
        return EXIT_FAILED
    try:
        registry: FileRegistry = (
            await MlflowRegistry.connect(config, config.registry.mlflow)
            if config.registry.mlflow is not None
            else await open_registry(config, config.registry_file)
        )
    except (RegistryFileError, MlflowRegistryError) as exc:
        await store.close()
        raise ConfigError(str(exc)) from None
    try:
        records = await store.audit_records()
        now = datetime.now(UTC)
        if args.command == "audit":
            verdict = verify_trail(records, keys, anchors, args.min_seq)
            problems = verdict.problems
            if args.json:
                return _verify_json(verdict.problems, open_intents(records), records, verdict, anchors)
            for line in verdict.signatures.run_lines():
                print(line)
            for problem in problems:
                print(f"BROKEN {problem}", file=sys.stderr)
            unclosed = open_intents(records)
            for intent in unclosed:
                print(
                    f"OPEN intent {intent.seq} ({intent.traffic_intent.intent_id}) has no outcome record "
                    f"(the agent is running it now, or has not restarted since it stopped)",
                    file=sys.stderr,
                )
            if problems:
                print(f"audit chain BROKEN: {len(problems)} problem(s) in {len(records)} records", file=sys.stderr)
                return EXIT_FAILED
            if unclosed:
                print(f"audit chain intact, but {len(unclosed)} decision(s) without an outcome", file=sys.stderr)
                return EXIT_FAILED
            intents = sum(1 for r in records if r.WhichOneof("event") == "traffic_intent")
            checks = (f", signatures valid ({', '.join(sorted(keys))})" if keys else "") + "".join(
                f", anchor {a.seq} matches" for a in anchors
            )
            print(
                f"audit chain intact: {len(records)} records, {intents} traffic decisions each with its outcome"
                f"{checks}, head {records[-1].seq if records else 0}:{records[-1].hash.hex() if records else '-'}"
            )
            return EXIT_OK
        if args.command == "versions":
            versions = await registry.list_versions()
            if args.action == "show":
                if not args.tag:
                    raise ConfigError("versions show needs a TAG")
                try:
                    version = await registry.get(args.tag)
                    print(json.dumps(version_data(version), indent=2) if args.json else format_version(version))
                except UnknownVersionError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return EXIT_FAILED
                return EXIT_OK
            policy = await store.load_policy()
            if args.json:
                print(json.dumps([version_data(v) for v in versions], indent=2))
                return EXIT_OK
            print(format_versions(versions, policy.as_dict() if policy else None))
            return EXIT_OK
        if args.command == "history":
            if args.at:
                state = history_at(
                    records,
                    parse_when(args.at, now),
                    registry_versions=await registry.list_versions(),
                    initial_policy=await store.first_policy(),
                    model=config.model.name,
                )
                print(_json(dataclasses.asdict(state)) if args.json else format_serving_state(state))
            else:
                since = parse_when(args.since, now) if args.since else None
                found = changes(records, since, model=config.model.name)
                moves = rollouts(records, since, model=config.model.name)
                mirrored = mirror_changes(records, since, model=config.model.name)
                text = format_changes(found) + (f"\n\n{format_rollouts(moves)}" if moves else "")
                text += f"\n\n{format_mirrors(mirrored)}" if mirrored else ""
                print(_json([change_data(c) for c in found]) if args.json else text)
            return EXIT_OK
        if args.command == "report":
            if args.format == "pdf" and args.output is None:
                print("error: report --format pdf needs --output FILE", file=sys.stderr)
                return EXIT_USAGE
            try:
                text = compliance_report(
                    args.model or config.model.name,
                    records,
                    await registry.list_versions(),
                    parse_when(args.since, now) if args.since else None,
                    "html" if args.format == "pdf" else args.format,
                    keys=keys,
                    template=args.template,
                )
                if args.format == "pdf":
                    size = await asyncio.to_thread(print_pdf, text, args.output)
                    print(f"report written to {args.output} (PDF, {size:,} bytes)")
                elif args.output:
                    args.output.write_text(text)
                    print(f"report written to {args.output}")
                else:
                    print(text)
            except (TemplateError, PdfError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_USAGE if isinstance(exc, TemplateError) else EXIT_FAILED
            return EXIT_OK
        if args.command == "quarantine" and args.quarantine_command == "add":
            actor = local_actor(args.actor)
            try:
                before = await registry.set_status(args.tag, VersionStatus.QUARANTINED, args.reason, actor)
            except (UnknownVersionError, StatusTransitionError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            await store.append(
                audit_pb2.VersionStatusChanged(
                    version=args.tag, from_status=before.value, to_status="quarantined", reason=args.reason
                ),
                actor,
            )
            print(
                f"{args.tag}: quarantined (was {before.value}); never a rollback target from now on; a running agent "
                "refuses it new traffic from its next registry read (within 30 s)"
            )
            return EXIT_OK
        if args.command == "quarantine":
            actor = local_actor(args.actor)
            try:
                restored = await registry.clear_quarantine(args.tag, actor, args.reason)
            except (UnknownVersionError, StatusTransitionError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            await store.append(
                audit_pb2.VersionStatusChanged(
                    version=args.tag, from_status="quarantined", to_status=restored.value, reason=args.reason
                ),
                actor,
            )
            print(f"{args.tag}: quarantine cleared, status {restored.value}")
            return EXIT_OK
        raise ConfigError(f"unknown command {args.command}")
    except ValueError as exc:  # parse_when and friends
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await registry.close()
        await store.close()


def _json(data: object) -> str:
    def default(value: object) -> object:
        return format_time(value) if isinstance(value, datetime) else str(value)

    return json.dumps(data, indent=2, default=default)


def _verify_json(
    problems: Sequence[str],
    unclosed: Sequence[audit_pb2.AuditRecord],
    records: Sequence[audit_pb2.AuditRecord],
    verdict: TrailVerdict,
    anchors: Sequence[Anchor],
) -> int:
    ok = not problems and not unclosed
    print(
        _json(
            {
                "ok": ok,
                "records": len(records),
                "traffic_decisions": sum(1 for r in records if r.WhichOneof("event") == "traffic_intent"),
                "head": {"seq": verdict.head_seq, "hash": verdict.head_hash},
                "problems": list(problems),
                "open_intents": [{"seq": r.seq, "intent_id": r.traffic_intent.intent_id} for r in unclosed],
                "signatures": signature_data(verdict.signatures),
                "anchors": [{"seq": a.seq, "hash": a.hash_hex} for a in anchors],
            }
        )
    )
    return EXIT_OK if ok else EXIT_FAILED


def verify_keys(key_files: Sequence[str], config: AgentConfig | None) -> dict[str, SignatureKey] | None:
    """The keys `audit verify` and `report` check signatures with: --key-file [KEY_ID=]PATH, else the config's
    audit.signing; None when there are none (signatures are then reported as not checked)."""
    keys: list[SignatureKey] = []
    for spec in key_files:
        key_id, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            key_id, path = "", spec
        keys.append(load_verify_key(Path(path), key_id or None))
    if not key_files and config is not None:
        signing = config.audit.signing
        signer: RecordSigner | None = load_signer(signing.mode, signing.key_file, signing.key_id)
        if signer is not None:
            keys.append(verify_key_of(signer))
    return {key.key_id: key for key in keys} or None
