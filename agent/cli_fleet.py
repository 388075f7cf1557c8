"""The CLI's fleet commands: `history`, `audit verify` and `report` with `--fleet-dsn`, read from the fleet audit
store (PostgreSQL) that every agent ships its trail to. Each pod's store is a chain of its own: it is verified and
replayed on its own, and the answers are put side by side. `--config` is optional: it adds the registry's
provenance of the versions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from agent.adapters.fleet.postgres_store import FleetChain, FleetError, FleetReader, FleetStoreRow
from agent.adapters.registry.file_registry import open_registry
from agent.adapters.store.signing import SigningKeyError
from agent.cli_records import verify_keys
from agent.config import ConfigError, load_config
from agent.domain.audit_signing import SignatureKey
from agent.domain.audit_verification import verify_trail
from agent.domain.records import policy_from_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.reconcile import open_intents
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.registry import RegistryFileError
from agent.registry.model import VersionSpec
from agent.reporting import (
    changes,
    compliance_report,
    format_changes,
    format_serving_state,
    format_time,
    history_at,
    parse_when,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_fleet(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "json", False):
            raise ConfigError("--json reads one pod's state; with --fleet-dsn use `report --format json`")
        if args.command == "audit" and (args.anchor or args.min_seq):
            raise ConfigError(
                "--anchor and --min-seq check one pod's trail: use them without --fleet-dsn on that pod's state "
                "(audit verify --fleet-dsn prints each pod's head, to use as an anchor there)"
            )
        versions = _registry_versions(args)
        keys = (
            verify_keys(args.key_file, load_config(args.config) if args.config is not None else None)
            if args.command in ("audit", "report")
            else None
        )
        with FleetReader.open(args.fleet_dsn) as reader:
            if args.command == "history":
                return _history(args, reader, versions)
            if args.command == "audit":
                return _verify(reader, keys)
            if args.command == "report":
                return _report(args, reader, versions, keys)
        raise ConfigError(f"--fleet-dsn does not apply to {args.command}")
    except FleetError as exc:
        print(f"error: fleet store: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (SigningKeyError, ValueError) as exc:  # a key file; parse_when and friends
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):  # the driver is imported lazily: no class to name here
            raise
        print(f"error: fleet store: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED


def _registry_versions(args: argparse.Namespace) -> list[VersionSpec]:
    if args.config is None:
        return []
    config = load_config(args.config)

    async def read() -> list[VersionSpec]:
        try:
            registry = await open_registry(config, config.registry_file)
        except RegistryFileError as exc:
            raise ConfigError(str(exc)) from None
        try:
            return list(await registry.list_versions())
        finally:
            await registry.close()

    return asyncio.run(read())


def _model(args: argparse.Namespace) -> str | None:
    if args.model:
        return str(args.model)
    return load_config(args.config).model.name if args.config is not None else None


def _store_line(store: FleetStoreRow) -> str:
    return (
        f"pod {store.pod} (model {store.model}, store {store.store_id}): {store.records} records shipped, "
        f"head {store.head_seq}, last seen {format_time(store.last_seen)}"
    )


def initial_policy(records: Sequence[audit_pb2.AuditRecord]) -> TrafficPolicy | None:
    """The policy the store started on: its first StateEstablished record (the fleet store has no policy table)."""
    for record in records:
        if record.WhichOneof("event") == "state_established" and record.state_established.HasField("policy"):
            return policy_from_pb(record.state_established.policy)
    return None


def _history(args: argparse.Namespace, reader: FleetReader, versions: list[VersionSpec]) -> int:
    model = _model(args)
    stores = reader.stores(model)
    now = datetime.now(UTC)
    where = f"model {model}" if model else "every model"
    if not stores:
        print(f"no store of {where} in the fleet store", file=sys.stderr)
        return EXIT_FAILED
    at = parse_when(args.at, now) if args.at else None
    since = parse_when(args.since, now) if args.since else None
    if at is not None:
        print(f"Fleet: {where}, {len(stores)} pod(s), served at {format_time(at)}\n")
    for store in stores:
        chain = reader.chain(store)
        print(f"== {_store_line(store)}")
        if at is not None:
            state = history_at(
                chain.records,
                at,
                registry_versions=versions,
                initial_policy=initial_policy(chain.records),
                model=store.model,
            )
            print(format_serving_state(state))
        else:
            print(format_changes(changes(chain.records, since, model=store.model)))
        print()
    return EXIT_OK


def gaps(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Missing ranges (first, last) in 1..max(seqs), for seqs in ascending order."""
    missing: list[tuple[int, int]] = []
    expected = 1
    for seq in seqs:
        if seq > expected:
            missing.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return missing


def _verify_store(chain: FleetChain, keys: Mapping[str, SignatureKey] | None) -> bool:
    store, records = chain.store, chain.records
    verdict = verify_trail(records, keys)
    problems = verdict.problems + chain.column_problems
    missing = gaps([r.seq for r in records])
    head_text = f"head {verdict.head_seq}:{verdict.head_hash}" if records else "no records"
    line = f"{_store_line(store)}; {head_text}; {verdict.signatures.summary()}"
    if missing:
        ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in missing)
        problems.append(f"records missing from the fleet store: {ranges}")
    runs = [f"  {run}" for run in verdict.signatures.run_lines()]
    if problems:
        print(f"BROKEN {line}", file=sys.stderr)
        print("\n".join(runs + [f"  {problem}" for problem in problems]), file=sys.stderr)
        return False
    unclosed = open_intents(records)
    note = f" ({len(unclosed)} decision(s) whose outcome is not shipped yet)" if unclosed else ""
    print("\n".join([f"intact {line}{note}", *runs]))
    return True


def _verify(reader: FleetReader, keys: Mapping[str, SignatureKey] | None) -> int:
    stores = reader.stores()
    if not stores:
        print("error: the fleet store holds no store: nothing to verify", file=sys.stderr)
        return EXIT_FAILED
    broken = sum(1 for store in stores if not _verify_store(reader.chain(store), keys))
    if broken:
        print(f"fleet audit BROKEN: {broken} of {len(stores)} store chain(s)", file=sys.stderr)
        return EXIT_FAILED
    total = sum(store.records for store in stores)
    checked = f", signatures valid ({', '.join(sorted(keys))})" if keys else ""
    print(f"fleet audit intact: {len(stores)} store chain(s), {total} records{checked}")
    return EXIT_OK


def _report(
    args: argparse.Namespace,
    reader: FleetReader,
    versions: list[VersionSpec],
    keys: Mapping[str, SignatureKey] | None,
) -> int:
    if args.format in ("html", "pdf") or getattr(args, "template", None) is not None:
        print(
            "error: report --fleet-dsn writes md or json (one section per pod); html, pdf and --template are for "
            "one pod's report",
            file=sys.stderr,
        )
        return EXIT_USAGE
    model = _model(args)
    stores = reader.stores(model)
    if not stores:
        print(f"no store of {f'model {model}' if model else 'any model'} in the fleet store", file=sys.stderr)
        return EXIT_FAILED
    now = datetime.now(UTC)
    since = parse_when(args.since, now) if args.since else None
    sections: list[tuple[FleetStoreRow, str]] = []
    for store in stores:
        chain = reader.chain(store)
        sections.append(
            (
                store,
                compliance_report(
                    store.model, chain.records, versions, since, args.format, generated_at=now, keys=keys
                ),
            )
        )
    if args.format == "json":
        text = json.dumps(
            {
                "stores": [
                    {"store_id": s.store_id, "pod": s.pod, "model": s.model, "report": json.loads(body)}
                    for s, body in sections
                ]
            },
            indent=2,
        )
    else:
        text = f"# Fleet compliance report ({len(sections)} pod(s))\n\n" + "\n\n---\n\n".join(
            f"## Pod {s.pod} (store {s.store_id})\n\n{body}" for s, body in sections
        )
    if args.output:
        args.output.write_text(text)
        print(f"report written to {args.output}")
    else:
        print(text)
    return EXIT_OK
