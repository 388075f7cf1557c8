"""`ManagedProcess`: a subprocess that is always cleaned up.

- started with `start_new_session=True`, so it leads its own process group and a stop signal reaches
  everything it spawned (the group id is the PID);
- stdout and stderr go to `<log_dir>/<name>.log` (appended across restarts);
- `stop()` sends SIGTERM to the group, then SIGKILL after `timeout_s`, and reaps the process;
- `kill()` sends SIGKILL at once (crash tests);
- every started process is tracked in a module-level registry and an `atexit` hook SIGKILLs whatever is still
  running when the interpreter exits, so a failing test or an aborted benchmark leaves nothing behind;
- atexit hooks do not run when the interpreter is ended by a signal, so importing this module on the main thread
  (or else the first `start()` there) installs SIGTERM and SIGHUP handlers (`install_signal_handlers`, once):
  they stop every registered process group, then call the handler that was there before, or, if that was the
  default, exit with 128 + signum. A signal that was ignored (SIG_IGN, e.g. SIGHUP under nohup) stays ignored.
  A handler installed later replaces these; it should call `terminate_all()` itself;
- on Linux, a process started from the main thread gets PR_SET_PDEATHSIG = SIGKILL, so it dies even when the
  Python process is SIGKILLed (no handler runs then). The kernel sends it when the *thread* that forked the child
  exits, so processes started from other threads (e.g. `asyncio.to_thread`, whose pool threads come and go) do
  not get it: it would kill them when their starting thread ends. Only the leader gets it; its own children are
  left to it.

It is a context manager (`with ManagedProcess(...).start() as p:`) and works with `contextlib.ExitStack`
(`stack.enter_context(proc)` or `stack.callback(proc.stop)`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from harness.wait import WaitAborted

__all__ = [
    "ManagedProcess",
    "ProcessExitedError",
    "install_signal_handlers",
    "stop_all",
    "tail_file",
    "terminate_all",
    "unique_stem",
]

_REGISTRY: set[ManagedProcess] = set()
# Re-entrant: a signal handler (main thread) may run while the main thread holds it.
_REGISTRY_LOCK = threading.RLock()

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
SIGNAL_GRACE_S = 2.0  # how long a signal handler lets the processes exit after SIGTERM before SIGKILL


class ProcessExitedError(WaitAborted, RuntimeError):
    """The process exited while we were waiting for it to become ready."""


def unique_stem(log_dir: str | os.PathLike[str], name: str) -> str:
    """`name`, or `name-2`, `name-3` ... so that `<log_dir>/<stem>.log` does not exist yet."""
    stem, n = name, 2
    while (Path(log_dir) / f"{stem}.log").exists():
        stem = f"{name}-{n}"
        n += 1
    return stem


class ManagedProcess:
    """One subprocess in its own session, logged to a file; see the module docstring.

    The log is `<log_dir>/<name>.log`, or `<name>-2.log` ... if that exists already.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv: list[str] = [str(a) for a in argv]
        self.name = name
        self.env: dict[str, str] | None = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        log_dir_path = Path(log_dir)
        log_dir_path.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = log_dir_path / f"{unique_stem(log_dir_path, name)}.log"
        self.log_path.touch()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process (again, after a stop). Returns self."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            cmd = shlex.join(self.argv).replace("\n", "\\n")
            log.write(f"==== {time.strftime('%H:%M:%S')} starting: {cmd}\n".encode())
            log.flush()
            on_main_thread = threading.current_thread() is threading.main_thread()
            if on_main_thread:
                install_signal_handlers()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_die_with_parent(os.getpid()) if on_main_thread else None,
            )
        self._pid = self._popen.pid
        with _REGISTRY_LOCK:
            _REGISTRY.add(self)
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout_s`, reap. Returns the exit code.
        Idempotent."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                popen.wait()
        self._finish()
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process group at once and reap it (a crash, for crash tests). Returns the exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            popen.wait()
        self._finish()
        return popen.returncode

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the process to exit by itself; raises subprocess.TimeoutExpired."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self._popen.wait(timeout=timeout_s)
        self._finish()
        return code

    def signal(self, sig: int) -> None:
        """Send `sig` to the process (not the group), e.g. SIGHUP for a reload."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(sig)

    def _signal_group(self, sig: int) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def _finish(self) -> None:
        # The leader is reaped; kill whatever it left in its group (children that ignored SIGTERM or were
        # orphaned). The group id cannot be reused while any member is alive, so this never hits a stranger.
        self._signal_group(signal.SIGKILL)
        with _REGISTRY_LOCK:
            _REGISTRY.discard(self)

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the last started process (kept after it exits, so tests can check that it is gone)."""
        return self._pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code (negative signal number if killed by a signal), or None while running / never started."""
        return None if self._popen is None else self._popen.poll()

    def check_alive(self) -> None:
        """Raise ProcessExitedError (with the log tail) if the process has exited."""
        if not self.alive:
            raise ProcessExitedError(
                f"{self.name} (pid {self.pid}) exited with {self.returncode}; log {self.log_path}:\n"
                + self.log_tail(40)
            )

    def log_tail(self, n_lines: int = 50) -> str:
        """The last `n_lines` lines of the process log."""
        return tail_file(self.log_path, n_lines)

    # -- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited({self.returncode})"
        return f"ManagedProcess({self.name!r}, pid={self.pid}, {state})"


def tail_file(path: str | os.PathLike[str], n_lines: int) -> str:
    """The last `n_lines` lines of a text file ("" if it does not exist)."""
    try:
        with open(path, "rb") as f:
            lines = deque(f, maxlen=max(n_lines, 0))
    except FileNotFoundError:
        return ""
    return b"".join(lines).decode("utf-8", errors="replace")


def stop_all(timeout_s: float = 0.0) -> None:
    """Stop every process still running (SIGKILL right away when timeout_s is 0). Used by the atexit hook."""
    with _REGISTRY_LOCK:
        procs = list(_REGISTRY)
    for proc in procs:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            if timeout_s > 0:
                proc.stop(timeout_s)
            else:
                proc.kill()


def terminate_all(grace_s: float = SIGNAL_GRACE_S) -> None:
    """SIGTERM every registered process group at once, SIGKILL them after `grace_s` (earlier once all leaders
    exited). Safe in a signal handler: it never blocks on a lock the interrupted code may hold (`Popen.poll`
    gives up instead of waiting for one, a blocking `Popen.wait` would not); the atexit hook reaps later."""
    with _REGISTRY_LOCK:
        procs = list(_REGISTRY)
    for proc in procs:
        proc._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.alive for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    for proc in procs:
        proc._signal_group(signal.SIGKILL)


_SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None
_previous_handlers: dict[int, _SignalHandler] = {}
_handlers_installed = False
_stopping = False


def install_signal_handlers() -> bool:
    """Install the SIGTERM / SIGHUP handlers described in the module docstring. Only on the main thread (Python
    allows no other) and only once; returns whether they are installed."""
    global _handlers_installed
    if threading.current_thread() is not threading.main_thread():
        return False
    with _REGISTRY_LOCK:
        if not _handlers_installed:
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous != signal.SIG_IGN:
                    _previous_handlers[sig] = previous
                    signal.signal(sig, _on_stop_signal)
            _handlers_installed = True
    return True


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:  # a second signal while the first one is being handled: no more grace
        with _REGISTRY_LOCK:
            procs = list(_REGISTRY)
        for proc in procs:
            proc._signal_group(signal.SIGKILL)
        return
    _stopping = True
    try:
        terminate_all()
    finally:
        _stopping = False
    previous = _previous_handlers.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    sys.exit(128 + signum)


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent (thread) dies; None where unsupported.

    Python warns that preexec_fn is unsafe when the parent has threads: the child may need a lock another thread
    held at fork. This one imports nothing and takes no lock: a libc function resolved before the fork, getppid
    and _exit."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None
    prctl = _prctl
    kill = int(signal.SIGKILL)

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect: nobody would ever stop us
            os._exit(1)

    return set_pdeathsig


atexit.register(stop_all)
install_signal_handlers()
