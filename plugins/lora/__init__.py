"""First-party qres plugins: lora."""
