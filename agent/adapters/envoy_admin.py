"""What the local Envoy serves right now, read from its admin API (`/config_dump`): the evidence the agent uses to
tell a first start from lost state, and to reconcile a change the agent was killed in the middle of.

Only the model's route is read: the weights of its weighted clusters, mapped back to version tags.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EnvoyServing:
    reachable: bool
    # The split Envoy serves on this model's route, as (version, weight); None when it serves no route of ours.
    weights: tuple[tuple[str, int], ...] | None
    detail: str

    @property
    def serves_our_route(self) -> bool:
        return self.weights is not None


def route_weights(dump: Any, route_name: str, cluster_prefix: str) -> tuple[tuple[str, int], ...] | None:
    """The weighted clusters of `route_name` in a `/config_dump?resource=dynamic_route_configs` answer."""
    configs = dump.get("configs", []) if isinstance(dump, dict) else []
    for config in configs:
        route = config.get("route_config", {}) if isinstance(config, dict) else {}
        if not isinstance(route, dict) or route.get("name") != route_name:
            continue
        weights: list[tuple[str, int]] = []
        for host in route.get("virtual_hosts", []):
            for entry in host.get("routes", []):
                clusters = entry.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
                for cluster in clusters:
                    name = str(cluster.get("name", ""))
                    version = name.removeprefix(cluster_prefix) if name.startswith(cluster_prefix) else name
                    weights.append((version, int(cluster.get("weight", 0))))
        return tuple(weights)
    return None


def read_serving(admin_url: str, route_name: str, cluster_prefix: str, timeout_s: float = 1.0) -> EnvoyServing:
    """Blocking: ask Envoy's admin what it serves on `route_name` (run it in a thread from async code)."""
    url = admin_url.rstrip("/") + "/config_dump?resource=dynamic_route_configs"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            dump = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return EnvoyServing(False, None, f"Envoy admin {admin_url} unreachable ({reason})")
    weights = route_weights(dump, route_name, cluster_prefix)
    if weights is None:
        return EnvoyServing(True, None, f"Envoy admin {admin_url} serves no route of this agent")
    split = " ".join(f"{v}={w}" for v, w in weights)
    return EnvoyServing(True, weights, f"Envoy admin {admin_url} serves route {route_name} with {split}")
