"""A memory limit the process really hits, and the leak fault that hits it.

`apply_memory_limit(mb)` emulates a container memory limit with RLIMIT_AS. RLIMIT_AS caps the address space, not
resident memory, and a Python process with numpy and scikit-learn maps far more than it touches; so the limit
is set to the current address space plus the headroom left under `mb` of resident memory. Memory the leak
allocates and touches grows both by the same amount, so the allocation that would take resident memory past
about `mb` fails with MemoryError, and the server then exits with 137, as a container killed by the OOM killer.
The address space also grows for reasons of its own (thread stacks, allocator arenas), so the cap keeps some slack
and `over_limit` checks resident memory itself, as a cgroup's memory.max does: the leak fault exits with 137 when
resident memory reaches the limit, whichever comes first.
"""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

MB: Final = 1024 * 1024
OOM_EXIT_CODE: Final = 137  # what a container killed by the kernel's OOM killer exits with (128 + SIGKILL)
_STATUS: Final = Path("/proc/self/status")
ADDRESS_SPACE_SLACK: Final = 256 * MB  # address space that is not resident memory (stacks, arenas) grows too


class MemoryLimitError(ValueError):
    """The limit cannot be applied (below what the process already uses)."""


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def apply_memory_limit(limit_mb: float) -> int:
    """Cap the process at about `limit_mb` of resident memory; returns the RLIMIT_AS set, in bytes."""
    limit = int(limit_mb * MB)
    address_space_kb, resident_kb = _status_kb("VmSize"), _status_kb("VmRSS")
    if address_space_kb is None or resident_kb is None:  # no /proc: the plain address-space limit
        cap = limit
    else:
        headroom = limit - resident_kb * 1024
        if headroom <= 0:
            raise MemoryLimitError(
                f"--memory-limit-mb {limit_mb:g} is below the {resident_kb / 1024:.0f} MB the server already uses"
            )
        cap = address_space_kb * 1024 + headroom + ADDRESS_SPACE_SLACK
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    log.info("memory limit %g MB (RLIMIT_AS %d MB)", limit_mb, cap // MB)
    return cap


def over_limit(limit_mb: float) -> bool:
    """Resident memory at or above the limit (what a cgroup's OOM killer acts on)."""
    resident_kb = _status_kb("VmRSS")
    return resident_kb is not None and resident_kb * 1024 >= limit_mb * MB


def exit_out_of_memory(what: str) -> None:
    """Die as an OOM-killed container does: no clean-up, exit code 137."""
    log.error("out of memory (%s): exiting with code %d", what, OOM_EXIT_CODE)
    os._exit(OOM_EXIT_CODE)


class MemoryLeak:
    """Memory allocated, touched (so it is resident) and never given back while the process runs."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.leaked_bytes = 0
        self._owed = 0.0  # fractions of a byte carried to the next call

    def leak(self, n_bytes: float) -> None:
        """Keep about `n_bytes` more; MemoryError when the process is at its limit."""
        self._owed += n_bytes
        whole = int(self._owed)
        if whole <= 0:
            return
        self._chunks.append(b"\x01" * whole)  # written, so resident (a zeroed buffer could stay unmapped)
        self._owed -= whole
        self.leaked_bytes += whole
