import math

from agent.domain.signals import Histogram, Sample, Signal
from agent.engine.source_switch import STATS, STREAM, SourceSwitch

BOUNDS = (10.0, math.inf)


def reading(total, errors=0.0, now=0.0):
    h = Histogram(BOUNDS, (total, total), 5.0 * total, total)
    counters = {Signal.ENVOY_RQ_TOTAL: total, Signal.ENVOY_RQ_5XX: errors}
    return {"v1": Sample(now, counters=counters, histograms={Signal.ENVOY_RQ_TIME_MS: h})}


def test_the_stream_is_live_while_it_keeps_pace_with_envoy():
    switch = SourceSwitch(silence_s=2.0)
    assert switch.decide(1.0, reading(0), None, reading(1000)) == STATS  # nothing streamed yet
    assert switch.decide(2.0, reading(100), 2.0, reading(1100)) == STREAM
    # Entries lost (a broken stream): Envoy counted 100 more, the stream 10.
    assert switch.decide(3.0, reading(110), 2.9, reading(1200)) == STATS
    assert switch.decide(4.0, reading(210), 4.0, reading(1300)) == STREAM


def test_silence_without_traffic_keeps_the_live_source():
    switch = SourceSwitch(silence_s=1.0)
    switch.decide(1.0, reading(0), None, reading(0))
    assert switch.decide(2.0, reading(5), 2.0, reading(5)) == STREAM
    assert switch.decide(10.0, reading(5), 2.0, reading(5)) == STREAM  # idle: no reason to switch
    assert switch.decide(11.0, reading(5), 2.0, reading(8)) == STATS  # traffic, the stream silent
    assert switch.decide(12.0, reading(5), 2.0, None) == STATS  # stats unreadable, the stream stale


def test_splice_is_one_continuous_series_without_double_counting():
    switch = SourceSwitch(silence_s=1.0)
    out = []
    # (stream total, stats total): both count the same 100 requests per interval from different origins.
    for t, (stream_total, stats_total) in enumerate([(0, 5000), (100, 5100), (200, 5200), (200, 5300), (300, 5400)]):
        now = float(t)
        readings = {STREAM: reading(stream_total, now=now), STATS: reading(stats_total, now=now)}
        last_entry = now if t != 3 else 2.0  # the stream delivers nothing in interval 3
        switch.decide(now, readings[STREAM], last_entry, readings[STATS])
        out.append(switch.splice(now, readings)["v1"])
    totals = [s.counters[Signal.ENVOY_RQ_TOTAL] for s in out]
    assert totals == [0, 100, 200, 300, 400]  # interval 3 from Envoy's stats, the others from the stream
    assert [s.histograms[Signal.ENVOY_RQ_TIME_MS].count for s in out][-1] == 400


def test_a_restarted_envoy_counts_its_new_requests_only():
    switch = SourceSwitch()
    for now, total in [(0.0, 1000), (1.0, 1100), (2.0, 30)]:  # Envoy restarted before t=2
        switch.decide(now, None, None, reading(total))
        spliced = switch.splice(now, {STATS: reading(total)})
    assert spliced["v1"].counters[Signal.ENVOY_RQ_TOTAL] == 130
