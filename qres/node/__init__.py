"""The real node: transports, state, sources, the node process and its HTTP API."""
