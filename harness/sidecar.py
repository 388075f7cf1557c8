"""The agent config of a local sidecar stack (demo, benchmarks, integration tests): one place for its shape."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.ports import free_ports

PORT_NAMES = ("listener", "admin", "xds", "http", "control")


def sidecar_ports() -> dict[str, int]:
    """Free ports for Envoy's listener and admin, and the agent's xDS, http and control listeners."""
    return dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))


def agent_config(
    *,
    model: str,
    upstreams: Mapping[str, int],  # version -> port of its model server on 127.0.0.1, oldest first
    ports: Mapping[str, int],
    state_dir: Path,
    stable: str,
    candidate: str | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """agent.yaml as data; `sections` adds or replaces top-level sections (rules, rollback, alerts, ...)."""
    config: dict[str, Any] = {
        "model": {"name": model, "tier": "critical"},
        "versions": [{"tag": v, "endpoint": f"127.0.0.1:{port}"} for v, port in upstreams.items()],
        "stable": stable,
        "envoy": {"listener": {"port": ports["listener"]}, "admin": {"port": ports["admin"]}},
        "xds": {"port": ports["xds"]},
        "http": {"port": ports["http"]},
        "control": {"listen": {"port": ports["control"]}},
        "state_dir": str(state_dir),
    }
    if candidate is not None:
        config["candidate"] = candidate
    config.update(sections)
    return config
