"""`rollback-agent state`: check the state store as the agent would, back it up, and recover it explicitly.

Recovery is never silent: `init` and `restore` move the current files aside (state_dir/replaced-*/, never deleted),
and the new store's first record (or the restored store's next record) says who did it, why, and what was found.
The actor is the local user running the command (`local:<user>`); `--actor` is kept beside it as a claimed name.
Run them with the agent stopped: they refuse while its control API answers on the configured address.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from typing import Any

from agent.adapters.envoy_admin import EnvoyServing, read_serving
from agent.adapters.store.signing import SigningKeyError, load_signer
from agent.adapters.store.sqlite_store import STATE_DB, SqliteStateStore
from agent.adapters.store.state_check import init_state, open_state, read_marker, restore_state, verify_store
from agent.config import AgentConfig, ConfigError, load_config
from agent.domain.traffic import PolicyError, TrafficPolicy, normalize_weights, refuse_unsafe_start
from agent.ports.store import StateRefusedError
from agent.registry import RegistryFileError
from agent.registry.fallback import declared_statuses

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STATE_REFUSED = 0, 1, 2, 4


def local_actor(claimed: str = "") -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}" + (f" (says {claimed})" if claimed else "")


def _envoy(config: AgentConfig) -> EnvoyServing:
    admin = f"http://{config.envoy.admin.address}:{config.envoy.admin.port}"
    return read_serving(admin, f"{config.model.name}-route", f"{config.model.name}__", 1.0)


def _agent_running(config: AgentConfig) -> bool:
    listen = config.control.listen
    host = "127.0.0.1" if listen.address in ("0.0.0.0", "::") else listen.address
    try:
        with socket.create_connection((host, listen.port), timeout=0.5):
            return True
    except OSError:
        return False


async def run_state(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    state_dir = config.state_dir
    command = args.state_command
    if command == "check":
        return await _check(config, as_json=args.json)
    if command == "backup":
        db = state_dir / STATE_DB
        try:
            store = await SqliteStateStore.open_existing(db, model=config.model.name)
        except StateRefusedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_STATE_REFUSED
        try:
            await store.backup(args.file)
            seq, _ = await store.head()
        finally:
            await store.close()
        print(f"backup of store {store.store_id} ({seq} audit records) written to {args.file}")
        return EXIT_OK
    if _agent_running(config):
        print(
            f"error: the agent answers on {config.control.listen.address}:{config.control.listen.port}; stop it "
            f"before `state {command}`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    actor = local_actor(args.actor)
    signing = config.audit.signing
    try:
        signer = load_signer(signing.mode, signing.key_file, signing.key_id)  # the new records are signed
    except SigningKeyError as exc:
        print(f"error: audit.signing: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "init":
        envoy = await asyncio.to_thread(_envoy, config)
        try:
            policy, how, detail = _starting_policy(config, args, envoy)
        except (PolicyError, ConfigError, RegistryFileError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        store, moved = await init_state(
            state_dir,
            model=config.model.name,
            policy=policy,
            how=how,
            reason=args.reason,
            actor=actor,
            detail=detail,
            signer=signer,
        )
        await store.close()
        print(
            f"new state store {store.store_id} on {' '.join(f'{v}={w}' for v, w in policy.weights)} ({detail})"
            + (f"; the previous files are in {moved}" if moved else "")
        )
        return EXIT_OK
    if command == "restore":
        try:
            store, moved = await restore_state(
                state_dir, args.file, model=config.model.name, reason=args.reason, actor=actor, signer=signer
            )
        except StateRefusedError as exc:
            print(f"error: {args.file} cannot be restored: {exc}", file=sys.stderr)
            return EXIT_STATE_REFUSED
        restored = await store.load_policy()
        await store.close()
        weights = " ".join(f"{v}={w}" for v, w in restored.weights) if restored else "-"
        print(
            f"restored store {store.store_id} from {args.file}: serving {weights} at the next start"
            + (f"; the previous files are in {moved}" if moved else "")
        )
        return EXIT_OK
    raise ConfigError(f"unknown state command {command}")


def _starting_policy(
    config: AgentConfig, args: argparse.Namespace, envoy: EnvoyServing
) -> tuple[TrafficPolicy, str, str]:
    if args.from_envoy:
        if envoy.weights is None:
            raise ConfigError(f"--from-envoy: {envoy.detail}; use --from-config")
        weights = normalize_weights({v: w for v, w in envoy.weights if v in config.tags}, config.tags)
        return (
            TrafficPolicy(weights, 1, f"state init from Envoy: {args.reason}", local_actor(args.actor)),
            "init_from_envoy",
            envoy.detail,
        )
    weights = normalize_weights(config.starting_weights(), config.tags)
    serving = dict(x for x in envoy.weights if x[1]) if envoy.weights is not None else None
    if serving is not None and serving != dict(x for x in weights if x[1]) and not args.force:
        raise ConfigError(
            f"--from-config would serve {dict(weights)} but {envoy.detail}; use --from-envoy to keep what "
            f"serves, or --force"
        )
    policy = TrafficPolicy(weights, 1, f"state init from the config: {args.reason}", local_actor(args.actor))
    refuse_unsafe_start(policy, declared_statuses(config), "the config's initial weights")
    return policy, "init_from_config", f"config initial weights; {envoy.detail}"


async def _check(config: AgentConfig, as_json: bool = False) -> int:
    """The agent's start-up check, read-only: never creates a store."""
    emit = _json_out if as_json else _text_out
    db = config.state_dir / STATE_DB
    try:
        marker = read_marker(config.state_dir)
        if not db.exists() or db.stat().st_size == 0:
            envoy = await asyncio.to_thread(_envoy, config)
            if marker is None and not envoy.serves_our_route:
                text = f"no state store at {db}: the agent would start fresh ({envoy.detail})"
                emit({"state": "absent", "detail": envoy.detail}, text)
                return EXIT_OK
            # Let the real check word the refusal.
            await open_state(config.state_dir, model=config.model.name, starting_policy=lambda: _never())
        store = await SqliteStateStore.open_existing(db, model=config.model.name)
        try:
            await verify_store(store, model=config.model.name, marker=marker)
            seq, digest = await store.head()
            policy = await store.load_policy()
        finally:
            await store.close()
    except StateRefusedError as exc:
        if as_json:
            _json_out({"state": "refused", "detail": str(exc)}, "")
        else:
            print(f"state refused: {exc}", file=sys.stderr)
        return EXIT_STATE_REFUSED
    weights = " ".join(f"{v}={w}" for v, w in policy.weights) if policy else "-"
    emit(
        {
            "state": "ok",
            "store_id": store.store_id,
            "model": config.model.name,
            "audit_records": seq,
            "head_hash": digest.hex(),
            "policy": {"revision": policy.revision, "weights": dict(policy.weights)} if policy else None,
        },
        f"state ok: store {store.store_id} (model {config.model.name}), {seq} audit records, head {digest.hex()[:16]}, "
        f"policy revision {policy.revision if policy else '-'}: {weights}",
    )
    return EXIT_OK


def _json_out(data: dict[str, Any], _text: str) -> None:
    print(json.dumps(data, indent=2))


def _text_out(_data: dict[str, Any], text: str) -> None:
    print(text)


def _never() -> TrafficPolicy:
    raise StateRefusedError("state check does not create a store")
