"""First-party qres plugins: aggregators."""
