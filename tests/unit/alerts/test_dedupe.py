import dataclasses
from datetime import UTC, datetime, timedelta, timezone

from agent.alerts.alert import Alert
from agent.alerts.dedupe import Dedupe, event_key, occurrence_key

STARTS = datetime(2026, 11, 22, 3, 46, 39, 74480, tzinfo=UTC)
ALERT = Alert("8c525571fc3b84a1", "firing", {"alertname": "A"}, {}, STARTS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_webhook_and_api_precision_give_the_same_key():
    api = dataclasses.replace(ALERT, starts_at=STARTS.replace(microsecond=74000))  # API v2: milliseconds
    local = dataclasses.replace(ALERT, starts_at=STARTS.astimezone(timezone(timedelta(hours=2))))
    assert occurrence_key(api) == occurrence_key(ALERT) == occurrence_key(local)
    assert occurrence_key(ALERT) == "8c525571fc3b84a1@2026-11-22T03:46:39.074+00:00"


def test_a_new_occurrence_or_the_resolution_is_a_new_key():
    refired = dataclasses.replace(ALERT, starts_at=STARTS + timedelta(minutes=5))
    assert occurrence_key(refired) != occurrence_key(ALERT)
    assert event_key(ALERT.resolved_at(STARTS + timedelta(minutes=1))) != event_key(ALERT)


def test_claim_once_then_duplicate_and_release_on_failure():
    dedupe = Dedupe(ttl_s=60, max_entries=10)
    assert dedupe.claim("k")
    assert not dedupe.claim("k")  # a retry or re-notification
    dedupe.release("k")  # acting failed: the next delivery acts
    assert dedupe.claim("k")


def test_ttl_expires_unseen_keys_but_sightings_refresh_them():
    clock = Clock()
    dedupe = Dedupe(ttl_s=60, max_entries=10, clock=clock)
    dedupe.claim("refreshed")
    dedupe.claim("forgotten")
    for _ in range(3):  # re-notified every 40 s, more often than the TTL
        clock.now += 40
        assert not dedupe.claim("refreshed")
    assert "forgotten" not in dedupe
    assert "refreshed" in dedupe


def test_memory_is_bounded_least_recently_seen_first():
    dedupe = Dedupe(ttl_s=3600, max_entries=3)
    for key in "abc":
        dedupe.claim(key)
    dedupe.claim("a")  # seen again: most recent
    dedupe.claim("d")
    assert len(dedupe) == 3
    assert "b" not in dedupe and all(k in dedupe for k in "acd")


def test_an_escalated_alert_acts_again_after_the_hold_off_only():
    clock = Clock()
    dedupe = Dedupe(ttl_s=3600, max_entries=10, clock=clock)
    assert dedupe.claim("k")
    dedupe.retry_after("k", 30)  # the rollback it asked for escalated: nothing moved
    clock.now += 10
    assert not dedupe.claim("k")  # re-notifications and pulls within the hold-off stay duplicates
    clock.now += 21
    assert dedupe.claim("k")  # then one delivery acts again
    assert not dedupe.claim("k")
