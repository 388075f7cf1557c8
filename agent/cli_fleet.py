"""The CLI's fleet commands: `history`, `audit verify` and `report` with `--fleet-dsn`, read from the fleet audit
store (PostgreSQL) that every agent ships its trail to. Each pod's store is a chain of its own: it is verified and
replayed on its own, and the answers are put side by side. `--config` is optional: it adds the registry's
provenance of the versions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from agent.adapters.fleet.postgres_store import FleetChain, FleetError, FleetReader, FleetStoreRow
from agent.adapters.registry.file_registry import open_registry
from agent.config import ConfigError, load_config
from agent.domain.audit_chain import verify_chain
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
        versions = _registry_versions(args)
        with FleetReader.open(args.fleet_dsn) as reader:
            if args.command == "history":
                return _history(args, reader, versions)
            if args.command == "audit":
                return _verify(reader)
            if args.command == "report":
                return _report(args, reader, versions)
        raise ConfigError(f"--fleet-dsn does not apply to {args.command}")
    except FleetError as exc:
        print(f"error: fleet store: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):  # the driver is imported lazily: no class to name here
            raise
        print(f"error: fleet store: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # parse_when and friends
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


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


def _verify_store(chain: FleetChain) -> bool:
    store, records = chain.store, chain.records
    problems = [str(p) for p in verify_chain(records)] + chain.column_problems
    missing = gaps([r.seq for r in records])
    head = records[-1] if records else None
    head_text = f"head {head.seq}:{head.hash.hex()}" if head is not None else "no records"
    line = f"{_store_line(store)}; {head_text}"
    if missing:
        ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in missing)
        problems.append(f"records missing from the fleet store: {ranges}")
    if problems:
        print(f"BROKEN {line}", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return False
    unclosed = open_intents(records)
    note = f" ({len(unclosed)} decision(s) whose outcome is not shipped yet)" if unclosed else ""
    print(f"intact {line}{note}")
    return True


def _verify(reader: FleetReader) -> int:
    stores = reader.stores()
    if not stores:
        print("error: the fleet store holds no store: nothing to verify", file=sys.stderr)
        return EXIT_FAILED
    broken = sum(1 for store in stores if not _verify_store(reader.chain(store)))
    if broken:
        print(f"fleet audit BROKEN: {broken} of {len(stores)} store chain(s)", file=sys.stderr)
        return EXIT_FAILED
    total = sum(store.records for store in stores)
    print(f"fleet audit intact: {len(stores)} store chain(s), {total} records")
    return EXIT_OK


def _report(args: argparse.Namespace, reader: FleetReader, versions: list[VersionSpec]) -> int:
    if args.format == "html":
        print("error: report --fleet-dsn writes md or json (one section per pod)", file=sys.stderr)
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
            (store, compliance_report(store.model, chain.records, versions, since, args.format, generated_at=now))
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
