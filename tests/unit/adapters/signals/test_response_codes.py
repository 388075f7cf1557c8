"""Per-code and per-class response counters, from Envoy's stats and from the access-log stream, under the same
names (what `count: [5xx, 400, 404]` reads)."""

from __future__ import annotations

from agent.adapters.signals.envoy_stats import EnvoyStatsSource
from agent.domain.signals import Signal
from agent.domain.stream_state import LogEntry, StreamState

# Recorded from Envoy 1.x /stats/prometheus (filter ^cluster\.v2\.) after 5 answers 200, 5 answers 400 and one 404
# from MLServer: the per-code counters share the `..._total` name with the request total, told apart by a label.
EXPOSITION = """\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="v2"} 5
envoy_cluster_upstream_rq{envoy_response_code="400",envoy_cluster_name="v2"} 5
envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="v2"} 1
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="v2"} 11
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="v2"} 5
envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="v2"} 6
# TYPE envoy_cluster_upstream_cx_connect_fail counter
envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="v2"} 0
"""


def test_envoy_stats_give_the_total_the_classes_and_each_error_code() -> None:
    source = EnvoyStatsSource(session=None, admin_url="http://127.0.0.1:1", clusters={"v2": "v2"})  # type: ignore[arg-type]
    counters = source.parse(EXPOSITION, now=1.0)["v2"].counters
    assert counters[Signal.ENVOY_RQ_TOTAL] == 11  # not one of the per-code samples of the same name
    assert counters[Signal.ENVOY_RQ_4XX] == 6 and counters[Signal.ENVOY_RQ_5XX] == 0
    assert counters[Signal.envoy_code(400)] == 5 and counters[Signal.envoy_code(404)] == 1
    assert Signal.envoy_code(200) not in counters  # successes are not error codes


def test_envoy_stats_total_does_not_depend_on_the_order_of_samples() -> None:
    source = EnvoyStatsSource(session=None, admin_url="http://127.0.0.1:1", clusters={"v2": "v2"})  # type: ignore[arg-type]
    blocks = EXPOSITION.split("# TYPE ")
    total_first = "# TYPE ".join(["", blocks[2], blocks[1], *blocks[3:]])
    assert total_first.index("_rq_total{") < total_first.index('rq{envoy_response_code="400"')
    assert source.parse(total_first, now=1.0)["v2"].counters[Signal.ENVOY_RQ_TOTAL] == 11


def test_stream_counts_each_error_code_like_envoy() -> None:
    state = StreamState({"m__v2": "v2"}, (10.0, 100.0))
    for status in (200, 400, 400, 404, 503, 0):
        state.add(LogEntry("m__v2", status, 5.0), now=1.0)
    counters = state.sample(2.0)["v2"].counters
    assert counters[Signal.ENVOY_RQ_TOTAL] == 6
    assert counters[Signal.ENVOY_RQ_4XX] == 3 and counters[Signal.ENVOY_RQ_5XX] == 1
    assert counters[Signal.envoy_code(400)] == 2
    assert counters[Signal.envoy_code(404)] == 1 and counters[Signal.envoy_code(503)] == 1
    assert not any(name.endswith((".200", ".0")) for name in counters)
