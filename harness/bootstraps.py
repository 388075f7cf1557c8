"""Envoy bootstraps for the harness.

- `static_weighted_bootstrap`: everything static. One HTTP listener whose single route splits traffic between
  static clusters by weight (Envoy picks a cluster per request at random with probability weight / sum of
  weights). For harness tests and for benchmarks that need an Envoy without the agent.
- `agent_bootstrap`: the agent's own ADS bootstrap (`agent.envoy_bootstrap.render_bootstrap`), with a free
  admin port when none is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.ports import free_port

__all__ = ["StaticUpstream", "agent_bootstrap", "static_weighted_bootstrap"]

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


@dataclass(frozen=True)
class StaticUpstream:
    """One static cluster (`cluster`) with one endpoint, and its route weight."""

    cluster: str
    port: int
    weight: int
    host: str = "127.0.0.1"


def _static_cluster(up: StaticUpstream, connect_timeout: str) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": up.host, "port_value": up.port}}}}
    return {
        "name": up.cluster,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {"cluster_name": up.cluster, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def static_weighted_bootstrap(
    *,
    listener_port: int,
    admin_port: int,
    upstreams: Sequence[StaticUpstream],
    listener_host: str = "127.0.0.1",
    admin_host: str = "127.0.0.1",
    node_id: str = "harness",
    node_cluster: str = "harness",
    route_timeout: str = "5s",
    connect_timeout: str = "1s",
) -> dict[str, Any]:
    """A static Envoy v3 bootstrap: listener `listener_host:listener_port`, route "/" weighted over
    `upstreams`."""
    if not upstreams:
        raise ValueError("need at least one upstream")
    if sum(u.weight for u in upstreams) <= 0:
        raise ValueError("upstream weights must sum to > 0")
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "route_config": {
            "name": "model_route",
            "virtual_hosts": [
                {
                    "name": "model",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "timeout": route_timeout,
                                "weighted_clusters": {
                                    "clusters": [{"name": u.cluster, "weight": u.weight} for u in upstreams]
                                },
                            },
                        }
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    listener = {
        "name": "model_listener",
        "address": {"socket_address": {"address": listener_host, "port_value": listener_port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener],
            "clusters": [_static_cluster(u, connect_timeout) for u in upstreams],
        },
    }


def agent_bootstrap(
    *,
    xds_port: int,
    node_id: str = "harness-sidecar",
    node_cluster: str = "model-sidecar",
    xds_host: str = "127.0.0.1",
    admin_port: int | None = None,
    admin_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The agent's ADS bootstrap for an Envoy that takes everything from the agent at `xds_host:xds_port`."""
    from agent.envoy_bootstrap import (
        render_bootstrap,
    )  # lazy: harness must import even while agent/ is in flux

    return render_bootstrap(
        node_id=node_id,
        node_cluster=node_cluster,
        xds_host=xds_host,
        xds_port=xds_port,
        admin_host=admin_host,
        admin_port=admin_port if admin_port is not None else free_port(admin_host),
    )
