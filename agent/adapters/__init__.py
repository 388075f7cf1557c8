"""Adapters: one per file, each implementing a port against a real system (Envoy xDS, SQLite, HTTP sources)."""
