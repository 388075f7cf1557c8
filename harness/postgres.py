"""A throwaway PostgreSQL server (Debian's `postgresql` package) on a free 127.0.0.1 port, in a temp dir.

`initdb` and `postgres` refuse to run as root: as root they run as the `postgres` user (`runuser`), in a directory
under /tmp made for it (pytest's tmp_path is not reachable by that user). The server runs in the foreground as a
ManagedProcess (its own process group, stopped by PID, SIGKILLed with the harness on SIGTERM or exit), with
fsync=off and synchronous_commit=off: tests need speed, not durability. `stop()` is PostgreSQL's fast shutdown
(SIGINT); `kill()` is a crash (SIGKILL: the next start runs crash recovery, and may have lost transactions the
server had acknowledged, as a failover to a lagging replica would); `start()` again reuses the same data dir and
port. `remove()` deletes the directory (also at interpreter exit).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.binaries import MissingBinaryError
from harness.ports import free_port
from harness.process import ManagedProcess
from harness.wait import NotYet, wait_until

__all__ = ["PG_HINT", "PostgresServer", "postgres_bin_dir"]

PG_HINT = "install with: apt-get install -y --no-install-recommends postgresql (or scripts/install-system-deps.sh)"
SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The directory of `initdb` / `postgres` ($HARNESS_POSTGRES_BIN_DIR overrides, else the newest
    /usr/lib/postgresql/N/bin); MissingBinaryError with the apt hint."""
    override = os.environ.get("HARNESS_POSTGRES_BIN_DIR")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise MissingBinaryError(f"PostgreSQL server binaries (initdb, postgres) not found; {PG_HINT}")


def _major(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    def __init__(self, log_dir: str | os.PathLike[str], *, name: str = "postgres", port: int | None = None) -> None:
        self.bin_dir = postgres_bin_dir()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rollback-agent-pg-", dir="/tmp"))
        atexit.register(shutil.rmtree, self.dir, True)
        self.data_dir = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SUPERUSER, "--"]
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._initdb(Path(log_dir) / f"{name}-initdb.log")
        argv = [
            *self._as_user,
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
        ]
        self.process = ManagedProcess(argv, name=name, log_dir=log_dir)

    def _initdb(self, log_path: Path) -> None:
        argv = [
            *self._as_user,
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        with open(log_path, "ab") as log:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed with {result.returncode}; see {log_path}")

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres?connect_timeout=3"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def start(self, timeout_s: float = 15.0) -> Self:
        """Start (or restart) the server and wait until it accepts connections."""
        self.process.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.process.kill()
            raise
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        isready = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        isready += ["-d", "postgres", "-t", "1"]

        def probe() -> bool | NotYet:
            self.process.check_alive()
            return subprocess.run(isready, check=False).returncode == 0 or NotYet(False)

        wait_until(probe, timeout_s, interval_s=0.02, what=f"postgres on 127.0.0.1:{self.port} to accept connections")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Fast shutdown (SIGINT: open sessions are ended), then the harness's SIGTERM/SIGKILL if it hangs."""
        pid = self.process.pid
        if pid is not None and self.process.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        return self.process.stop()

    def kill(self, timeout_s: float = 10.0) -> int | None:
        """A crash: SIGKILL the postmaster's process group, then wait for its backends (each in a session of its
        own) to notice and exit, so that a restart finds no server still holding the data dir."""
        postmaster = self._postmaster_pid()
        code = self.process.kill()

        def gone() -> bool | NotYet:
            # A killed postmaster must be reaped (it is re-parented), or the next start takes it for a live one.
            remaining = self._server_processes()
            if postmaster is not None and Path(f"/proc/{postmaster}").exists():
                remaining.append(postmaster)
            return not remaining or NotYet(remaining)

        wait_until(
            gone,
            timeout_s,
            interval_s=0.01,
            what=f"the processes of the killed postgres on port {self.port} to exit",
        )
        return code

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def _server_processes(self) -> list[int]:
        """PIDs of processes working in the data dir (every PostgreSQL process chdirs there)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == self.data_dir:
                        found.append(int(entry.name))
        return found

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, {self.process!r})"
