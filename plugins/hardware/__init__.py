"""First-party qres plugins: hardware."""
