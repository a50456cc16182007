"""First-party qres plugins: transports."""
