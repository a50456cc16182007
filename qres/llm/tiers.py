"""What runs each router tier: the tools, a local backend, an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import attrs

from qres.kernel.errors import QresError
from qres.llm import tools
from qres.llm.route_settings import Tier

#: Largest response body read from an OpenAI-compatible endpoint.
MAX_RESPONSE = 1 << 22


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


class OpenAIRunner:
    """Tier kind ``openai``: ``POST {url}/chat/completions`` with the tier's model."""

    def __init__(self, tier: Tier):
        self.tier = tier

    def __call__(self, prompt: str) -> TierAnswer:
        body = {
            "model": self.tier.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.tier.max_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.tier.api_key_env, "") if self.tier.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.tier.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers)
        timeout = self.tier.latency_budget_ms / 1000
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                raw = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            raise QresError(f"tier {self.tier.name!r}: {url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise QresError(f"tier {self.tier.name!r}: cannot reach {url}: {exc}") from exc
        if len(raw) > MAX_RESPONSE:
            raise QresError(f"tier {self.tier.name!r}: response over {MAX_RESPONSE} bytes")
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            return TierAnswer(
                str(text).strip(),
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise QresError(f"tier {self.tier.name!r}: not an OpenAI response ({exc})") from exc

    def close(self) -> None:
        """Nothing to release (one connection per request)."""


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
