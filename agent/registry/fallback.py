"""The registry used when no registry file is configured: the versions of the agent config, nothing more.

Statuses: the config's stable version -> stable, its candidate -> candidate, every other version -> verified
(an operator listed it as servable). There is no provenance, requirement or evidence to show, and no real
creation time: `created` is synthetic, one second apart in config order from the Unix epoch, so "older" means
"listed earlier in agent.yaml" when rollback targets are ordered. Runtime statuses persist as with a file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.config import AgentConfig
from agent.ports.registry import VersionStatus
from agent.registry.loader import RegistrySource, load_registry
from agent.registry.model import VersionSpec

CONFIG_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def registry_from_config(config: AgentConfig, origin: str = "agent config (no registry file)") -> RegistrySource:
    versions = []
    for index, entry in enumerate(config.versions):
        if entry.tag == config.stable:
            status = VersionStatus.STABLE
        elif entry.tag == config.candidate:
            status = VersionStatus.CANDIDATE
        else:
            status = VersionStatus.VERIFIED
        versions.append(
            VersionSpec(
                tag=entry.tag,
                status=status,
                created=CONFIG_EPOCH + timedelta(seconds=index),
                description=f"from the agent config (position {index + 1}); no registry file, creation time unknown",
            )
        )
    return RegistrySource(model=config.model.name, versions=tuple(versions), origin=origin)


def created_text(created: datetime, formatted: str) -> str:
    """How to show a creation time: the synthetic ones of this fallback say what they are."""
    return "unknown (config order)" if created < CONFIG_EPOCH + timedelta(days=1) else formatted


def declared_statuses(config: AgentConfig) -> dict[str, str]:
    """Statuses the registry declares (its file, or this fallback), before any runtime change: what a new state
    store must respect. Raises RegistryFileError for a bad file."""
    source = load_registry(config.registry_file) if config.registry_file else registry_from_config(config)
    return {v.tag: str(v.status) for v in source.versions}
