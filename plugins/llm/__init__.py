"""First-party qres plugins: llm."""
