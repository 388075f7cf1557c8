"""Can a version run here? Its recorded requirements against the pod's constraints and the feature pipeline. Pure.

A constraint left as None is unknown and not checked; a version without recorded requirements (the fallback
registry) has only its deployment to check. Both are reported as compatible: this is a static pre-filter, and the live
checks (readiness, golden inference, feature pipeline) still run on the target before any switch.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.registry.model import Requirements, VersionSpec


@dataclass(frozen=True, slots=True)
class Constraints:
    memory_mb: int | None = None  # the pod's memory limit
    cpu: float | None = None  # the pod's CPU limit, in cores
    gpu: int | None = None  # GPUs available to the pod
    runtimes: frozenset[str] | None = None  # runtimes the serving image provides, e.g. "sklearn-1.4/python-3.11"
    features: tuple[str, ...] | None = None  # the feature schema the pipeline produces now
    schema_hash: str | None = None  # the hash of that schema, when the pipeline publishes one
    # The versions this pod can route to (the agent config's versions); a target outside them cannot be switched to.
    deployed: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Incompatibility:
    field: str  # what is not met: deployed, memory_mb, cpu, gpu, runtime, input_schema
    reason: str  # human-readable, e.g. "needs 4096 MB of memory, the pod has 2048 MB"

    def __str__(self) -> str:
        return self.reason


def _plural(count: float, word: str) -> str:
    return f"{count:g} {word}" + ("" if count == 1 else "s")


def check_compatibility(version: VersionSpec, constraints: Constraints) -> list[Incompatibility]:
    """Every requirement of the version the constraints do not meet; empty = compatible (as far as is known)."""
    found: list[Incompatibility] = []
    if constraints.deployed is not None and version.tag not in constraints.deployed:
        deployed = ", ".join(sorted(constraints.deployed)) or "none"
        found.append(
            Incompatibility("deployed", f"is not deployed beside this agent (the agent config has {deployed})")
        )
    if version.requirements is not None:
        found.extend(_requirements(version.requirements, constraints))
    return found


def _requirements(requirements: Requirements, constraints: Constraints) -> list[Incompatibility]:
    found: list[Incompatibility] = []
    if constraints.memory_mb is not None and requirements.memory_mb > constraints.memory_mb:
        found.append(
            Incompatibility(
                "memory_mb",
                f"needs {requirements.memory_mb} MB of memory, the pod has {constraints.memory_mb} MB",
            )
        )
    if constraints.cpu is not None and requirements.cpu > constraints.cpu:
        found.append(
            Incompatibility("cpu", f"needs {_plural(requirements.cpu, 'CPU core')}, the pod has {constraints.cpu:g}")
        )
    if constraints.gpu is not None and requirements.gpu > constraints.gpu:
        found.append(Incompatibility("gpu", f"needs {_plural(requirements.gpu, 'GPU')}, the pod has {constraints.gpu}"))
    if constraints.runtimes is not None:
        available = {r.casefold() for r in constraints.runtimes}
        if requirements.runtime.casefold() not in available:
            provided = ", ".join(sorted(constraints.runtimes)) or "none"
            found.append(
                Incompatibility("runtime", f"needs runtime {requirements.runtime}, the pod provides {provided}")
            )
    schema = requirements.input_schema
    if schema is not None and constraints.features is not None:
        have = set(constraints.features)
        missing = [f for f in schema.features if f not in have]
        if missing:
            found.append(
                Incompatibility(
                    "input_schema",
                    f"expects features [{', '.join(schema.features)}]; missing from the pipeline schema: "
                    + ", ".join(missing),
                )
            )
    if (
        schema is not None
        and schema.schema_hash is not None
        and constraints.schema_hash is not None
        and schema.schema_hash != constraints.schema_hash
    ):
        found.append(
            Incompatibility(
                "input_schema",
                f"expects input schema {schema.schema_hash}, the pipeline's schema is {constraints.schema_hash}",
            )
        )
    return found
