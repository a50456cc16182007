"""First-party qres plugins: attacks."""
