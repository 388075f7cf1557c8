"""Fault injection for adversarial runs (bench/chaos.py): state-file damage, storage faults on a running
process, Envoy's served route, and reading a pytest run's per-test outcome and Hypothesis statistics.

Storage faults on a running process:

- `immutable(paths)`: `chattr +i` on the state dir and every file in it. The kernel then refuses every write,
  also through descriptors opened before (EPERM), and the creation of new files (journals): a read-only state
  dir that even root cannot write. Needs root (CAP_LINUX_IMMUTABLE) and a file system with the flag (ext4, xfs;
  not tmpfs or overlayfs).
- `file_size_limit(pid)`: a proxy for a full disk. RLIMIT_FSIZE of the running process is lowered to 0 bytes
  (prlimit(2)), so every write to a regular file fails with EFBIG (Python ignores SIGXFSZ, so the process is
  not killed). What it cannot show: a real ENOSPC (SQLite and the agent may treat EFBIG and ENOSPC differently),
  a disk that fills part-way through a write, and other processes' writes; it also stops the process's own log
  file writes while it lasts.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "STATE_FAULTS",
    "TestOutcome",
    "damage_state",
    "file_size_limit",
    "immutable",
    "parse_hypothesis_statistics",
    "parse_junit",
    "route_weights",
]

STATE_FAULTS = ("delete", "truncate_empty", "truncate_mid", "corrupt", "foreign", "remove_dir")
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def damage_state(fault: str, state_dir: Path, rng: random.Random, foreign_db: Path | None = None) -> str:
    """Damage the stopped agent's `state_dir/state.db` in the way `fault` names (see STATE_FAULTS); returns
    what was done, for the record."""
    db = state_dir / "state.db"
    if fault == "delete":
        for path in [db, *(db.with_name(db.name + s) for s in _SQLITE_SIDE_FILES)]:
            path.unlink(missing_ok=True)
        return f"deleted {db.name} and its -wal/-shm/-journal"
    if fault == "truncate_empty":
        os.truncate(db, 0)
        return f"truncated {db.name} to 0 bytes"
    if fault == "truncate_mid":
        size = db.stat().st_size
        os.truncate(db, size // 2 + 7)  # not on a page boundary
        return f"truncated {db.name} from {size} to {size // 2 + 7} bytes"
    if fault == "corrupt":
        # Random bytes over the b-tree page header of every page after the first: every table and index is
        # damaged (random bytes at random offsets may land in free space, which no check can notice).
        data = bytearray(db.read_bytes())
        page = int.from_bytes(data[16:18], "big") or 65536
        for start in range(page, len(data), page):
            data[start : start + 32] = rng.randbytes(32)
        db.write_bytes(bytes(data))
        return f"overwrote 32 random bytes at the start of each of {max(0, len(data) // page - 1)} pages"
    if fault == "foreign":
        if foreign_db is None:
            raise ValueError("the foreign fault needs another model's state.db")
        for path in [db, *(db.with_name(db.name + s) for s in _SQLITE_SIDE_FILES)]:
            path.unlink(missing_ok=True)
        shutil.copyfile(foreign_db, db)
        return f"replaced {db.name} with {foreign_db} (another model's)"
    if fault == "remove_dir":
        shutil.rmtree(state_dir)
        return f"removed {state_dir}"
    raise ValueError(f"unknown state fault {fault!r}; one of {', '.join(STATE_FAULTS)}")


def _chattr(flag: str, paths: Iterable[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def immutable(directory: Path) -> Iterator[list[Path]]:
    """`chattr +i` on `directory` and the files in it for the duration; always undone. Yields the paths."""
    paths = [directory, *sorted(p for p in directory.iterdir() if p.is_file())]
    _chattr("+i", paths)
    try:
        yield paths
    finally:
        _chattr("-i", [p for p in paths if p.exists()])


def immutable_supported(directory: Path) -> str | None:
    """None when `immutable(directory)` will work, else why not."""
    if shutil.which("chattr") is None:
        return "chattr is not installed"
    probe = directory / ".chaos-immutable-probe"
    probe.write_text("x")
    try:
        _chattr("+i", [probe])
        _chattr("-i", [probe])
    except subprocess.CalledProcessError as exc:
        return f"chattr +i refused: {exc.stderr.strip()}"
    finally:
        probe.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def file_size_limit(pid: int, limit_bytes: int = 0) -> Iterator[None]:
    """Lower the soft RLIMIT_FSIZE of a running process to `limit_bytes` for the duration (the hard limit stays,
    so the soft one can be raised again without privileges)."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def route_weights(config_dump: Mapping[str, Any]) -> dict[str, int]:
    """{cluster: weight} of every weighted route in Envoy's `/config_dump?resource=dynamic_route_configs`."""
    weights: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            clusters = node.get("weighted_clusters", {}).get("clusters") if "weighted_clusters" in node else None
            if isinstance(clusters, list):
                for c in clusters:
                    weights[str(c.get("name"))] = int(c.get("weight", 0))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config_dump)
    return weights


@dataclass
class TestOutcome:
    """One test case of a pytest run: junit outcome and duration, Hypothesis example counts when printed."""

    nodeid: str
    outcome: str  # passed, failed, error, skipped
    duration_s: float
    message: str = ""
    examples: dict[str, int] = field(default_factory=dict)  # passing, failing, invalid


def parse_junit(path: Path) -> list[TestOutcome]:
    """The test cases of a pytest `--junitxml` file, with node ids as pytest prints them."""
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        module, cls = _split_classname(classname)
        nodeid = f"{module.replace('.', '/')}.py::{cls + '::' if cls else ''}{name}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (element.get("message") or element.text or "")[:500]
                break
        outcomes.append(TestOutcome(nodeid, outcome, float(case.get("time", "0") or 0), message))
    return outcomes


def _split_classname(classname: str) -> tuple[str, str]:
    # pytest writes "tests.fuzz.test_x" or "tests.fuzz.test_x.TestClass".
    parts = classname.split(".")
    if len(parts) > 1 and parts[-1][:1].isupper():
        return ".".join(parts[:-1]), parts[-1]
    return classname, ""


_STATS_TEST = re.compile(r"^(\S+::\S+?):?\s*$")
# "20 passing, 0 failing, and 0 invalid test cases" (Hypothesis 6.100+) or "... passing examples, ..." (older).
_STATS_COUNTS = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,(?: and)? (\d+) invalid")


def parse_hypothesis_statistics(output: str) -> dict[str, dict[str, int]]:
    """{node id: {passing, failing, invalid}} summed over the phases, from `--hypothesis-show-statistics`."""
    stats: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in output.splitlines():
        head = _STATS_TEST.match(line)
        if head:
            current = head.group(1)
            continue
        counts = _STATS_COUNTS.search(line)
        if counts and current is not None:
            entry = stats.setdefault(current, {"passing": 0, "failing": 0, "invalid": 0})
            for key, value in zip(("passing", "failing", "invalid"), counts.groups(), strict=True):
                entry[key] += int(value)
    return stats
