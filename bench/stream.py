"""bench/stream: what the access-log stream costs the agent's CPU at a given request rate (default 1,000/s).

A child process plays Envoy: it streams HTTPAccessLogEntry batches (one every 50 ms, Envoy's default flush here)
over gRPC to the agent's AccessLogService on a grpc.aio server in this process, for `--seconds`. This process
does what the agent does with them: ingest into the stream state and, on each batch, at most every 100 ms, take
a stream sample and splice it into the version histories (the rule evaluation the monitor then runs is measured
by bench/rules.py: add its per-tick cost x stream ticks/s). CPU is this process' user+system time over the run.
JSON last line (also written to bench/results/stream.json): cpu_percent_of_one_core, entries_per_s,
stream_ticks_per_s, rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import duration_pb2, wrappers_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.signals.access_log import AccessLogStreamSource  # noqa: E402
from agent.domain.signals import SignalHistory  # noqa: E402
from agent.engine.source_switch import STREAM, SourceSwitch  # noqa: E402
from agent.envoy_bootstrap import DEFAULT_LATENCY_BUCKETS_MS  # noqa: E402
from harness.measure import write_result  # noqa: E402

CLUSTERS = {"m__v1": "v1", "m__v2": "v2"}


def _entry(i: int) -> accesslog_pb2.HTTPAccessLogEntry:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int((5 + i % 20) * 1e6))
    return accesslog_pb2.HTTPAccessLogEntry(
        common_properties=accesslog_pb2.AccessLogCommon(
            upstream_cluster="m__v1" if i % 2 else "m__v2", time_to_last_upstream_rx_byte=d
        ),
        response=accesslog_pb2.HTTPResponseProperties(
            response_code=wrappers_pb2.UInt32Value(value=500 if i % 50 == 0 else 200)
        ),
        request=accesslog_pb2.HTTPRequestProperties(request_id=f"req-{i}"),
    )


def _client(port: int, rate: float, seconds: float) -> None:
    async def run() -> None:
        per_batch = max(1, round(rate * 0.05))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = als_pb2_grpc.AccessLogServiceStub(channel)

            async def messages():  # type: ignore[no-untyped-def]
                start, i = time.monotonic(), 0
                while time.monotonic() - start < seconds:
                    batch = [_entry(i + k) for k in range(per_batch)]
                    i += per_batch
                    yield als_pb2.StreamAccessLogsMessage(
                        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=batch)
                    )
                    await asyncio.sleep(0.05)

            await stub.StreamAccessLogs(messages())

    asyncio.run(run())


async def main(rate: float, seconds: float) -> dict[str, float]:
    source = AccessLogStreamSource(CLUSTERS, DEFAULT_LATENCY_BUCKETS_MS)
    server = grpc.aio.server()
    source.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    switch, histories = SourceSwitch(), {v: SignalHistory() for v in CLUSTERS.values()}
    switch.live = STREAM
    ticks = 0

    async def poke() -> None:
        nonlocal ticks
        while True:
            await source.batches.wait()
            await asyncio.sleep(0.1)
            source.batches.clear()
            now = time.monotonic()
            for version, sample in switch.splice(now, {STREAM: await source.sample(now)}).items():
                histories[version].append(sample)
            ticks += 1

    child = multiprocessing.get_context("spawn").Process(target=_client, args=(port, rate, seconds))
    task = asyncio.create_task(poke())
    child.start()
    await source.batches.wait()
    cpu0, wall0, entries0, ticks0 = time.process_time(), time.monotonic(), source.state.entries, ticks
    await asyncio.to_thread(child.join)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    task.cancel()
    await server.stop(0)
    return {
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "entries_per_s": round((source.state.entries - entries0) / wall, 1),
        "stream_ticks_per_s": round((ticks - ticks0) / wall, 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    write_result("stream", asyncio.run(main(args.rate, args.seconds)))
