"""What each node's sensor stream costs through its profile's coder, round by round.

Every round, every awake honest node predicts the window it just observed with the model it
held at the start of the round (:func:`qres.learning.task.residuals`) and codes the residuals with
the profile's coder plugin; the same samples coded with no predictor give the baseline. The
byte counts are real coder output, so the report says what the swarm's learning buys the data
each node ships upstream.
"""

from __future__ import annotations

from typing import Any

from qres.swarm.settings import SwarmSettings


class CodecMeter:
    """Counts the coded bytes of the nodes' streams over a run (see the module docstring)."""

    def __init__(self, settings: SwarmSettings, profile: Any):
        from qres.kernel import plugins
        from qres.kernel.config import Location

        self.s = settings
        codec = profile.data.get("codec", {}) if profile is not None else {}
        table = codec.get("coder", {"use": "rice"})
        where = profile.where("codec", "coder") if "coder" in codec else Location("<swarm codec>")
        self.coder = plugins.create("coder", table, where)
        self.nodes: set[int] = set()
        self.samples = 0
        self.learned_bytes = 0
        self.plain_bytes = 0
        self.last = (0, 0)  # (samples, learned bytes) of the latest round that coded anything

    def add(self, ids: Any, weights: Any, windows: Any) -> None:
        """Code the residuals of these nodes' windows under their weights, and the raw targets."""
        if ids.shape[0] == 0:
            return
        from qres.learning.task import residuals

        res = residuals(weights, windows, self.s.order)
        raw = windows[:, self.s.order :].astype("int64")
        encode = self.coder.encode
        learned = sum(len(encode(row)) for row in res)
        self.learned_bytes += learned
        self.plain_bytes += sum(len(encode(row)) for row in raw)
        self.samples += int(res.size)
        self.last = (int(res.size), learned)
        self.nodes.update(int(i) for i in ids)

    def report(self) -> dict:
        """Plain data: coder, nodes, samples, bits per sample over the run with the models the
        nodes held and with no predictor, the same for the last round alone (the trained
        models), and the run's ratio against the raw sample width."""
        samples = max(self.samples, 1)
        learned = 8.0 * self.learned_bytes / samples
        return {
            "coder": self.coder.name,
            "nodes": len(self.nodes),
            "samples": self.samples,
            "coded_bytes": self.learned_bytes,
            "bits_per_sample_learned": round(learned, 9),
            "bits_per_sample_no_predictor": round(8.0 * self.plain_bytes / samples, 9),
            "bits_per_sample_last_round": round(8.0 * self.last[1] / max(self.last[0], 1), 9),
            "ratio_vs_raw": round(8.0 * self.s.sample_bytes / learned, 9) if learned else None,
        }
