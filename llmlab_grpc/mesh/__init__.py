"""The mesh: authentication, channels to peers, the peer table, discovery, membership and the peer-call policy."""
