"""HTTP surfaces: the public app (health, readiness, metrics) and the control API (token, loopback)."""
