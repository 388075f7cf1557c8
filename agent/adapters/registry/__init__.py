"""The version registry adapter: the registry file (or the agent config) plus a runtime overlay in state.db."""

from agent.adapters.registry.file_registry import FileRegistry, open_registry

__all__ = ["FileRegistry", "open_registry"]
