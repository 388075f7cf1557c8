"""The bootstrap a sidecar Envoy needs to take all its listeners, clusters and routes from the agent over ADS.

Everything dynamic (the model listener, one cluster per version, the weighted route) comes over ADS; the bootstrap
only names the agent's xDS endpoint as a static cluster. `initial_fetch_timeout: 0s` makes Envoy wait for the
agent instead of starting with a partial config.

The ADS stream reconnects with a short jittered backoff (`ads_retry_base_s`, `ads_retry_max_s`): Envoy's default
(500 ms doubling up to 30 s) left a sidecar on its last routes for up to half a minute after an agent restart.
"""

from __future__ import annotations

import math
from typing import Any

XDS_CLUSTER_NAME = "rollback_agent_xds"

# Upstream latency buckets (ms) for the per-version p99: fine below a second, where model SLAs live. Put an edge at
# your SLA (`envoy.latency_buckets_ms` in the agent config) so "p99 above SLA" is exact rather than interpolated.
DEFAULT_LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2000, 5000)

# ADS reconnect backoff. Envoy waits a uniformly random time below an interval that starts at the base and doubles
# up to the max, so after an outage of any length Envoy is back within about `max` of the agent listening again.
DEFAULT_ADS_RETRY_BASE_S = 0.1
DEFAULT_ADS_RETRY_MAX_S = 1.0


def render_bootstrap(
    *,
    node_id: str,
    node_cluster: str,
    xds_host: str,
    xds_port: int,
    admin_host: str = "127.0.0.1",
    admin_port: int = 9901,
    latency_buckets_ms: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS_MS,
    ads_retry_base_s: float = DEFAULT_ADS_RETRY_BASE_S,
    ads_retry_max_s: float = DEFAULT_ADS_RETRY_MAX_S,
) -> dict[str, Any]:
    """Return an Envoy v3 bootstrap as plain data, ready for yaml/json dumping.

    Raises ValueError when the ADS backoff is not 1 ms <= base <= max (Envoy would refuse the bootstrap).
    """
    if not 0.001 <= ads_retry_base_s <= ads_retry_max_s < math.inf:
        raise ValueError(
            "ADS retry backoff needs 0.001 <= ads_retry_base_s <= ads_retry_max_s, "
            f"got base {ads_retry_base_s}, max {ads_retry_max_s}"
        )
    retry_policy = {
        "retry_back_off": {"base_interval": _duration(ads_retry_base_s), "max_interval": _duration(ads_retry_max_s)}
    }
    ads_source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        # Histograms reach the admin endpoint at each flush; the agent samples about once a second.
        "stats_flush_interval": "1s",
        "stats_config": {
            "histogram_bucket_settings": [
                {"match": {"safe_regex": {"regex": r".*upstream_rq_time$"}}, "buckets": list(latency_buckets_ms)}
            ]
        },
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER_NAME, "retry_policy": retry_policy}}],
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER_NAME,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER_NAME,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration, millisecond precision."""
    return f"{seconds:.3f}s"
