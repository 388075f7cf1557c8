"""The version registry: which versions exist, what they are (provenance, requirements, baseline, evidence), their
status, and which of them a rollback may go to. Pure: the file and the runtime overlay are read by
agent.adapters.registry.
"""

from typing import TypeAlias

from agent.ports.registry import (
    StatusTransitionError,
    UnknownVersionError,
    VersionRegistry,
    VersionStatus,
)
from agent.registry.compatibility import Constraints, Incompatibility, check_compatibility
from agent.registry.loader import RegistryFileError, RegistrySource, load_registry, parse_registry
from agent.registry.model import EvidenceCheck, Version, VersionSpec
from agent.registry.planning import PlannedTarget, plan_rollback
from agent.registry.selection import TargetRefusedError, ineligible, rollback_targets

# The registry port with this package's types: what the engine and the CLI hold.
Registry: TypeAlias = VersionRegistry[Version, EvidenceCheck]

__all__ = [
    "Constraints",
    "EvidenceCheck",
    "Incompatibility",
    "PlannedTarget",
    "Registry",
    "RegistryFileError",
    "RegistrySource",
    "StatusTransitionError",
    "TargetRefusedError",
    "UnknownVersionError",
    "Version",
    "VersionSpec",
    "VersionStatus",
    "check_compatibility",
    "ineligible",
    "load_registry",
    "parse_registry",
    "plan_rollback",
    "rollback_targets",
]
