"""qres: deterministic, learned compression of sensor streams and swarm learning of its models."""

__version__ = "0.1.0"
