"""Free TCP ports on the loopback interface.

A port is found by binding port 0 and closing the socket, so there is an unavoidable (tiny) window in which
another process could take it before the caller binds it. Tests only use 127.0.0.1 and allocate a handful of
ports, so this is the usual accepted trade-off.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_ports"]


def _bind_ephemeral(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with _bind_ephemeral(host) as sock:
        port: int = sock.getsockname()[1]
        return port


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return `n` distinct free TCP ports (all sockets are held open until every port is chosen)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    socks = [_bind_ephemeral(host) for _ in range(n)]
    try:
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
