"""Free TCP ports on the loopback interface, for servers the tests and benches start.

Ports come from below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default): a port
chosen by binding port 0 comes from that range, and the local port of any outgoing connection (load generators,
probes, Envoy's upstream connections) can take it before the server binds it — an "address already in use" that
appears only on a busy machine. A port below the range is never handed to an outgoing connection; each candidate is
checked free by binding it, and one process never hands out the same port twice. The small window between the check
and the server's own bind remains (another test process choosing the same random port), which random choice over
~12,000 ports makes rare.
"""

from __future__ import annotations

import random
import socket
import threading

__all__ = ["free_port", "free_ports"]

_LOW, _HIGH = 20000, 32767
_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago and lies below the ephemeral range."""
    high = min(_HIGH, _ephemeral_low() - 1)
    with _lock:
        for _ in range(1000):
            port = _random.randint(_LOW, high)
            if port not in _handed_out and _is_free(host, port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found in {_LOW}-{high} on {host}")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return `n` distinct free TCP ports."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [free_port(host) for _ in range(n)]
