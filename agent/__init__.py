"""Model Rollback Agent: puts model traffic back on the last verified-stable version when a new one degrades."""

__version__ = "0.1.0"
