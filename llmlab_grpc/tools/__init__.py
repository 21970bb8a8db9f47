"""Tools the mesh can run: the Tool base, the registry and router, built-ins, the gRPC service."""
