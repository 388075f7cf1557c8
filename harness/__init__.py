"""Process and traffic toolkit shared by integration tests, `make demo` and the benchmarks.

Not product code: nothing under `agent/` may import it. Modules:

- `binaries`     locating external binaries (MissingBinaryError with an install hint)
- `service`      base handle for an HTTP server process with a readiness URL
- `ports`        free 127.0.0.1 ports
- `wait`         deadline polling (`wait_until`, `async_wait_until`) and tiny HTTP probes
- `http_util`    stdlib-only synchronous HTTP helpers used by the process handles
- `process`      `ManagedProcess`: a subprocess in its own session, logged to a file, never left behind
- `envoy`        a real Envoy from a bootstrap dict, plus admin helpers (stats, config_dump, restart)
- `bootstraps`   static Envoy bootstraps (weighted split to fixed upstreams) and the agent's ADS one
- `prometheus`   the Debian `prometheus` binary on a free port, `query`, `wait_for_series`
- `alertmanager` the Debian `prometheus-alertmanager` binary, `post_alerts`, `alerts`
- `refserver`    the reference model server subprocess
- `agent`        the agent subprocess
- `pyproc`       running the repo's own `python -m X` modules
- `upstream`     a tiny in-process aiohttp upstream answering with `x-model-version`
- `load`         `TrafficGenerator` (re-exports the names below)
- `results`      `ResponseLog` / `Results`: the compact response log and its analyses
- `split`        `split_within_tolerance`: exact binomial check of a traffic split
"""
