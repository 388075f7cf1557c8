"""Ports: the narrow seams between the engine and the outside (routes, state, signals)."""
