"""The ``[llm]`` table's own settings: the engine's limits, cache and energy policy."""

from __future__ import annotations

import attrs

from qres.kernel.config import integer, number, one_of, text


@attrs.frozen
class EngineSettings:
    """How the engine in front of the backend behaves (every limit is per server process).

    * ``max_prompt_chars``: longest prompt (or sum of chat message contents) accepted.
    * ``max_messages``: most chat messages in one request.
    * ``max_embedding_inputs``: most texts in one embeddings request.
    * ``rate_per_s`` / ``burst``: each client's token bucket (requests per second refilled, and
      the bucket's size); ``rate_per_s = 0`` turns rate limiting off.
    * ``queue_size``: requests waiting for the backend at most; more get ``429``.
    * ``retry_after_s``: what ``Retry-After`` tells a client turned away by a full queue.
    * ``cache_entries`` / ``cache_ttl_s``: the response cache's size and entry lifetime;
      ``cache_entries = 0`` turns it off. Only deterministic requests (temperature 0) are cached.
    * ``cache_path``: the SQLite file that keeps the cache across restarts; empty: memory only.
    * ``low_battery_percent``: below this charge the ``low_battery`` policy applies (0: never).
    * ``low_battery``: ``"shorten"`` caps ``max_tokens`` at ``low_battery_max_tokens``;
      ``"cache-only"`` serves only cached answers and refuses the rest with ``503``.
    """

    max_prompt_chars: int = attrs.field(default=32768, validator=integer(1, 1 << 24))
    max_messages: int = attrs.field(default=64, validator=integer(1, 4096))
    max_embedding_inputs: int = attrs.field(default=64, validator=integer(1, 4096))
    rate_per_s: float = attrs.field(default=0.0, validator=number(0, 1e6))
    burst: int = attrs.field(default=8, validator=integer(1, 1 << 20))
    queue_size: int = attrs.field(default=16, validator=integer(1, 1 << 16))
    retry_after_s: int = attrs.field(default=1, validator=integer(1, 3600))
    cache_entries: int = attrs.field(default=256, validator=integer(0, 1 << 24))
    cache_ttl_s: float = attrs.field(default=3600.0, validator=number(0, 1e9))
    cache_path: str = attrs.field(default="", validator=text(4096))
    low_battery_percent: float = attrs.field(default=0.0, validator=number(0, 100))
    low_battery: str = attrs.field(default="shorten", validator=one_of("shorten", "cache-only"))
    low_battery_max_tokens: int = attrs.field(default=32, validator=integer(1, 1 << 20))
