"""Named identities with roles on the control API: who may read, who may change, and what the trail records."""

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.http.identities import Identities, Identity, Role, token_sha256
from tests.unit.http.test_control_app import Rig, make_client

TOKENS = {"rita": "read-only-token-0001", "olga": "operator-token-0002", "adam": "admin-token-0003"}
ROLES = {"rita": Role.READ_ONLY, "olga": Role.OPERATOR, "adam": Role.ADMIN}
IDENTITIES = Identities(Identity(name, ROLES[name], token_sha256(token)) for name, token in TOKENS.items())

CHANGES = [
    ("/v1/traffic", {"weights": [{"version": "v2", "weight": 100}], "reason": "canary"}),
    ("/v1/hold", {"version": "v2", "reason": "INC-7"}),
    ("/v1/release", {"version": "v2", "reason": "fixed"}),
    ("/v1/pause", {"reason": "INC-9"}),
    ("/v1/resume", {"reason": "INC-9 over"}),
    ("/v1/rollback", {"reason": "bad scores"}),
]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
async def rig(tmp_path: Path):
    client, sink, store, procedure = await make_client(tmp_path, credentials=IDENTITIES)
    async with client:
        yield Rig(client, sink, store, procedure)
    await store.close()


@pytest.mark.parametrize("name", list(TOKENS))
async def test_every_role_reads_status(rig: Rig, name):
    resp = await rig.client.get("/v1/status", headers=auth(name))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["model"] == "credit"


@pytest.mark.parametrize("name", ["olga", "adam"])
async def test_operator_and_admin_change_and_are_recorded_by_name(rig: Rig, name):
    for path, body in CHANGES:
        before = len(await rig.records())
        resp = await rig.client.post(path, json={**body, "actor": "someone-else"}, headers=auth(name))
        assert resp.status == 200, (path, await resp.text())
        new = (await rig.records())[before:]
        assert new, f"{path} recorded nothing"
        assert {r.actor for r in new} == {f"operator:{name}"}, path
    assert rig.sink.applied, "the traffic change reached the sink"


@pytest.mark.parametrize(("path", "body"), CHANGES)
async def test_read_only_cannot_change_anything(rig: Rig, path, body):
    before = await rig.records()
    resp = await rig.client.post(path, json=body, headers=auth("rita"))
    answer = await resp.json()
    assert resp.status == 403, answer
    assert answer["code"] == "permission_denied"
    assert answer["message"] == (f"POST {path} needs role operator or above; identity 'rita' has role read-only")
    assert await rig.records() == before
    assert rig.sink.applied == []


async def test_forcing_traffic_needs_admin(rig: Rig):
    await rig.client.post("/v1/hold", json={"version": "v2", "reason": "INC-7"}, headers=auth("olga"))
    before = await rig.records()
    forced = {"weights": [{"version": "v2", "weight": 100}], "force": True}
    resp = await rig.client.post("/v1/traffic", json=forced, headers=auth("olga"))
    answer = await resp.json()
    assert resp.status == 403, answer
    assert (
        answer["message"]
        == "forcing traffic (force: true) needs role admin or above; identity 'olga' has role operator"
    )
    assert await rig.records() == before and rig.sink.applied == []
    resp = await rig.client.post("/v1/traffic", json=forced, headers=auth("adam"))
    assert resp.status == 200, await resp.text()
    assert (await rig.records())[-1].actor == "operator:adam"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-token",
        f"Bearer {token_sha256(TOKENS['adam'])}",  # the hash from the tokens file does not let anyone in
        f"Basic {TOKENS['adam']}",
        "Bearer ",
        "",
    ],
)
async def test_unknown_tokens_get_401_and_change_nothing(rig: Rig, header):
    before = await rig.records()
    for method, path in (("GET", "/v1/status"), ("POST", "/v1/traffic"), ("POST", "/v1/pause")):
        resp = await rig.client.request(
            method, path, json={"weights": [{"version": "v2", "weight": 100}]}, headers={"Authorization": header}
        )
        assert resp.status == 401
        assert (await resp.json())["code"] == "unauthenticated"
    assert await rig.records() == before and rig.sink.applied == []


async def test_the_single_token_is_an_admin(tmp_path: Path):
    client, _sink, store, _procedure = await make_client(tmp_path)  # "s3cret", identity "ana"
    async with client:
        resp = await client.post(
            "/v1/traffic",
            json={"weights": [{"version": "v2", "weight": 100}], "force": True},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert resp.status == 200, await resp.text()
    assert (await store.records())[-1].actor == "operator:ana"
    await store.close()


def test_authentication_matches_the_token_not_a_prefix_or_the_hash():
    assert IDENTITIES.authenticate(b"operator-token-0002").name == "olga"  # type: ignore[union-attr]
    assert IDENTITIES.authenticate(b"  operator-token-0002 \n").name == "olga"  # type: ignore[union-attr]
    assert IDENTITIES.authenticate(b"operator-token-000") is None
    assert IDENTITIES.authenticate(token_sha256("operator-token-0002").encode()) is None
    assert IDENTITIES.authenticate(b"") is None
    assert "sha256" not in repr(next(iter(IDENTITIES)))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda before, token, after: before + token + after,
            st.binary(max_size=3),
            st.sampled_from([t.encode() for t in TOKENS.values()]),
            st.binary(max_size=3),
        ),
    )
)
def test_only_a_token_itself_authenticates_as_its_identity(presented: bytes):
    identity = IDENTITIES.authenticate(presented)
    if identity is None:
        assert presented.strip() not in {t.encode() for t in TOKENS.values()}
    else:
        assert presented.strip() == TOKENS[identity.name].encode()
