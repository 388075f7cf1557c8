import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.adapters.registry import FileRegistry, open_registry
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.config import parse_config
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.registry import StatusTransitionError, UnknownVersionError, VersionStatus
from agent.registry import EvidenceCheck, Registry, RegistryFileError, rollback_targets

EXAMPLE = Path(__file__).parents[3] / "rules" / "registry.example.yaml"
S = VersionStatus

CONFIG = """
model: {name: credit-scorer}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - {tag: v2, endpoint: "127.0.0.1:8002"}
  - {tag: v3, endpoint: "127.0.0.1:8003"}
stable: v2
candidate: v3
state_dir: ./state
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_723_450_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    shutil.copy(EXAMPLE, path)
    return path


async def statuses(registry: Registry) -> dict[str, VersionStatus]:
    return {v.tag: v.status for v in await registry.list_versions()}


async def test_runtime_status_and_evidence_survive_a_restart_without_touching_the_git_file(
    tmp_path: Path, registry_file: Path
):
    original = await asyncio.to_thread(registry_file.read_bytes)
    db = tmp_path / "state" / "state.db"
    registry = await FileRegistry.from_file(registry_file, db, clock=Clock())
    assert (
        await registry.set_status("v3", S.FAILED, "rollback 3f2a: p99 212 ms > 120 ms", "rule:latency-p99")
        == S.CANDIDATE
    )
    check = EvidenceCheck(
        name="post_rollback_error_rate",
        value=0.0002,
        threshold=0.001,
        comparison="<=",
        passed=True,
        at=datetime(2024, 8, 12, 9, 31, tzinfo=UTC),
        approved_by="agent:verification",
    )
    await registry.add_evidence("v2", check)
    await registry.close()

    reopened = await FileRegistry.from_file(registry_file, db)
    v3 = await reopened.get("v3")
    assert v3.status is S.FAILED and v3.declared_status is S.CANDIDATE and v3.overridden
    assert v3.status_change is not None and v3.status_change.actor == "rule:latency-p99"
    assert "rollback 3f2a" in v3.status_change.reason
    v2 = await reopened.get("v2")
    assert v2.evidence[-1] == check and len(v2.evidence) == 4
    assert await statuses(reopened) == {"v1": S.VERIFIED, "v2": S.VERIFIED, "v3": S.FAILED}
    await reopened.close()
    assert await asyncio.to_thread(registry_file.read_bytes) == original


async def test_a_quarantined_version_is_never_promoted_or_chosen_until_an_operator_clears_it(
    tmp_path: Path, registry_file: Path
):
    db = tmp_path / "state.db"
    registry = await FileRegistry.from_file(registry_file, db)
    assert await registry.set_status("v2", S.QUARANTINED, "suspected label leak", "operator:ana") == S.VERIFIED
    assert [v.tag for v in rollback_targets(await registry.list_versions(), "v3")] == ["v1"]
    for promotion in (S.VERIFIED, S.STABLE, S.CANARY, S.CANDIDATE):
        with pytest.raises(StatusTransitionError, match="v2 is quarantined \\(suspected label leak\\)"):
            await registry.set_status("v2", promotion, "verification passed", "agent:verification")
    # Quarantine again keeps what to restore; failing or retiring it stays allowed.
    assert await registry.set_status("v2", S.QUARANTINED, "still investigating", "operator:bo") == S.QUARANTINED
    await registry.close()

    registry = await FileRegistry.from_file(registry_file, db)
    assert (await registry.get("v2")).status is S.QUARANTINED
    assert await registry.clear_quarantine("v2", "operator:ana", "label leak ruled out") == S.VERIFIED
    v2 = await registry.get("v2")
    assert v2.status is S.VERIFIED and v2.status_change is not None
    assert v2.status_change.actor == "operator:ana" and v2.status_change.reason == "label leak ruled out"
    assert [v.tag for v in rollback_targets(await registry.list_versions(), "v3")] == ["v2", "v1"]
    with pytest.raises(StatusTransitionError, match="v2 is verified, not quarantined"):
        await registry.clear_quarantine("v2", "operator:ana")
    await registry.close()


@pytest.fixture
def quarantined_in_file(registry_file: Path) -> Path:
    registry_file.write_text(registry_file.read_text().replace("status: candidate", "status: quarantined"))
    return registry_file


async def test_a_version_quarantined_in_the_file_is_cleared_to_candidate(tmp_path: Path, quarantined_in_file: Path):
    registry_file = quarantined_in_file
    registry = await FileRegistry.from_file(registry_file, tmp_path / "state.db")
    assert await registry.clear_quarantine("v3", "operator:ana") == S.CANDIDATE
    assert (await registry.get("v3")).status_change is not None
    await registry.close()


async def test_unknown_versions_are_refused(tmp_path: Path, registry_file: Path):
    registry = await FileRegistry.from_file(registry_file, tmp_path / "state.db")
    with pytest.raises(UnknownVersionError, match="unknown version 'v9'; the registry has v1, v2, v3"):
        await registry.get("v9")
    with pytest.raises(UnknownVersionError):
        await registry.set_status("v9", S.FAILED, "", "operator:ana")
    await registry.close()


async def test_the_overlay_shares_state_db_with_the_state_store(tmp_path: Path, registry_file: Path):
    db = tmp_path / "state.db"
    store = await SqliteStateStore.open(db)
    registry = await FileRegistry.from_file(registry_file, db)
    policy = TrafficPolicy((("v1", 0), ("v2", 100), ("v3", 0)), 2, "r", "operator:ana", 1.0)
    await store.change_policy(policy, audit_pb2.TrafficIntent(to_policy=policy_to_pb(policy)), "operator:ana")
    await registry.set_status("v3", S.FAILED, "r", "operator:ana")
    await store.close()
    await registry.close()
    store = await SqliteStateStore.open(db)
    registry = await FileRegistry.from_file(registry_file, db)
    assert await store.load_policy() == policy
    assert (await registry.get("v3")).status is S.FAILED
    await store.close()
    await registry.close()


async def test_without_a_registry_file_the_config_versions_are_the_registry(tmp_path: Path):
    config = parse_config(CONFIG, "agent.yaml", tmp_path)
    registry = await open_registry(config)
    assert registry.state_db == tmp_path / "state" / "state.db"
    assert registry.model == "credit-scorer"
    versions = await registry.list_versions()
    assert [(v.tag, v.status) for v in versions] == [("v1", S.VERIFIED), ("v2", S.STABLE), ("v3", S.CANDIDATE)]
    assert versions[0].created < versions[1].created < versions[2].created
    assert [v.tag for v in rollback_targets(versions, "v3")] == ["v2", "v1"]
    await registry.set_status("v3", S.FAILED, "rollback", "rule:x")
    await registry.close()
    registry = await FileRegistry.from_agent_config(config)
    assert (await registry.get("v3")).status is S.FAILED
    await registry.close()


async def test_the_registry_file_must_match_the_config(tmp_path: Path, registry_file: Path):
    config = parse_config(CONFIG.replace("credit-scorer", "fraud"), "agent.yaml", tmp_path)
    with pytest.raises(RegistryFileError, match="model: the registry is for 'credit-scorer', the agent config for"):
        await open_registry(config, registry_file)
    config = parse_config(
        CONFIG.replace(
            '- {tag: v3, endpoint: "127.0.0.1:8003"}',
            '- {tag: v3, endpoint: "127.0.0.1:8003"}\n  - {tag: v4, endpoint: "127.0.0.1:8004"}',
        ),
        "agent.yaml",
        tmp_path,
    )
    with pytest.raises(RegistryFileError, match="versions: no entry for v4"):
        await open_registry(config, registry_file)
    registry = await open_registry(parse_config(CONFIG, "agent.yaml", tmp_path), registry_file)
    assert registry.origin == str(registry_file)
    await registry.close()
