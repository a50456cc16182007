"""The ``[router]`` table: tiers, complexity thresholds, budgets, the log and the cache."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from qres.kernel.config import InvalidSetting, integer, number, one_of, text

#: What a tier runs: rules and tools, a local backend profile, an OpenAI-compatible endpoint,
#: the mesh's workers.
TIER_KINDS = ("tools", "llm", "openai", "mesh")
MAX_TIERS = 16


@attrs.frozen
class Tier:
    """One tier: ``name``, ``kind`` (:data:`TIER_KINDS`), ``cost_per_1k`` (money per 1000
    prompt+completion tokens), ``latency_budget_ms`` (a call taking longer fails over to the
    next tier), ``max_tokens``; ``profile`` (kind llm: the profile whose ``[llm.backend]``
    runs; kind mesh: the profile whose ``[mesh]`` table names the workers); ``url``,
    ``model``, ``api_key_env`` (kind openai: the endpoint's base URL ending in ``/v1``, the
    model name, and the environment variable holding the API key)."""

    name: str = attrs.field(validator=text(64))
    kind: str = attrs.field(validator=one_of(*TIER_KINDS))
    cost_per_1k: float = attrs.field(default=0.0, validator=number(0.0, 1e6))
    latency_budget_ms: float = attrs.field(default=30000.0, validator=number(1.0, 3.6e6))
    max_tokens: int = attrs.field(default=64, validator=integer(1, 1 << 16))
    profile: str = attrs.field(default="", validator=text(4096))
    url: str = attrs.field(default="", validator=text(4096))
    model: str = attrs.field(default="", validator=text(256))
    api_key_env: str = attrs.field(default="", validator=text(256))


def parse_tiers(value: object) -> tuple[Tier, ...]:
    """The ``tiers`` array as :class:`Tier` objects; ValueError naming the bad entry."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_TIERS:
        raise ValueError(f"give 1 to {MAX_TIERS} tier tables")
    out, names = [], set()
    for i, item in enumerate(value):
        if isinstance(item, Tier):
            tier = item
        elif isinstance(item, Mapping):
            unknown = set(item) - set(attrs.fields_dict(Tier))
            if unknown:
                raise ValueError(f"tiers[{i}]: unknown keys {sorted(unknown)}")
            try:
                tier = Tier(**item)
            except (InvalidSetting, TypeError) as exc:
                raise ValueError(f"tiers[{i}]: {exc}") from exc
        else:
            raise ValueError(f"tiers[{i}] is not a table")
        if tier.name in names:
            raise ValueError(f"tiers[{i}]: name {tier.name!r} used twice")
        if tier.kind == "llm" and not tier.profile:
            raise ValueError(f'tiers[{i}]: an llm tier needs profile = "<llm profile>"')
        if tier.kind == "mesh" and not tier.profile:
            raise ValueError(f'tiers[{i}]: a mesh tier needs profile = "<profile with [mesh]>"')
        if tier.kind == "openai" and not (tier.url and tier.model):
            raise ValueError(f"tiers[{i}]: an openai tier needs url and model")
        if tier.kind == "openai" and not tier.url.startswith(("http://", "https://")):
            raise ValueError(f"tiers[{i}]: url must start with http:// or https://")
        names.add(tier.name)
        out.append(tier)
    return tuple(out)


def _tiers(_inst, attribute, value) -> None:
    try:
        parse_tiers(value)
    except ValueError as exc:
        raise InvalidSetting(attribute.name, value, str(exc)) from exc


@attrs.frozen
class RouterSettings:
    """How the router picks, checks and pays for tiers (docs/router.md).

    * ``tiers``: the tiers T0..Tn, cheapest first (array of tables, see :class:`Tier`).
    * ``estimator``: ``"rules"`` (the thresholds below) or ``"learned"`` (``model_path``).
    * ``long_chars``, ``code_min``, ``math_min``, ``multi_step_min``, ``format_min``: each
      feature at or above its threshold raises the start tier by one.
    * ``min_success``: the learned estimator starts at the cheapest tier whose predicted
      success probability reaches this.
    * ``budget_per_hour``, ``budget_per_day``: most money spent in the last hour / day
      (0: no cap); a tier whose call could exceed them is skipped.
    * ``log``: JSON-lines decision log ("" for none); ``state``: SQLite file for spending
      and the semantic cache ("" keeps them in memory).
    * ``cache_profile``: profile whose ``[llm.backend]`` computes embeddings ("" disables
      the semantic cache); ``cache_threshold``: cosine similarity needed for a hit;
      ``cache_entries``: most answers kept (oldest dropped first).
    * ``facts``: tab-separated facts file of the lookup tool ("" for the bundled one).
    """

    tiers: list = attrs.field(factory=lambda: [{"name": "t0", "kind": "tools"}], validator=_tiers)
    estimator: str = attrs.field(default="rules", validator=one_of("rules", "learned"))
    model_path: str = attrs.field(default="", validator=text(4096))
    long_chars: int = attrs.field(default=600, validator=integer(1, 1 << 24))
    code_min: int = attrs.field(default=1, validator=integer(1, 1 << 20))
    math_min: int = attrs.field(default=3, validator=integer(1, 1 << 20))
    multi_step_min: int = attrs.field(default=2, validator=integer(1, 1 << 20))
    format_min: int = attrs.field(default=2, validator=integer(1, 1 << 20))
    min_success: float = attrs.field(default=0.5, validator=number(0.0, 1.0))
    budget_per_hour: float = attrs.field(default=0.0, validator=number(0.0, 1e12))
    budget_per_day: float = attrs.field(default=0.0, validator=number(0.0, 1e12))
    log: str = attrs.field(default="", validator=text(4096))
    state: str = attrs.field(default="", validator=text(4096))
    cache_profile: str = attrs.field(default="", validator=text(4096))
    cache_threshold: float = attrs.field(default=0.97, validator=number(0.0, 1.0))
    cache_entries: int = attrs.field(default=1024, validator=integer(1, 1 << 20))
    facts: str = attrs.field(default="", validator=text(4096))

    @property
    def tier_list(self) -> tuple[Tier, ...]:
        """The tiers as :class:`Tier` objects."""
        return parse_tiers(self.tiers)
