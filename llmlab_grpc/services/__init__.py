"""gRPC servicers that are part of every node, and the placeholder for unbuilt ones."""
