from datetime import UTC, datetime

from agent.ports.registry import VersionStatus
from agent.registry import Constraints, VersionSpec, check_compatibility
from agent.registry.model import InputSchema, Requirements

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64


def version(**requirements: object) -> VersionSpec:
    fields: dict[str, object] = {"memory_mb": 1024, "cpu": 1, "runtime": "sklearn-1.4/python-3.11"}
    fields.update(requirements)
    return VersionSpec(
        tag="v2",
        status=VersionStatus.VERIFIED,
        created=datetime(2024, 1, 1, tzinfo=UTC),
        requirements=Requirements.model_validate(fields),
    )


def reasons(v: VersionSpec, constraints: Constraints) -> list[str]:
    return [str(i) for i in check_compatibility(v, constraints)]


def test_every_unmet_requirement_is_named_in_words():
    v = version(
        memory_mb=4096,
        cpu=4,
        gpu=1,
        runtime="xgboost-2.0/python-3.12",
        input_schema=InputSchema(features=("income", "age", "tenure"), schema_hash=HASH_A),
    )
    constraints = Constraints(
        memory_mb=2048,
        cpu=2,
        gpu=0,
        runtimes=frozenset({"sklearn-1.4/python-3.11"}),
        features=("age",),
        schema_hash=HASH_B,
    )
    assert reasons(v, constraints) == [
        "needs 4096 MB of memory, the pod has 2048 MB",
        "needs 4 CPU cores, the pod has 2",
        "needs 1 GPU, the pod has 0",
        "needs runtime xgboost-2.0/python-3.12, the pod provides sklearn-1.4/python-3.11",
        "expects features [income, age, tenure]; missing from the pipeline schema: income, tenure",
        f"expects input schema {HASH_A}, the pipeline's schema is {HASH_B}",
    ]
    assert [i.field for i in check_compatibility(v, constraints)] == [
        "memory_mb",
        "cpu",
        "gpu",
        "runtime",
        "input_schema",
        "input_schema",
    ]


def test_met_requirements_and_extra_pipeline_features_are_compatible():
    v = version(input_schema=InputSchema(features=("income", "age")))
    constraints = Constraints(
        memory_mb=1024,
        cpu=1,
        gpu=0,
        runtimes=frozenset({"SKLEARN-1.4/python-3.11", "onnx-1.17"}),
        features=("age", "income", "region"),
    )
    assert check_compatibility(v, constraints) == []


def test_unknown_constraints_and_unrecorded_requirements_are_not_held_against_a_version():
    assert check_compatibility(version(memory_mb=999_999), Constraints()) == []
    bare = VersionSpec(tag="v1", status=VersionStatus.VERIFIED, created=datetime(2024, 1, 1, tzinfo=UTC))
    assert check_compatibility(bare, Constraints(memory_mb=1, runtimes=frozenset(), features=())) == []


def test_a_version_not_deployed_beside_the_agent_cannot_be_switched_to():
    assert reasons(version(), Constraints(deployed=frozenset({"v1", "v3"}))) == [
        "is not deployed beside this agent (the agent config has v1, v3)"
    ]
