import math

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from agent.adapters.signals.access_log import AccessLogStreamSource, to_entry
from agent.adapters.xds.resources import AccessLogSettings, ModelTopology, VersionUpstream, build_listener, hcm_pb2
from agent.domain.signals import Signal
from agent.domain.stream_state import Flag, StreamSignal


def ms(value):
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e6))
    return d


def entry(cluster="m__v1", code=200, upstream_ms=12.0, flags=None, headers=None):
    common = accesslog_pb2.AccessLogCommon(upstream_cluster=cluster, time_to_last_rx_byte=ms(1.0))
    if upstream_ms is not None:
        common.time_to_last_upstream_rx_byte.CopyFrom(ms(1.0 + upstream_ms))
    if flags:
        common.response_flags.CopyFrom(accesslog_pb2.ResponseFlags(**flags))
    return accesslog_pb2.HTTPAccessLogEntry(
        common_properties=common,
        response=accesslog_pb2.HTTPResponseProperties(
            response_code=wrappers_pb2.UInt32Value(value=code), response_headers=headers or {}
        ),
    )


def test_entry_reads_version_status_upstream_time_flags_and_confidence():
    e = to_entry(entry(code=503, flags={"upstream_connection_failure": True}, headers={"x-conf": "0.93"}), "x-conf")
    assert (e.cluster, e.status, e.flags, e.confidence) == ("m__v1", 503, Flag.CONNECT_FAILURE, 0.93)
    assert math.isclose(e.latency_ms, 12.0)
    assert to_entry(entry(upstream_ms=None)).latency_ms is None
    assert to_entry(entry(headers={"x-conf": "high"}), "x-conf").confidence is None  # not a number: missing


async def test_batches_are_counted_signalled_and_sampled_in_envoy_stats_layout():
    source = AccessLogStreamSource({"m__v1": "v1", "m__v2": "v2"}, (10, 100), clock=lambda: 5.0)
    assert not source.batches.is_set()
    assert source.ingest([entry(), entry(code=500), entry("m__v2", 404, flags={"upstream_request_timeout": True})])
    assert source.batches.is_set() and source.last_entry_at == 5.0
    samples = await source.sample(6.0)
    assert samples["v1"].counters[Signal.ENVOY_RQ_TOTAL] == 2 and samples["v1"].counters[Signal.ENVOY_RQ_5XX] == 1
    assert samples["v2"].counters[StreamSignal.RQ_4XX] == 1 and samples["v2"].counters[StreamSignal.RQ_TIMEOUT] == 1
    assert samples["v1"].histograms[Signal.ENVOY_RQ_TIME_MS].bounds == (10.0, 100.0, math.inf)


def test_listener_streams_the_access_log_to_the_agents_cluster():
    topology = ModelTopology(
        "m",
        (VersionUpstream("v1", "127.0.0.1", 1),),
        "127.0.0.1",
        2,
        access_log=AccessLogSettings(
            cluster="agent", flush_interval_ms=50, buffer_size_bytes=4096, response_headers=("x-conf",)
        ),
    )
    manager = hcm_pb2.HttpConnectionManager()
    build_listener(topology).filter_chains[0].filters[0].typed_config.Unpack(manager)
    (access_log,) = manager.access_log
    config = als_pb2.HttpGrpcAccessLogConfig()
    access_log.typed_config.Unpack(config)
    common = config.common_config
    assert access_log.name == "envoy.access_loggers.http_grpc"
    assert common.grpc_service.envoy_grpc.cluster_name == "agent"
    assert common.buffer_flush_interval.ToMilliseconds() == 50 and common.buffer_size_bytes.value == 4096
    assert list(config.additional_response_headers_to_log) == ["x-conf"]
    without = ModelTopology("m", topology.upstreams, "127.0.0.1", 2)
    build_listener(without).filter_chains[0].filters[0].typed_config.Unpack(manager := hcm_pb2.HttpConnectionManager())
    assert not manager.access_log
