"""Any request to the lease and pin endpoints, with an admin's token (every role check passed): 200 or a 4xx with a
JSON ErrorResponse naming what is wrong, never a 5xx; a refused request records nothing and publishes no route.

FUZZ_EXAMPLES sets the number of examples (default 200)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import parse_config
from agent.engine.admission import Admission
from agent.engine.leases import LeaseManager
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.lease_api import add_lease_api
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_leases import LeaseSink
from tests.unit.engine.test_traffic import established_store
from tests.unit.http.test_control_app import GOOD, FakeProcedure

TOKEN = "s3cret"
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: TestClient, store: Any, sink: LeaseSink) -> None:
        self.loop = loop
        self.client = client
        self.store = store
        self.sink = sink

    def post(self, path: str, body: bytes) -> tuple[int, str, int, int]:
        async def go() -> tuple[int, str, int, int]:
            before = len(await self.store.records())
            pushes = len(self.sink.lease_pushes)
            resp = await self.client.post(
                path, data=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            )
            text = await resp.text()
            return resp.status, text, len(await self.store.records()) - before, len(self.sink.lease_pushes) - pushes

        return self.loop.run_until_complete(go())


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    tmp: Path = tmp_path_factory.mktemp("lease-fuzz")

    async def build() -> tuple[TestClient, Any, LeaseSink]:
        config = parse_config(GOOD, "a.yaml", tmp)
        store = await established_store(tmp / "s.db", {"v1": 90, "v2": 10})
        sink = LeaseSink(store)
        metrics = AgentMetrics("credit")
        controller = TrafficController(
            model="credit", versions=config.tags, stable="v1", store=store, sink=sink, metrics=metrics, ack_timeout_s=1
        )
        await controller.start()
        admission = Admission(traffic=controller, store=store, procedure=FakeProcedure(controller))
        app = make_control_app(
            controller, StatusView(config, controller, None, admission=admission), TOKEN, admission=admission
        )
        leases = LeaseManager(
            model="credit", traffic=controller, store=store, routes=sink, metrics=metrics, ack_timeout_s=1
        )
        await leases.restore()
        add_lease_api(app, leases)
        client = TestClient(TestServer(app))
        await client.start_server()
        return client, store, sink

    client, store, sink = loop.run_until_complete(build())
    yield Harness(loop, client, store, sink)
    loop.run_until_complete(client.close())
    loop.run_until_complete(store.close())
    loop.close()


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
FIELDS = {
    "version": st.one_of(st.sampled_from(["v1", "v2", "v9", ""]), SCALARS),
    "holder": st.one_of(st.sampled_from(["nightly", "job/1", "a b", ""]), SCALARS),
    "ttl_s": st.one_of(st.sampled_from([0, 0.5, 1, 60, 604800, 604801, -5]), SCALARS),
    "reason": st.one_of(st.text(max_size=60), SCALARS),
    "force": st.one_of(st.booleans(), SCALARS),
    "actor": SCALARS,
    "surprise": SCALARS,
}
BODIES = st.one_of(
    st.fixed_dictionaries({}, optional=FIELDS).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"", b"[]", b"null", b'{"ttl_s": NaN}', b'{"version": "v2"', b"\xff\xfe"]),
)
LEASE_IDS = st.one_of(st.just("l-0123456789abcdef"), st.text(min_size=1, max_size=30))
PATHS = st.one_of(
    st.sampled_from(["/v1/leases", "/v1/leases/revoke", "/v1/pin", "/v1/unpin"]),
    st.builds(
        lambda lease_id, action: f"/v1/leases/{urllib.parse.quote(lease_id, safe='')}/{action}",
        LEASE_IDS,
        st.sampled_from(["renew", "release"]),
    ),
)


@FUZZ
@given(path=PATHS, body=BODIES)
def test_any_request_is_answered_with_a_named_error_or_done_never_a_5xx(harness: Harness, path: str, body: bytes):
    status, text, recorded, pushed = harness.post(path, body)
    assert status < 500, (path, body, status, text)
    answer = json.loads(text)
    if status >= 400:
        assert answer["code"] and answer["message"], answer
        assert recorded == 0 and pushed == 0, (path, body, answer)
