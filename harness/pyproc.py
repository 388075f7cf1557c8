"""Running the repo's own Python modules (`python -m X`) as subprocesses."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["REPO_ROOT", "module_argv", "python_env"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def module_argv(module: str, args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """`[python, "-m", module, *args]` with the running interpreter by default (the venv's)."""
    return [python or sys.executable, "-m", module, *[str(a) for a in args]]


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment, unbuffered output, the repo root first on PYTHONPATH, then `extra`."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    if extra:
        env.update(extra)
    return env
