"""The tiered router: start at the cheapest tier likely to answer well, validate the answer,
escalate on failure, stay within budget, log every decision (docs/router.md)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from qres.kernel.errors import QresError
from qres.kinds.validator import Context, Validator
from qres.llm import features as feat
from qres.llm.route_settings import RouterSettings, Tier
from qres.llm.tiers import TierAnswer, make_runner

LOG_VERSION = 1


@attrs.frozen
class Decision:
    """Where a prompt starts: its ``features``, the estimator's per-tier ``scores`` (learned:
    success probabilities; rules: the triggered thresholds), the ``start`` tier index and a
    one-line ``reason``."""

    features: dict
    estimator: str
    scores: dict
    start: int
    reason: str


@attrs.frozen
class Attempt:
    """One tier's try: the verdict, why it failed, its cost and time."""

    tier: str
    ok: bool
    reason: str = ""
    cost: float = 0.0
    latency_ms: float = 0.0
    tokens: int = 0
    skipped: bool = False


@attrs.frozen
class Outcome:
    """The router's result: the ``answer`` (None if no tier answered), whether it passed
    validation (``ok``), the tier that gave it, every attempt, the total cost."""

    answer: str | None
    ok: bool
    tier: str | None
    decision: Decision
    attempts: tuple[Attempt, ...]
    cost: float
    cached: bool = False


def rule_level(features: dict, s: RouterSettings) -> tuple[int, list[str]]:
    """The rule-based complexity level: 0 when a tool answers, else 1 plus one per feature
    at or above its threshold; and the names of those features."""
    if features["tool"]:
        return 0, ["tool"]
    checks = (
        ("chars", s.long_chars),
        ("code", s.code_min),
        ("math", s.math_min),
        ("multi_step", s.multi_step_min),
        ("format", s.format_min),
    )
    hit = [name for name, threshold in checks if features[name] >= threshold]
    return 1 + len(hit), hit


class Router:
    """Routes prompts over the tiers of ``settings`` with ``validators``.

    ``runners`` maps tier names to callables ``prompt -> TierAnswer`` (default: built from
    the tiers); ``embed`` maps a text to a unit vector for the semantic cache (None: off);
    ``clock`` gives seconds (budgets and the log).
    """

    def __init__(
        self,
        settings: RouterSettings,
        validators: Sequence[Validator] = (),
        runners: dict | None = None,
        embed: Callable[[str], Sequence[float]] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.tiers: tuple[Tier, ...] = settings.tier_list
        self.validators = list(validators)
        self.runners = runners or {t.name: make_runner(t, settings.facts) for t in self.tiers}
        self.embed = embed
        self.clock = clock
        self.model = None
        if settings.estimator == "learned":
            from qres.llm.route_learn import load_model

            if not settings.model_path:
                raise QresError('router: estimator = "learned" needs model_path; train one')
            self.model = load_model(settings.model_path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(settings.state or ":memory:", check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS spend (ts REAL NOT NULL, cost REAL NOT NULL)")
        self.cache = None
        if embed is not None:
            from qres.llm.route_cache import SemanticCache

            self.cache = SemanticCache(self.db, settings.cache_entries, settings.cache_threshold)

    def close(self) -> None:
        """Close the state file and every tier's runner."""
        self.db.close()
        for runner in self.runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                close()

    # -- deciding --------------------------------------------------------------------------

    def decide(self, prompt: str) -> Decision:
        """Where ``prompt`` starts (no tier is called)."""
        features = feat.extract(prompt, self.settings.facts)
        if self.model is None:
            level, hit = rule_level(features, self.settings)
            start = min(level, len(self.tiers) - 1)
            why = "a tool answers" if level == 0 else f"level {level}: {', '.join(hit) or 'plain'}"
            return Decision(features, "rules", {"level": level, "triggered": hit}, start, why)
        probs = self.model.probabilities(features)
        for i, tier in enumerate(self.tiers):
            if probs.get(tier.name, 0.0) >= self.settings.min_success:
                why = f"p({tier.name}) = {probs[tier.name]:.2f} >= {self.settings.min_success}"
                return Decision(features, "learned", probs, i, why)
        top = len(self.tiers) - 1
        return Decision(features, "learned", probs, top, "no tier is likely enough: the top")

    # -- budgets ---------------------------------------------------------------------------

    def spent(self, seconds: float) -> float:
        """Money spent in the last ``seconds``."""
        since = self.clock() - seconds
        row = self.db.execute("SELECT COALESCE(SUM(cost), 0) FROM spend WHERE ts > ?", (since,))
        return float(row.fetchone()[0])

    def _affordable(self, tier: Tier, prompt: str) -> bool:
        if tier.cost_per_1k == 0:
            return True
        worst = tier.cost_per_1k * (len(prompt) / 2 + tier.max_tokens) / 1000
        s = self.settings
        if s.budget_per_hour and self.spent(3600) + worst > s.budget_per_hour:
            return False
        return not (s.budget_per_day and self.spent(86400) + worst > s.budget_per_day)

    # -- answering -------------------------------------------------------------------------

    def validate(self, prompt: str, answer: str, tier: str) -> str:
        """The first failing validator's reason for ``answer`` ("" when all pass)."""
        context = Context(tier, self._ask)
        for validator in self.validators:
            if validator.applies(prompt):
                verdict = validator.safe_check(prompt, answer, context)
                if not verdict.ok:
                    return f"{validator.name}: {verdict.reason}"
        return ""

    def _ask(self, tier_name: str, prompt: str) -> str | None:
        runner = self.runners.get(tier_name)
        if runner is None:
            return None
        try:
            return runner(prompt).text
        except Exception:  # a witness that fails gives no second answer
            return None

    def _try(self, tier: Tier, prompt: str) -> tuple[Attempt, str | None]:
        start = time.perf_counter()
        try:
            got: TierAnswer = self.runners[tier.name](prompt)
        except Exception as exc:  # a tier failing is an escalation, never a crash
            ms = (time.perf_counter() - start) * 1000
            return Attempt(tier.name, False, f"failed: {exc}", 0.0, ms), None
        ms = (time.perf_counter() - start) * 1000
        used = got.prompt_tokens + got.tokens
        cost = tier.cost_per_1k * used / 1000
        if cost:
            self.db.execute("INSERT INTO spend VALUES (?, ?)", (self.clock(), cost))
            self.db.commit()
        if got.text is None:
            return Attempt(tier.name, False, got.detail, cost, ms, used), None
        reason = self.validate(prompt, got.text, tier.name)
        if not reason and ms > tier.latency_budget_ms:
            reason = f"took {ms:.0f} ms, over the latency budget"
        return Attempt(tier.name, not reason, reason, cost, ms, used), got.text

    def route(self, prompt: str) -> Outcome:
        """Answer ``prompt`` (see the module docstring); logs the decision."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise QresError("router: the prompt is empty; give some text")
        with self._lock:
            began = time.perf_counter()
            decision = self.decide(prompt)
            outcome = self._cached(prompt, decision) or self._escalate(prompt, decision)
            self._log(prompt, outcome, (time.perf_counter() - began) * 1000)
            return outcome

    def _escalate(self, prompt: str, decision: Decision) -> Outcome:
        attempts, best = [], (None, None)
        for i in self._order(decision.start, attempts):
            tier = self.tiers[i]
            if not self._affordable(tier, prompt):
                attempts.append(Attempt(tier.name, False, "over budget", skipped=True))
                continue
            attempt, text = self._try(tier, prompt)
            attempts.append(attempt)
            if text is not None:
                best = (text, tier.name)
            if attempt.ok:
                self._remember(prompt, decision, text, tier.name)
                return Outcome(text, True, tier.name, decision, tuple(attempts), _sum(attempts))
        return Outcome(best[0], False, best[1], decision, tuple(attempts), _sum(attempts))

    def _order(self, start: int, attempts: list):
        """Tiers from ``start`` up; then, if the budget skipped any, the cheaper ones below
        ``start`` (degrading rather than giving up)."""
        yield from range(start, len(self.tiers))
        if any(a.skipped for a in attempts):
            yield from range(start - 1, -1, -1)

    def _cached(self, prompt: str, decision: Decision) -> Outcome | None:
        if self.cache is None or decision.features["tool"]:
            return None  # the tools are free and exact: never trade them for a neighbour
        vector = self.embed(prompt)
        for hit in self.cache.nearest(vector):
            if not self.validate(prompt, hit.answer, hit.tier):
                attempt = Attempt(hit.tier, True, f"cache {hit.similarity:.3f}")
                return Outcome(hit.answer, True, hit.tier, decision, (attempt,), 0.0, True)
        return None

    def _remember(self, prompt: str, decision: Decision, text: str, tier: str) -> None:
        if self.cache is not None and not decision.features["tool"]:
            self.cache.put(self.embed(prompt), text, tier)

    def _log(self, prompt: str, outcome: Outcome, ms: float) -> None:
        if not self.settings.log:
            return
        record = log_record(prompt, outcome, ms, self.clock())
        path = Path(self.settings.log)
        try:
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise QresError(f"router log {path}: {exc.strerror or exc}; fix [router] log") from exc


def _sum(attempts) -> float:
    return round(sum(a.cost for a in attempts), 9)


def log_record(prompt: str, outcome: Outcome, ms: float, ts: float) -> dict:
    """One decision-log line (docs/router.md, "Decision log")."""
    d = outcome.decision
    return {
        "v": LOG_VERSION,
        "ts": round(ts, 3),
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "features": d.features,
        "estimator": d.estimator,
        "start": d.start,
        "reason": d.reason,
        "attempts": [attrs.asdict(a) for a in outcome.attempts],
        "tier": outcome.tier,
        "ok": outcome.ok,
        "cached": outcome.cached,
        "cost": outcome.cost,
        "latency_ms": round(ms, 3),
    }
