"""LAN tests: real node processes on hosts made of network namespaces (see harness.py)."""
