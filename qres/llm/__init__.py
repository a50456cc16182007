"""The LLM engine: validation, rate limits, a bounded queue, a persistent response cache,
metrics and energy-aware limits in front of any LLM backend, and its OpenAI-compatible server."""
