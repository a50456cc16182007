"""Classic attacks on robust aggregation: sign flip, IPM, ALIE, Gaussian, mimic, extreme.

Every attack forges the Byzantine rows from the honest updates it is shown; randomness comes
only from the generator passed to :meth:`qres.kinds.attack.Attack.forge`.
"""

from __future__ import annotations

import attrs

from qres.fixed.q16 import Q_MAX, Q_MIN
from qres.kernel.config import integer, number, one_of
from qres.kernel.hookspecs import hookimpl
from qres.kinds.attack import Attack, from_real, honest_stats


@attrs.frozen
class ScaleConfig:
    """A scale factor applied to the flipped honest mean."""

    scale: float = attrs.field(default=1.0, validator=number(0.0, 1e6))


class SignFlip(Attack):
    """Sign flip: every Byzantine node sends ``-scale`` times the honest mean.

    Allen-Zhu, Ebrahimian, Li, Alistarh, "Byzantine-Resilient Non-Convex Stochastic Gradient
    Descent", ICLR 2021 (sign-flipping attack); also Damaskinos et al., 2018.
    """

    name = "sign-flip"
    Config = ScaleConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        mean, _ = honest_stats(honest)
        return np.repeat(from_real(-self.config.scale * mean)[None, :], f, axis=0)


@attrs.frozen
class IpmConfig:
    """IPM's epsilon: how far past zero, against the honest mean, the forged rows go."""

    epsilon: float = attrs.field(default=0.1, validator=number(0.0, 1e6))


class Ipm(Attack):
    """Inner-product manipulation: every Byzantine node sends ``-epsilon`` times the honest
    mean, so that the aggregate's inner product with the true gradient turns negative.

    Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation", UAI 2019.
    """

    name = "ipm"
    Config = IpmConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        mean, _ = honest_stats(honest)
        return np.repeat(from_real(-self.config.epsilon * mean)[None, :], f, axis=0)


@attrs.frozen
class AlieConfig:
    """ALIE's z: standard deviations to shift by; 0 means the paper's choice from n and f."""

    z: float = attrs.field(default=0.0, validator=number(0.0, 100.0))


def alie_z(n: int, f: int) -> float:
    """The paper's z_max: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``."""
    from statistics import NormalDist

    s = n // 2 + 1 - f
    p = (n - s) / n
    if p <= 0.0 or p >= 1.0:  # with very many attackers the formula leaves (0, 1)
        return 1.0
    return max(NormalDist().inv_cdf(p), 0.0)


class Alie(Attack):
    """ "A little is enough": every Byzantine node sends ``mean - z * std`` per coordinate,
    a shift small enough to hide inside the honest spread.

    Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019.
    """

    name = "alie"
    Config = AlieConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        mean, std = honest_stats(honest)
        z = self.config.z or alie_z(honest.shape[0] + f, f)
        return np.repeat(from_real(mean - z * std)[None, :], f, axis=0)


@attrs.frozen
class GaussianConfig:
    """Standard deviation of the noise, in real units (Q16.16 1.0 = 65536)."""

    sigma: float = attrs.field(default=200.0, validator=number(0.0, 32767.0))


class Gaussian(Attack):
    """Gaussian noise: each Byzantine row is the honest mean plus independent N(0, sigma**2)
    noise per coordinate, drawn from the generator passed in.

    Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017 (Gaussian Byzantine vectors).
    """

    name = "gaussian"
    Config = GaussianConfig

    def _forge(self, honest, f, rng):
        mean, _ = honest_stats(honest)
        noise = rng.normal(0.0, self.config.sigma * 65536.0, (f, honest.shape[1]))
        return from_real(mean[None, :] + noise)


@attrs.frozen
class MimicConfig:
    """Which honest row to copy: -1 picks one with the generator."""

    target: int = attrs.field(default=-1, validator=integer(-1, 1 << 24))


class Mimic(Attack):
    """Mimic: all Byzantine nodes copy one honest node's update, over-weighting it so that a
    heterogeneous swarm drifts toward that node's data.

    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing", ICLR 2022.
    """

    name = "mimic"
    Config = MimicConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        h = honest.shape[0]
        target = self.config.target
        i = int(rng.integers(h)) if target < 0 else target % h
        return np.repeat(honest[i : i + 1], f, axis=0)


@attrs.frozen
class ExtremeConfig:
    """Direction of the saturated values."""

    #: "against": opposite the honest mean's sign per coordinate; "max", "min": all Q_MAX or
    #: Q_MIN; "alternate": Byzantine rows alternate Q_MAX and Q_MIN.
    mode: str = attrs.field(
        default="against", validator=one_of("against", "max", "min", "alternate")
    )


class Extreme(Attack):
    """Extreme values: Byzantine rows saturate Q16.16 (Q_MIN or Q_MAX in every coordinate),
    the largest displacement a fixed-point update can carry.

    The classic "omniscient" large-value attack of Blanchard et al., NeurIPS 2017, taken to
    the limits of the number format.
    """

    name = "extreme"
    Config = ExtremeConfig

    def _forge(self, honest, f, rng):
        import numpy as np

        d = honest.shape[1]
        mode = self.config.mode
        if mode == "max":
            return np.full((f, d), Q_MAX, np.int32)
        if mode == "min":
            return np.full((f, d), Q_MIN, np.int32)
        if mode == "alternate":
            out = np.full((f, d), Q_MAX, np.int32)
            out[1::2] = Q_MIN
            return out
        mean, _ = honest_stats(honest)
        row = np.where(mean > 0, Q_MIN, Q_MAX).astype(np.int32)
        return np.repeat(row[None, :], f, axis=0)


@hookimpl
def register_attacks(register):
    """Register the classic attacks."""
    for cls in (SignFlip, Ipm, Alie, Gaussian, Mimic, Extreme):
        register(cls)
