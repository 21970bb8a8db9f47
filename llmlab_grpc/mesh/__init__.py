"""The mesh: authentication, channels to peers, the peer table, discovery and membership."""
