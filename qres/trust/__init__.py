"""Trust between nodes: identities, signed update packets and verifiable weight transitions."""
