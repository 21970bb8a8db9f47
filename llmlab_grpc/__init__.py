"""llmlab: a peer-to-peer mesh of LAN machines that share LLM work over gRPC."""

__version__ = "0.1.0"

ROLES: tuple[str, ...] = ("planner", "tools", "llm", "cache", "replica", "bridge")
"""Every role a node can serve; `llmlab up` makes sure each exists somewhere."""
