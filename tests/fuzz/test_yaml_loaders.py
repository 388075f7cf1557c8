"""Every loader of a human-written YAML file, fed anything: it returns a value or raises its documented error,
with a line wherever the problem has one, within a time bound; never a traceback, a hang or a RecursionError.

FUZZ_EXAMPLES sets the examples per property (default 200; e.g. 10000 for a long run).
"""

from __future__ import annotations

import gc
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import ConfigError, parse_config
from agent.registry import RegistryFileError, parse_registry
from agent.triggers import RuleFileError, check_rule_files, load_rules
from agent.triggers.tiers import parse_tier_profile

REPO = Path(__file__).resolve().parents[2]
# The shipped rule file and tier profiles (the rollout plans beside them are not rule files: tests/unit/rollout).
SHIPPED = [
    REPO / "rules" / "default.yaml",
    *sorted(p for p in (REPO / "rules" / "tiers").glob("*.yaml") if not p.name.startswith("rollout-")),
]
REGISTRY_EXAMPLE = REPO / "rules" / "registry.example.yaml"
SOURCE = "fuzz.yaml"
# Bounds on the loading thread's CPU time (not wall time, which other processes on a shared machine stretch).
TIME_BOUND_S = 5.0  # generous; a hang or a blow-up is far beyond it
# An alias bomb or a deep file is refused before anything is built (measured: < 0.2 s). The bound is a blow-up
# detector, not a speed target.
REFUSAL_BOUND_S = 2.0

VALID_CONFIG = b"""\
model: {name: credit-scorer, tier: critical}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - tag: v2
    endpoint: "127.0.0.1:8002"
    metrics_path: /metrics
stable: v1
candidate: v2
initial_weights: {v1: 90, v2: 10}
envoy:
  listener: {address: 127.0.0.1, port: 10000}
  admin: {address: 127.0.0.1, port: 9901}
  route_timeout_s: 15
xds: {address: 127.0.0.1, port: 18000}
http: {address: 127.0.0.1, port: 9090}
control:
  listen: {address: 127.0.0.1, port: 9091}
  token_env: ROLLBACK_AGENT_TOKEN
state_dir: ./state
signals: {interval_s: 1, timeout_s: 0.8}
probes:
  golden:
    request: {inputs: [{name: x, shape: [1, 2], datatype: FP32, data: [1.0, 2.0]}]}
    expect: [0.5]
    tolerance: 0.01
rules: {file: rules/default.yaml, reload_interval_s: 2}
rollback: {cooldown_s: 300, max_per_hour: 3}
constraints: {memory_mb: 2048, cpu: 2, runtimes: [sklearn-1.4/python-3.11], feature_schema: [income, age]}
"""

# Fragments that exercise the YAML machinery rather than the bytes: anchors, aliases, merges, tags, flow and block
# structure, documents, odd characters and encodings.
TOKENS = [
    b"&a ", b"*a", b"<<: *a\n", b"<<: ", b"!!int ", b"!!str ", b"!!timestamp ", b"!!binary ", b"!!set ",
    b"!!python/name:os.system ", b"? ", b": ", b"- ", b"[", b"]", b"{", b"}", b",", b"\n", b"\t", b"  ", b"'", b'"',
    b"|", b">", b"#", b"---\n", b"...\n", b"%YAML 1.1\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xc3", b"\xe2\x80\xa8",
    b"\r", b"~", b"null", b".inf", b"2024-02-30", b"9" * 5000, b"0x", b"1e999", b"&b [*a, *a, *a]\n",
]  # fmt: skip


def examples() -> settings:
    return settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """The original with a few random edits: bytes flipped, inserted, deleted; YAML tokens inserted; lines
    duplicated or dropped; truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "token", "delete", "line", "truncate"]))
        if edit == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == "line":
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if draw(st.booleans()):
                lines.insert(index, lines[index])
            else:
                del lines[index]
            data = bytearray(b"\n".join(lines))
        elif edit == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    levels = draw(st.integers(1, 10_000))
    style = draw(st.sampled_from(["flow-list", "flow-map", "block-list", "mixed"]))
    if style == "flow-list":
        body = "[" * levels + "]" * levels
    elif style == "flow-map":
        body = "{a: " * levels + "}" * levels
    elif style == "block-list":
        body = "- " * levels + "x"
    else:
        pattern = draw(st.lists(st.sampled_from(["[", "{a: ", "[{b: ", "- "]), min_size=1, max_size=6))
        body = "".join(pattern) * (levels // len(pattern) + 1)
    where = draw(st.sampled_from(["top", "rules", "field"]))
    if where == "top":
        text = body
    elif where == "rules":
        text = "rules:\n  - name: e\n    kind: error_rate\n    window: " + body
    else:
        text = "model: {name: m}\nversions:\n  - " + body
    return (text + "\n").encode()


@st.composite
def alias_bomb(draw: st.DrawFn) -> tuple[bytes, int]:
    """A "billion laughs" document and the node count of its last anchor with every alias expanded."""
    levels = draw(st.integers(2, 12))
    fan_out = draw(st.integers(2, 20))
    style = draw(st.sampled_from(["flow", "block", "mapping"]))
    lines = []
    size = 0
    for level in range(levels):
        item = f"*a{level - 1}" if level else "lol"
        if style == "flow":
            lines.append(f"a{level}: &a{level} [" + ", ".join([item] * fan_out) + "]")
        elif style == "block":
            lines.append(f"a{level}: &a{level}\n" + "".join(f"  - {item}\n" for _ in range(fan_out)).rstrip())
        else:
            lines.append(f"a{level}: &a{level} {{" + ", ".join(f"k{i}: {item}" for i in range(fan_out)) + "}")
        size = 1 + fan_out * ((size or 1) + (style == "mapping"))
    tail = draw(st.sampled_from(["rules: []\n", "rules: [*a{last}]\n", "versions: *a{last}\n"]))
    return ("\n".join(lines) + "\n" + tail.format(last=levels - 1)).encode(), size


EXEMPT = ("the file is larger than", "and ")  # no line to give: the whole file, or a count of further errors


def rule_errors_are_located(exc: RuleFileError) -> None:
    assert exc.errors
    for error in exc.errors:
        assert error.source == SOURCE
        assert error.line >= 1 or error.message.startswith(EXEMPT), error


def text_errors_are_located(exc: Exception) -> None:
    lines = [line for line in str(exc).splitlines() if line.startswith(SOURCE)]
    assert lines, str(exc)
    for line in lines:
        located = re.match(rf"^{re.escape(SOURCE)}:[1-9]\d*: ", line)
        assert located or line.removeprefix(f"{SOURCE}: ").startswith(EXEMPT), line


LOADERS: dict[str, tuple[Callable[[bytes], Any], type[Exception], Callable[[Any], None]]] = {
    "rules": (lambda data: load_rules(data, SOURCE), RuleFileError, rule_errors_are_located),
    "tier profile": (lambda data: parse_tier_profile(data, SOURCE), RuleFileError, rule_errors_are_located),
    "config": (lambda data: parse_config(data, SOURCE), ConfigError, text_errors_are_located),
    "registry": (lambda data: parse_registry(data, SOURCE), RegistryFileError, text_errors_are_located),
}


def load_every_way(data: bytes, bound_s: float = TIME_BOUND_S) -> dict[str, bool]:
    """Feed `data` to every loader; returns loader -> accepted. Fails on any other exception or a slow answer."""
    accepted = {}
    for name, (load, error_type, located) in LOADERS.items():
        # The cyclic garbage collector is off while a loader runs: a collection of everything the fuzz process holds
        # (gigabytes after 10,000 examples) is not the loader's time, and took one 10,000-deep input to 2.1 s.
        gc.disable()
        started = time.thread_time()
        try:
            load(data)
            accepted[name] = True
        except error_type as exc:
            located(exc)
            accepted[name] = False
        finally:
            elapsed = time.thread_time() - started
            gc.enable()
        assert elapsed < bound_s, f"{name} took {elapsed:.2f}s"
    return accepted


WORDS = [b"rules:", b"tier:", b"model:", b"versions:", b"name: e", b"kind: error_rate", b"window: 1m", b"tag: v1",
         b"stable: v1", b"defaults:", b"common:", b"a", b"1", b"-1.5", b"true", b" ", b"\n  ", b"\n    "]  # fmt: skip

# Arbitrary bytes; arbitrary text; and a soup of YAML tokens and the loaders' own keys, which gets much further
# into the parser, the composer and the validators than random bytes do.
ANY_INPUT = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=2048).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from(TOKENS + WORDS), max_size=80).map(b"".join),
)


@examples()
@given(ANY_INPUT)
def test_arbitrary_input(data: bytes) -> None:
    load_every_way(data)


@examples()
@given(deep())
def test_deep_nesting_up_to_ten_thousand_levels(data: bytes) -> None:
    load_every_way(data, REFUSAL_BOUND_S)


@examples()
@given(alias_bomb())
def test_alias_bombs_are_refused_well_under_a_second(bomb: tuple[bytes, int]) -> None:
    data, expanded = bomb
    too_big = expanded > 100_000
    accepted = load_every_way(data, REFUSAL_BOUND_S if too_big else TIME_BOUND_S)
    if too_big:
        assert not any(accepted.values())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
@examples()
@given(data=st.data())
def test_mutated_shipped_rule_files(path: Path, data: st.DataObject) -> None:
    load_every_way(data.draw(mutated(path.read_bytes())))


@examples()
@given(mutated(VALID_CONFIG))
def test_mutated_agent_config(data: bytes) -> None:
    load_every_way(data)


@examples()
@given(mutated(REGISTRY_EXAMPLE.read_bytes()))
def test_mutated_registry(data: bytes) -> None:
    load_every_way(data)


def test_the_seeds_are_valid() -> None:
    """The mutations start from files every loader meant for them accepts."""
    assert parse_config(VALID_CONFIG, SOURCE).tags == ["v1", "v2"]
    assert parse_registry(REGISTRY_EXAMPLE.read_bytes(), SOURCE).versions
    assert check_rule_files(SHIPPED) == []


@examples()
@given(st.one_of(mutated(VALID_CONFIG), mutated(SHIPPED[0].read_bytes()), deep(), alias_bomb().map(lambda b: b[0])))
def test_the_cli_checks_never_show_a_traceback(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cli") / "file.yaml"
    path.write_bytes(data)
    assert main(["check-config", str(path)]) in (0, 2)
    assert main(["rules", "check", str(path)]) in (0, 1)
    for error in check_rule_files([path]):
        assert error.source == str(path) and (error.line >= 1 or error.message.startswith(EXEMPT))
