"""What runs each router tier: the tools, a local backend, an OpenAI-compatible endpoint."""

from __future__ import annotations

import attrs

from qres.kernel.errors import QresError
from qres.llm import tools
from qres.llm.route_settings import Tier


@attrs.frozen
class TierAnswer:
    """A tier's answer (None: the tier cannot answer this prompt) and its token counts."""

    text: str | None
    prompt_tokens: int = 0
    tokens: int = 0
    detail: str = ""


class ToolsRunner:
    """Tier kind ``tools``: :func:`qres.llm.tools.answer`; no tokens, no cost."""

    def __init__(self, tier: Tier, facts: str = ""):
        self.tier, self.facts = tier, facts

    def __call__(self, prompt: str) -> TierAnswer:
        found = tools.answer(prompt, self.facts)
        if found is None:
            return TierAnswer(None, detail="no tool answers this prompt")
        return TierAnswer(found.text, detail=found.tool)

    def close(self) -> None:
        """Nothing to release."""


class BackendRunner:
    """Tier kind ``llm``: the backend of an LLM profile, asked as a one-message chat at
    temperature 0 (loaded on first use)."""

    def __init__(self, tier: Tier, backend=None):
        self.tier = tier
        self._backend = backend

    @property
    def backend(self):
        """The profile's backend (built on first use)."""
        if self._backend is None:
            from qres.kernel import profiles

            self._backend = profiles.load(self.tier.profile).build("llm", "backend")
        return self._backend

    def __call__(self, prompt: str) -> TierAnswer:
        done = self.backend.chat(
            [{"role": "user", "content": prompt}], max_tokens=self.tier.max_tokens, temperature=0.0
        )
        used = done.prompt_tokens
        if used is None:
            used = self.backend.count_tokens(prompt)
        return TierAnswer(done.text.strip(), used, done.tokens)

    def close(self) -> None:
        """Release the backend."""
        if self._backend is not None:
            self._backend.close()


class OpenAIRunner(BackendRunner):
    """Tier kind ``openai``: the ``openai`` LLM backend (plugins/llm/openai_compat) on the
    tier's ``url`` and ``model``, asked like an ``llm`` tier (built on first use).

    The tier's ``latency_budget_ms`` is the backend's read timeout and its ``max_tokens`` the
    backend's limit. The backend retries nothing: a refused, failed or throttled call
    escalates to the next tier at once, which is the router's own retry.
    """

    @property
    def backend(self):
        """The openai backend of this tier (built on first use)."""
        if self._backend is None:
            from qres.kernel import plugins
            from qres.kernel.config import Location

            budget_s = min(3600.0, max(0.01, self.tier.latency_budget_ms / 1000))
            table = {
                "use": "openai",
                "base_url": self.tier.url,
                "model": self.tier.model,
                "api_key_env": self.tier.api_key_env,
                "connect_timeout_s": min(5.0, budget_s),
                "read_timeout_s": budget_s,
                "max_retries": 0,
                "max_tokens": self.tier.max_tokens,
            }
            where = Location("[router]", f"tiers.{self.tier.name}")
            self._backend = plugins.create("llm_backend", table, where)
        return self._backend


class MeshRunner(BackendRunner):
    """Tier kind ``mesh``: the workers of a profile's ``[mesh]`` table, through
    :class:`qres.mesh.backend.MeshBackend` (connected on first use)."""

    @property
    def backend(self):
        """The mesh client, connected on first use."""
        if self._backend is None:
            from qres.kernel import profiles
            from qres.kernel.config import build_config
            from qres.mesh.backend import MeshBackend
            from qres.mesh.settings import MeshSettings

            loaded = profiles.load(self.tier.profile)
            table = loaded.data.get("mesh")
            if table is None:
                raise QresError(f"tier {self.tier.name!r}: profile has no [mesh] table")
            settings = build_config(MeshSettings, table, loaded.where("mesh"))
            self._backend = MeshBackend(settings, max_tokens=self.tier.max_tokens)
        return self._backend


def make_runner(tier: Tier, facts: str = ""):
    """The runner of ``tier``."""
    if tier.kind == "tools":
        return ToolsRunner(tier, facts)
    if tier.kind == "llm":
        return BackendRunner(tier)
    if tier.kind == "mesh":
        return MeshRunner(tier)
    return OpenAIRunner(tier)
