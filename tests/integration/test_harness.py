"""The harness itself works: real Envoy splitting traffic, load generator, Prometheus, Alertmanager, process
cleanup. No fixed sleeps: everything polls with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.alertmanager import AlertmanagerProcess, make_alert
from harness.binaries import APT_HINT, MissingBinaryError, require_binary
from harness.bootstraps import StaticUpstream, agent_bootstrap, static_weighted_bootstrap
from harness.envoy import EnvoyProcess
from harness.load import ResponseLog, TrafficGenerator, split_within_tolerance
from harness.ports import free_port, free_ports
from harness.process import ManagedProcess
from harness.prometheus import PrometheusProcess
from harness.pyproc import REPO_ROOT, python_env
from harness.refserver import RefServer
from harness.upstream import VersionUpstream
from harness.wait import NotYet, WaitAborted, WaitTimeout, async_wait_until, wait_until

pytestmark = pytest.mark.integration


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return not os.path.exists(f"/proc/{pid}")
    return False


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc/PID/stat, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[2])


def _dead(pid: int) -> bool:
    """Gone or a zombie: orphaned grandchildren are reaped by PID 1, which can take a while in containers."""
    stat = _proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def _group_gone(pgid: int) -> bool:
    """No live (non-zombie) process left in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return False
    return True


# -- small pieces ---------------------------------------------------------------------------------------------


def test_free_ports_lie_below_the_ephemeral_range_so_no_outgoing_connection_takes_them() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for port in free_ports(20))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert 0 < free_port() < 65536


def test_wait_until_reports_what_and_last_observation() -> None:
    calls = iter(range(1000))
    assert wait_until(lambda: next(calls) >= 3, 1.0) is True
    with pytest.raises(WaitTimeout, match=r"waiting for the answer; last value: 41") as err:
        wait_until(lambda: NotYet(41), 0.05, what="the answer")
    assert isinstance(err.value, TimeoutError)

    def boom() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimeoutError, match="ConnectionRefusedError: nobody home"):
        wait_until(boom, 0.05, what="a server")


async def test_async_wait_until_accepts_coroutines() -> None:
    state = {"n": 0}

    async def probe() -> int | NotYet:
        state["n"] += 1
        return state["n"] if state["n"] >= 3 else NotYet(state["n"])

    assert await async_wait_until(probe, 1.0) == 3
    with pytest.raises(TimeoutError, match="never"):
        await async_wait_until(lambda: False, 0.05, what="never")


def test_missing_binary_error_says_how_to_install() -> None:
    with pytest.raises(MissingBinaryError, match="apt-get install"):
        require_binary("surely-not-a-binary-xyz", APT_HINT)


def test_managed_process_escalates_to_sigkill_and_kills_the_group(tmp_logs: Path) -> None:
    # A leader that ignores SIGTERM and a grandchild in its group: stop() must leave neither behind.
    script = (
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
        "print('CHILDPID=%d' % child.pid, flush=True)\n"
        "signal.pause()\n"
    )
    proc = ManagedProcess([sys.executable, "-c", script], name="stubborn", log_dir=tmp_logs).start()

    def child_pid_in_log() -> int | NotYet:
        found = [ln for ln in proc.log_tail(5).splitlines() if ln.startswith("CHILDPID=")]
        return int(found[0].split("=")[1]) if found else NotYet(proc.log_tail(5))

    child_pid = wait_until(child_pid_in_log, 10.0, what="stubborn child pid in the log")
    assert proc.alive and proc.pid is not None
    started = time.monotonic()
    code = proc.stop(timeout_s=0.3)
    assert code == -signal.SIGKILL
    assert 0.25 < time.monotonic() - started < 5.0
    assert not proc.alive and proc.returncode == -signal.SIGKILL
    assert _pid_gone(proc.pid)
    wait_until(lambda: _dead(child_pid), 5.0, what="grandchild to be dead")
    assert _group_gone(proc.pid)
    assert proc.stop() == -signal.SIGKILL  # idempotent


def test_managed_process_context_manager_and_kill(tmp_logs: Path) -> None:
    with ManagedProcess([sys.executable, "-c", "import signal; signal.pause()"], name="cm", log_dir=tmp_logs) as p:
        assert p.alive
        pid = p.pid
    assert pid is not None and _pid_gone(pid)
    q = ManagedProcess([sys.executable, "-c", "import signal; signal.pause()"], name="cm", log_dir=tmp_logs)
    assert q.log_path.name == "cm-2.log"
    q.start()
    assert q.kill() == -signal.SIGKILL and not q.alive


def test_first_time_all_from_uses_send_time() -> None:
    log = ResponseLog()
    s = 1_000_000_000  # 1 s in ns
    # (sent, done, version): v1 traffic, a switch at t=10, one straggler sent at 10.5 still answered by v1
    # after newer requests were already answered by v2.
    rows = [(9.0, 9.1, "v1"), (10.2, 10.3, "v2"), (10.5, 11.5, "v1"), (10.6, 10.7, "v2"), (10.8, 10.9, "v2")]
    for sent, done, ver in rows:
        log.append(int(sent * s), int(done * s), 200, ver, None)
    res = log.snapshot()
    assert res.first_time_all_from("v2", 10.0) == pytest.approx(10.6)
    assert res.first_time_all_from("v2", 10.7) == pytest.approx(10.8)
    assert res.first_time_all_from("v1", 10.0) is None
    assert res.first_time_all_from("v3", 0.0) is None
    assert res.first_time_all_from("v2", 20.0) is None
    # An in-flight request sent at 10.75 hides everything sent from then on.
    assert log.snapshot(horizon_ns=int(10.75 * s)).first_time_all_from("v2", 10.0) == pytest.approx(10.6)
    assert log.snapshot(horizon_ns=int(10.55 * s)).first_time_all_from("v2", 10.0) is None
    # A failure breaks the run like a wrong version.
    log.append(int(10.85 * s), int(10.95 * s), 0, None, "ServerDisconnectedError")
    log.append(int(10.9 * s), int(10.95 * s), 200, "v2", None)
    assert log.snapshot().first_time_all_from("v2", 10.0) == pytest.approx(10.9)
    assert log.snapshot().counts_by_version() == {"v1": 2, "v2": 4}
    assert [r.error for r in log.snapshot().failed()] == ["ServerDisconnectedError"]
    assert log.snapshot().counts_by_version(since=10.0, until=10.7) == {"v2": 2, "v1": 1}


def test_split_check_accepts_noise_and_rejects_bias() -> None:
    assert split_within_tolerance({"v1": 1040, "v2": 960}, {"v1": 50, "v2": 50})
    assert not split_within_tolerance({"v1": 1150, "v2": 850}, {"v1": 50, "v2": 50})
    assert split_within_tolerance({"v1": 2000}, {"v1": 100, "v2": 0})
    assert not split_within_tolerance({"v1": 1999, "v2": 1}, {"v1": 100, "v2": 0})
    assert not split_within_tolerance({"v1": 1000, "v2": 990}, {"v1": 1, "v2": 1}, n=2000)  # 10 failures
    assert not split_within_tolerance({}, {"v1": 1})


# -- real Envoy -------------------------------------------------------------------------------------------------


async def test_envoy_weighted_split_stats_restart_and_cleanup(
    envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    async with VersionUpstream("v1") as up1, VersionUpstream("v2") as up2:
        listener_port, admin_port = free_ports(2)
        bootstrap = static_weighted_bootstrap(
            listener_port=listener_port,
            admin_port=admin_port,
            upstreams=[StaticUpstream("model_v1", up1.port, 50), StaticUpstream("model_v2", up2.port, 50)],
        )
        envoy = envoy_factory(bootstrap, name="envoy-split")
        assert envoy.admin_url == f"http://127.0.0.1:{admin_port}"
        await envoy.ready_async()  # 200 LIVE

        gen = TrafficGenerator(
            f"http://127.0.0.1:{listener_port}/v2/models/m/infer",
            lambda i: {"inputs": [i]},
            concurrency=16,
        )
        results = await gen.run(n=2000)
        assert len(results) == 2000
        assert results.failed() == []
        counts = results.counts_by_version()
        assert set(counts) == {"v1", "v2"}
        check = split_within_tolerance(counts, {"v1": 50, "v2": 50})
        assert check, str(check)
        assert results.split({"v1": 50, "v2": 50})
        assert results.latency_quantiles((0.5,))[0.5] < 1.0

        stats = await envoy.stats_async()
        assert stats["cluster.model_v1.upstream_rq_total"] == counts["v1"] == up1.requests
        assert envoy.cluster_stat("model_v2", "upstream_rq_200") == counts["v2"] == up2.requests
        assert envoy.cluster_stat("model_v2", "upstream_rq_503", default=0) == 0
        with pytest.raises(KeyError):
            envoy.cluster_stat("model_v2", "no_such_stat")
        dump = envoy.config_dump()
        listeners = next(c for c in dump["configs"] if c["@type"].endswith(".ListenersConfigDump"))
        assert [sl["listener"]["name"] for sl in listeners["static_listeners"]] == ["model_listener"]

        # restart(): same ports, serving again.
        old_pid = envoy.pid
        assert old_pid is not None
        await envoy.restart_async()
        await envoy.ready_async()
        assert envoy.pid != old_pid and _pid_gone(old_pid)
        again = await TrafficGenerator(f"http://127.0.0.1:{listener_port}/", concurrency=4).run(n=50)
        assert again.failed() == [] and sum(again.counts_by_version().values()) == 50

        pid = envoy.pid
        assert pid is not None
        assert envoy.stop() == 0
        assert not envoy.alive and _pid_gone(pid) and _group_gone(pid)


def test_envoy_with_the_agent_bootstrap_waits_for_xds(envoy_factory: Callable[..., EnvoyProcess]) -> None:
    # Nobody serves xDS on this port: admin answers, but Envoy stays not-LIVE (initial_fetch_timeout 0s).
    envoy = envoy_factory(agent_bootstrap(xds_port=free_port()), name="envoy-ads")
    envoy.ready(require_live=False)
    status, state = envoy.server_state()
    assert status == 503 and state in ("PRE_INITIALIZING", "INITIALIZING"), (status, state)
    with pytest.raises(TimeoutError, match="200 LIVE; last value: \\(503"):
        envoy.ready(timeout_s=0.3)
    assert envoy.cluster_stat("rollback_agent_xds", "upstream_cx_total", default=0) >= 0


# -- Prometheus and Alertmanager --------------------------------------------------------------------------------


def test_prometheus_starts_and_answers_queries(prometheus_factory: Callable[..., PrometheusProcess]) -> None:
    prom = prometheus_factory()
    assert prom.query_value("1 + 1") == 2.0
    assert prom.query_vector('up{job="nope"}') == []
    # The first self-scrape lands 5-6 s after start.
    series = prom.wait_for_series('up{job="prometheus"} == 1', timeout_s=20.0)
    assert series[0]["metric"]["instance"] == f"127.0.0.1:{prom.port}"
    pid = prom.pid
    assert pid is not None
    prom.stop()
    assert _pid_gone(pid)


def test_alertmanager_accepts_and_lists_alerts(alertmanager_factory: Callable[..., AlertmanagerProcess]) -> None:
    am = alertmanager_factory()
    am.post_alerts([make_alert("HarnessTest", {"severity": "page"}, {"summary": "from test_harness"})])
    alerts = am.wait_for_alerts({"alertname": "HarnessTest"}, timeout_s=10.0)
    assert len(alerts) == 1
    assert alerts[0]["labels"] == {"alertname": "HarnessTest", "severity": "page"}
    assert alerts[0]["annotations"]["summary"] == "from test_harness"
    assert alerts[0]["status"]["state"] == "active"
    assert am.alerts({"alertname": "SomethingElse"}) == []
    assert am.alerts(['severity=~"pa.*"'], active=True)[0]["labels"]["alertname"] == "HarnessTest"


# -- reference model server -------------------------------------------------------------------------------------


async def test_refserver_handle_serves_versions_and_switches_faults(
    refserver_factory: Callable[..., RefServer],
) -> None:
    from refserver.client import sample_request  # imported here: the module only exists with refserver/

    server = refserver_factory("cancer", "v3")
    assert server.url == f"http://127.0.0.1:{server.port}" and server.ready_status() == 200
    body = sample_request(4, seed=1)
    url = f"{server.url}/v2/models/cancer/infer"

    healthy = await TrafficGenerator(url, lambda i: body, concurrency=4).run(n=100)
    assert healthy.failed() == [] and healthy.counts_by_version() == {"v3": 100}

    await server.set_faults_async({"error_rate": 1.0})
    broken = await TrafficGenerator(url, lambda i: body, concurrency=4).run(n=50)
    assert broken.counts_by_status() == {500: 50}
    assert broken.counts_by_version() == {"v3": 50}  # the header is on error responses too
    assert len(broken.failed()) == 50

    await server.clear_faults_async()
    again = await TrafficGenerator(url, lambda i: body, concurrency=4).run(n=50)
    assert again.failed() == []
    pid = server.pid
    assert pid is not None
    server.stop()
    assert _pid_gone(pid)


# -- cleanup when the harness process is ended by a signal ----------------------------------------------------

# A child that says when it is up and when it gets SIGTERM: proof that it was stopped by the harness (gracefully),
# not killed by PR_SET_PDEATHSIG (SIGKILL) when its parent died.
_CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('child:', 'SIGTERM', flush=True), sys.exit(0)))\n"
    "print('child:', 'up', flush=True)\n"
    "time.sleep(300)\n"
)


def _harness_script(logs: Path, pid_file: Path, *, prelude: str = "", in_thread: bool = False) -> list[str]:
    """`python -c` that runs `prelude`, imports the harness, starts `_CHILD` with ManagedProcess (from the main
    thread, or from a thread that has ended by the time the PID is written), writes the child's PID to `pid_file`
    once it is up, and sleeps."""
    make = f"ManagedProcess([sys.executable, '-c', {_CHILD!r}], name='child', log_dir={str(logs)!r})"
    if in_thread:
        start = (
            "started = []\n"
            f"t = threading.Thread(target=lambda: started.append({make}.start()))\n"
            "t.start(); t.join(); p = started[0]\n"
            "while len(os.listdir('/proc/self/task')) > 1: time.sleep(0.01)  # the OS thread is gone too\n"
        )
    else:
        start = f"p = {make}.start()\n"
    script = (
        "import os, signal, sys, threading, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        f"{prelude}"
        "from harness.process import ManagedProcess\n"
        f"{start}"
        "while 'child: up' not in p.log_tail(5): time.sleep(0.01)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    return [sys.executable, "-c", script]


def _run_until_pid(argv: list[str], pid_file: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def child_pid() -> int | NotYet:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise WaitAborted(f"the script exited with {proc.returncode}:\n{output}")
        text = pid_file.read_text() if pid_file.exists() else ""
        return int(text) if text else NotYet(text)

    return proc, wait_until(child_pid, 20.0, what="the child PID from the script")


@contextlib.contextmanager
def _cleanup(proc: subprocess.Popen[str], pid_file: Path) -> Iterator[None]:
    try:
        yield
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_sigterm_to_a_harness_script_stops_its_processes_and_exits_143(tmp_path: Path, tmp_logs: Path) -> None:
    pid_file = tmp_path / "child.pid"
    proc, child = _run_until_pid(_harness_script(tmp_logs, pid_file), pid_file)
    with _cleanup(proc, pid_file):
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
        assert proc.returncode == 128 + signal.SIGTERM, output
        wait_until(lambda: _group_gone(child), 5.0, what="the child's process group to be gone")
        assert "child: SIGTERM" in (tmp_logs / "child.log").read_text()


def test_sighup_stops_the_processes_before_the_scripts_own_handler_runs(tmp_path: Path, tmp_logs: Path) -> None:
    # A handler the script had before importing the harness runs after the harness stopped the child, and decides
    # how the script ends.
    prelude = (
        "def own(signum, frame):\n"
        "    try:\n"
        "        os.killpg(p.pid, 0)\n"
        "        print('own handler: child still alive', flush=True)\n"
        "    except ProcessLookupError:\n"
        "        print('own handler: child gone', flush=True)\n"
        "    sys.exit(7)\n"
        "signal.signal(signal.SIGHUP, own)\n"
    )
    pid_file = tmp_path / "child.pid"
    proc, child = _run_until_pid(_harness_script(tmp_logs, pid_file, prelude=prelude), pid_file)
    with _cleanup(proc, pid_file):
        proc.send_signal(signal.SIGHUP)
        output, _ = proc.communicate(timeout=15)
        assert proc.returncode == 7, output
        assert "own handler: child gone" in output
        assert _group_gone(child)
        assert "child: SIGTERM" in (tmp_logs / "child.log").read_text()


def test_sigkilled_harness_script_takes_its_main_thread_children_along(tmp_path: Path, tmp_logs: Path) -> None:
    # No handler runs on SIGKILL: PR_SET_PDEATHSIG is what ends the child.
    pid_file = tmp_path / "child.pid"
    proc, child = _run_until_pid(_harness_script(tmp_logs, pid_file), pid_file)
    with _cleanup(proc, pid_file):
        proc.kill()
        proc.communicate(timeout=15)
        wait_until(lambda: _group_gone(child), 5.0, what="the orphaned child to be killed")
        assert "child: SIGTERM" not in (tmp_logs / "child.log").read_text()


def test_a_process_started_from_a_thread_outlives_that_thread(tmp_path: Path, tmp_logs: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: a child started from a worker thread must not get
    # it, or it would die with the thread. The script's signal handler still stops it.
    pid_file = tmp_path / "child.pid"
    proc, child = _run_until_pid(_harness_script(tmp_logs, pid_file, in_thread=True), pid_file)
    with _cleanup(proc, pid_file):
        assert not _group_gone(child), "the child died with the thread that started it"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
        assert proc.returncode == 128 + signal.SIGTERM, output
        wait_until(lambda: _group_gone(child), 5.0, what="the child's process group to be gone")


_DOOMED_TESTS = """
import os, time
from pathlib import Path

from harness.bootstraps import StaticUpstream, static_weighted_bootstrap
from harness.ports import free_ports


def test_waits_to_be_terminated(envoy_factory):
    listener, admin, upstream = free_ports(3)
    bootstrap = static_weighted_bootstrap(
        listener_port=listener, admin_port=admin, upstreams=[StaticUpstream("v1", upstream, 1)]
    )
    envoy = envoy_factory(bootstrap, name="doomed")
    Path(os.environ["PID_FILE"]).write_text(str(envoy.pid))
    time.sleep(300)


def test_never_runs():
    Path(os.environ["PID_FILE"] + ".next").write_text("the session went on after SIGTERM")
"""


def test_sigterm_to_pytest_stops_the_fixtures_processes_and_ends_the_session(
    tmp_path: Path,
    envoy_factory: Callable[..., EnvoyProcess],  # unused here: skips (or fails in CI) when Envoy is missing
) -> None:
    module = tmp_path / "test_doomed.py"
    module.write_text(_DOOMED_TESTS)
    pid_file = tmp_path / "envoy.pid"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.integration.conftest"]
    argv += ["--rootdir", str(tmp_path), str(module)]
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=python_env({"PID_FILE": str(pid_file)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with _cleanup(proc, pid_file):

        def envoy_pid() -> int | NotYet:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise WaitAborted(f"pytest exited with {proc.returncode}:\n{output}")
            text = pid_file.read_text() if pid_file.exists() else ""
            return int(text) if text else NotYet(text)

        envoy = wait_until(envoy_pid, 60.0, what="the inner test's Envoy PID")
        assert not _group_gone(envoy)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM, output
        assert "SIGTERM received: stopped every process the fixtures started" in output
        wait_until(lambda: _group_gone(envoy), 5.0, what="the inner test's Envoy to be gone")
        assert not (tmp_path / "envoy.pid.next").exists(), "pytest went on with the next test"
