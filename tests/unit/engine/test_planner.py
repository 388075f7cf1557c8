"""The mark a rollback leaves, by policy: `failed`, or `quarantined` (cleared only by an operator, back to
`failed` — never to an eligible status)."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.adapters.registry import FileRegistry
from agent.engine.planner import RegistryPlanner
from agent.ports.registry import VersionStatus
from agent.registry import Constraints

ROOT = Path(__file__).resolve().parents[3]


async def open_planner(tmp_path: Path, *, quarantine: bool) -> tuple[RegistryPlanner, FileRegistry]:
    registry_file = tmp_path / "registry.yaml"
    shutil.copy(ROOT / "rules" / "registry.example.yaml", registry_file)
    registry = await FileRegistry.from_file(registry_file, tmp_path / "state.db")
    planner = RegistryPlanner(registry, Constraints(), quarantine_rolled_back=quarantine)
    return planner, registry


async def test_a_rolled_back_version_is_failed_by_default(tmp_path: Path):
    planner, registry = await open_planner(tmp_path, quarantine=False)
    tag = (await registry.list_versions())[-1].tag
    await planner.mark_failed(tag, "rollback r1", "rule:error-rate")
    assert (await registry.get(tag)).status is VersionStatus.FAILED
    await registry.close()


async def test_quarantine_by_policy_clears_back_to_failed_not_to_an_eligible_status(tmp_path: Path):
    planner, registry = await open_planner(tmp_path, quarantine=True)
    tag = (await registry.list_versions())[-1].tag
    before = (await registry.get(tag)).status
    assert await planner.mark_failed(tag, "rollback r1", "rule:error-rate") == before.value
    assert (await registry.get(tag)).status is VersionStatus.QUARANTINED
    assert planner.statuses[tag] == "quarantined"
    assert await registry.clear_quarantine(tag, "local:ana", "investigated") is VersionStatus.FAILED
    await registry.close()
