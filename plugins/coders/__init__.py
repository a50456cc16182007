"""First-party qres plugins: coders."""
