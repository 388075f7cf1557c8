"""Batch-job leases as plain data: lifetime, renewal, ending, what Envoy's lease routes carry, validation."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.lease import MAX_ENDED, MAX_TTL_S, Lease, LeaseBook, LeaseError

VERSIONS = ("v1", "v2")


def take(book: LeaseBook, version="v2", holder="nightly-scoring", ttl_s=3600.0, now=1000.0, **kw) -> Lease:
    lease = book.new_lease(version=version, holder=holder, ttl_s=ttl_s, now=now, known_versions=VERSIONS, **kw)
    book.put(lease)
    return lease


def test_a_lease_routes_its_version_until_its_time_is_up():
    book = LeaseBook()
    lease = take(book, ttl_s=7200, now=1000.0)
    assert lease.lease_id.startswith("l-") and len(lease.lease_id) == 18
    assert lease.expires_at == 8200.0
    assert book.routes(8199.9) == ((lease.lease_id, "v2"),)
    assert book.routes(8200.0) == ()
    assert [x.lease_id for x in book.due(8200.0)] == [lease.lease_id]
    assert book.due(8199.0) == []


def test_renewal_counts_from_now_and_an_ended_lease_cannot_be_renewed():
    book = LeaseBook()
    lease = take(book, ttl_s=60, now=1000.0)
    renewed = book.renewed(lease.lease_id, ttl_s=600, now=1050.0)
    assert renewed.expires_at == 1650.0 and renewed.acquired_at == 1000.0
    assert book.get(lease.lease_id).expires_at == 1060.0, "nothing changes until the renewal is put"
    book.put(renewed)
    with pytest.raises(LeaseError, match="has ended \\(expired\\); acquire a new lease") as err:
        book.renewed(lease.lease_id, ttl_s=600, now=1700.0)
    assert err.value.code == "refused"
    book.put(book.ending(lease.lease_id, "released", now=1100.0, why="batch done"))
    with pytest.raises(LeaseError, match="has ended \\(released\\)"):
        book.renewed(lease.lease_id, ttl_s=600, now=1200.0)


def test_an_ended_lease_stays_visible_with_how_and_why_and_leaves_the_routes():
    book = LeaseBook()
    a = take(book, holder="job-a")
    b = take(book, holder="job-b", version="v1")
    book.put(book.ending(a.lease_id, "revoked", now=1500.0, why="v2 quarantined: PII leak"))
    assert book.routes(1600.0) == ((b.lease_id, "v1"),)
    listed = book.all()
    assert [x.lease_id for x in listed] == [b.lease_id, a.lease_id], "live first, then the ended"
    assert listed[1].state == "revoked" and listed[1].end_reason == "v2 quarantined: PII leak"
    with pytest.raises(LeaseError, match="already ended \\(revoked\\)"):
        book.ending(a.lease_id, "released", now=1600.0, why="")


def test_ended_leases_are_forgotten_after_a_day_or_beyond_the_newest_hundred():
    book = LeaseBook()
    for i in range(MAX_ENDED + 5):
        lease = take(book, now=float(i))
        book.put(book.ending(lease.lease_id, "released", now=float(i), why="done"))
    live = take(book, now=500.0, ttl_s=MAX_TTL_S)
    gone = book.prune(now=600.0)
    assert len(gone) == 5 and all(x.ended_at < 5 for x in gone)
    assert len(book.all()) == MAX_ENDED + 1
    book.prune(now=200_000.0)
    assert [x.lease_id for x in book.all()] == [live.lease_id], "a live lease is never pruned"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "v9"}, "unknown version 'v9'; this model has v1, v2"),
        ({"holder": ""}, "holder must be 1-128 characters"),
        ({"holder": "job name with spaces"}, "holder must be"),
        ({"holder": "x" * 129}, "holder must be"),
        ({"ttl_s": 0.5}, "ttl must be from 1s to 604800s"),
        ({"ttl_s": float("nan")}, "ttl must be"),
        ({"ttl_s": 8 * 86400.0}, "ttl must be"),
    ],
)
def test_a_bad_request_names_what_is_wrong_and_grants_nothing(kwargs, message):
    book = LeaseBook()
    with pytest.raises(LeaseError, match=message) as err:
        take(book, **kwargs)
    assert err.value.code == "invalid_argument"
    assert book.all() == []


@pytest.mark.parametrize("lease_id", ["", "l-123", "L-0123456789abcdef", "l-0123456789abcdeg", "x" * 500])
def test_a_malformed_lease_id_is_refused_and_an_unknown_one_is_not_found(lease_id):
    with pytest.raises(LeaseError, match="lease id must look like") as err:
        LeaseBook().get(lease_id)
    assert err.value.code == "invalid_argument"
    with pytest.raises(LeaseError, match="no lease l-0123456789abcdef") as err:
        LeaseBook().get("l-0123456789abcdef")
    assert err.value.code == "not_found"


def test_a_lease_survives_its_json_form():
    lease = take(LeaseBook(), reason="Q3 backfill", actor="operator:ana")
    assert Lease.from_json(lease.to_json()) == lease
    with pytest.raises(TypeError):
        Lease.from_json(json.dumps({"lease_id": "l-0123456789abcdef", "surprise": 1}))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(VERSIONS), st.floats(1, 1000), st.floats(0, 1000), st.booleans()),
        max_size=20,
    ),
    st.floats(0, 3000),
)
def test_the_routes_are_exactly_the_live_leases(requests, at):
    book = LeaseBook()
    expected = set()
    for version, ttl, start, release in requests:
        lease = take(book, version=version, ttl_s=ttl, now=start)
        if release:
            book.put(book.ending(lease.lease_id, "released", now=start, why=""))
        elif at < start + ttl:
            expected.add((lease.lease_id, version))
    routes = book.routes(at)
    assert set(routes) == expected and list(routes) == sorted(routes)
