"""The lease and pin endpoints: roles (forcing and revoking need admin), answers, bad input refused with the field
named and nothing recorded, and leases and pins shown in status."""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import parse_config
from agent.engine.admission import Admission
from agent.engine.leases import LeaseManager
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.identities import Identities, Identity, Role, token_sha256
from agent.http.lease_api import add_lease_api
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_leases import LeaseSink
from tests.unit.engine.test_traffic import established_store
from tests.unit.http.test_control_app import GOOD, FakeProcedure

TOKENS = {"rita": "read-only-token-0001", "olga": "operator-token-0002", "adam": "admin-token-0003"}
ROLES = {"rita": Role.READ_ONLY, "olga": Role.OPERATOR, "adam": Role.ADMIN}
IDENTITIES = Identities(Identity(name, ROLES[name], token_sha256(token)) for name, token in TOKENS.items())


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


class Rig:
    def __init__(self, client, store, sink) -> None:
        self.client = client
        self.store = store
        self.sink = sink

    async def records(self):
        return await self.store.records()

    async def post(self, who: str, path: str, body: object):
        resp = await self.client.post(path, json=body, headers=auth(who))
        return resp.status, await resp.json()


@pytest.fixture
async def rig(tmp_path: Path):
    config = parse_config(GOOD, "a.yaml", tmp_path)
    store = await established_store(tmp_path / "s.db", {"v1": 90, "v2": 10})
    sink = LeaseSink(store)
    metrics = AgentMetrics("credit")
    controller = TrafficController(
        model="credit", versions=config.tags, stable="v1", store=store, sink=sink, metrics=metrics, ack_timeout_s=1
    )
    await controller.start()
    admission = Admission(traffic=controller, store=store, procedure=FakeProcedure(controller))
    app = make_control_app(
        controller,
        StatusView(config, controller, None, admission=admission),
        IDENTITIES,
        decisions=admission,
        admission=admission,
    )
    leases = LeaseManager(
        model="credit", traffic=controller, store=store, routes=sink, metrics=metrics, ack_timeout_s=1
    )
    await leases.restore()
    add_lease_api(app, leases)
    async with TestClient(TestServer(app)) as client:
        yield Rig(client, store, sink)
    await store.close()


async def test_an_operator_takes_a_lease_and_everyone_sees_it(rig: Rig):
    status, lease = await rig.post(
        "olga", "/v1/leases", {"version": "v2", "holder": "nightly", "ttl_s": 7200, "actor": "claimed"}
    )
    assert status == 200, lease
    assert (lease["version"], lease["holder"], lease["state"], lease["header"]) == (
        "v2",
        "nightly",
        "active",
        "x-rollback-lease",
    )
    assert rig.sink.leases == ((lease["lease_id"], "v2"),)
    assert (await rig.records())[-1].actor == "operator:olga"
    listed = await (await rig.client.get("/v1/leases", headers=auth("rita"))).json()
    assert [x["lease_id"] for x in listed["leases"]] == [lease["lease_id"]]
    shown = await (await rig.client.get("/v1/status", headers=auth("rita"))).json()
    assert [x["lease_id"] for x in shown["leases"]] == [lease["lease_id"]]
    status, renewed = await rig.post("olga", f"/v1/leases/{lease['lease_id']}/renew", {"ttl_s": 60})
    assert status == 200 and renewed["expires_at"] < lease["expires_at"]
    status, released = await rig.post("olga", f"/v1/leases/{lease['lease_id']}/release", {"reason": "done"})
    assert status == 200 and released["state"] == "released" and rig.sink.leases == ()


@pytest.mark.parametrize(
    ("who", "path", "body", "needed"),
    [
        ("rita", "/v1/leases", {"version": "v2", "holder": "j", "ttl_s": 60}, "operator"),
        ("olga", "/v1/leases", {"version": "v2", "holder": "j", "ttl_s": 60, "force": True}, "admin"),
        ("olga", "/v1/leases/revoke", {"version": "v2", "reason": "PII", "force": True}, "admin"),
        ("rita", "/v1/pin", {"version": "v2", "reason": "x"}, "operator"),
        ("olga", "/v1/rollback", {"to_version": "v2", "reason": "x", "force": True}, "admin"),
    ],
)
async def test_too_low_a_role_is_refused_and_changes_nothing(rig: Rig, who, path, body, needed):
    before = await rig.records()
    status, answer = await rig.post(who, path, body)
    assert status == 403, answer
    assert f"needs role {needed} or above" in answer["message"]
    assert await rig.records() == before and rig.sink.lease_pushes == []


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/leases", {"version": "v2", "holder": "j", "ttl_s": 0}, 400, "ttl must be from 1s"),
        ("/v1/leases", {"version": "v2", "ttl_s": 60}, 400, "a lease names a version and a holder"),
        ("/v1/leases", {"version": "v9", "holder": "j", "ttl_s": 60}, 400, "unknown version 'v9'"),
        ("/v1/leases", {"version": "v2", "holder": "j", "ttl_s": "soon"}, 400, "not a valid LeaseRequest"),
        ("/v1/leases", [1, 2], 400, "expected a JSON object"),
        ("/v1/leases/l-0123456789abcdef/release", {}, 404, "no lease l-0123456789abcdef"),
        ("/v1/leases/l-nope/renew", {"ttl_s": 60}, 400, "lease id must look like"),
        ("/v1/leases/revoke", {"version": "v2", "reason": "PII"}, 400, "needs force: true"),
        ("/v1/pin", {"version": "v2"}, 400, "a pin needs a reason"),
        ("/v1/rollback", {"reason": "x", "force": True}, 400, "force needs a named target"),
    ],
)
async def test_bad_input_names_what_is_wrong_and_changes_nothing(rig: Rig, path, body, status, message):
    before = await rig.records()
    got, answer = await rig.post("adam", path, body)
    assert got == status, answer
    assert message in answer["message"]
    assert await rig.records() == before and rig.sink.lease_pushes == []


async def test_an_admin_revokes_leases_and_a_pin_shows_in_status(rig: Rig):
    _, lease = await rig.post("olga", "/v1/leases", {"version": "v2", "holder": "nightly", "ttl_s": 600})
    status, revoked = await rig.post("adam", "/v1/leases/revoke", {"version": "v2", "reason": "PII", "force": True})
    assert status == 200 and [x["state"] for x in revoked["leases"]] == ["revoked"]
    status, shown = await rig.post("olga", "/v1/pin", {"version": "v2", "reason": "INC-9"})
    assert status == 200, shown
    assert shown["pins"] == {"v2": "INC-9"}
    assert [(x["lease_id"], x["state"], x["end_reason"]) for x in shown["leases"]] == [
        (lease["lease_id"], "revoked", "PII")
    ]
    status, shown = await rig.post("olga", "/v1/unpin", {"version": "v2"})
    assert status == 200 and shown["pins"] == {}
