"""Locating external binaries, with an actionable error when one is missing."""

from __future__ import annotations

import os
import shutil

__all__ = ["APT_HINT", "MissingBinaryError", "find_binary", "require_binary"]

APT_HINT = "install with: apt-get install -y --no-install-recommends prometheus prometheus-alertmanager"


class MissingBinaryError(FileNotFoundError):
    """A binary the harness needs is not installed. Integration tests skip on it outside CI and fail in CI."""


def find_binary(name: str, env_var: str | None = None) -> str | None:
    """`$env_var` if set (an explicit override), else `name` on PATH, else None."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    return shutil.which(name)


def require_binary(name: str, hint: str, env_var: str | None = None) -> str:
    """Like `find_binary` but raises MissingBinaryError naming `hint` (how to install it)."""
    path = find_binary(name, env_var)
    if path is None:
        override = f" (or set {env_var})" if env_var else ""
        raise MissingBinaryError(f"`{name}` not found on PATH{override}; {hint}")
    return path
