"""Gossip: packet sizes, random peers, and the receivers' own test of an update.

Packet sizes come from the trust packet encoding (:mod:`qres.trust.packet`): an update
packet of ``d`` weights is ``HEADER_BYTES + 4 d + SIGNATURE_BYTES`` bytes (the transition
proof does not travel with gossip; it goes to an auditor inside the audit response, which is
``AUDIT_HEADER_BYTES + 4 d + PROOF_BYTES + SIGNATURE_BYTES``). At thousands of nodes the
simulator does not sign or commit every packet (an Ed25519 signature and a 64-generator
Pedersen commitment per node per round would dominate the run); it counts their exact sizes.

Epidemic forwarding: a node that receives a fresh update tests it on the newest
``eval_samples`` samples of its own window (the accuracy gain: its error before minus after
applying the update) and forwards it only if the gain exceeds ``forward_threshold``, at most
``forward_budget`` updates per hop in order of priority ``accuracy_gain x reputation``:
both measured by the receiver (its own window, its ledger), never the residual error the
sender claims, which an attacker sets to the round's highest.
"""

from __future__ import annotations

from typing import Any

#: A ban notice: header (magic, version, round, count; 16 bytes) and signature (64 bytes),
#: plus 32 bytes per banned public key.
BAN_NOTICE_BASE_BYTES = 16 + 64
BAN_NOTICE_PER_NODE_BYTES = 32


def packet_bytes(d: int) -> int:
    """Bytes of one signed update packet of ``d`` weights, as gossip carries it."""
    from qres.trust import packet as pk
    from qres.trust.identity import SIGNATURE_BYTES

    return pk.HEADER_BYTES + 4 * d + SIGNATURE_BYTES


def audit_response_bytes(d: int) -> int:
    """Bytes of one signed audit response (opening, proof) for a model of ``d`` weights."""
    from qres.trust import packet as pk
    from qres.trust.identity import SIGNATURE_BYTES

    return pk.AUDIT_HEADER_BYTES + 4 * d + pk.PROOF_BYTES + SIGNATURE_BYTES


#: An audit request: the packet's sender key, round and nonce, the auditor's nonce, signed.
AUDIT_REQUEST_BYTES = 32 + 8 + 16 + 16 + 64


def random_peers(src: Any, alive: Any, k: int, rng: Any) -> tuple[Any, Any]:
    """``k`` random peers among ``alive`` (sorted node ids) for each sender in ``src``,
    never the sender itself. Returns the repeated sources and the destinations."""
    import numpy as np

    src = np.repeat(np.asarray(src, dtype=np.int64), k)
    m = alive.shape[0]
    if m < 2 or src.shape[0] == 0:
        return src[:0], src[:0]
    pick = rng.integers(0, m, src.shape[0])
    dst = alive[pick]
    same = dst == src
    dst[same] = alive[(pick[same] + 1) % m]
    return src, dst


def selection_keys(dst: Any, tag: Any, seed: int) -> Any:
    """Each receiver's keyed order of the updates it holds (float64 in [0, 1)): a receiver
    that must drop some (``max_inbox``) keeps the lowest keys. The key mixes the run's seed,
    the receiver and the message (SplitMix64's finaliser), so it is deterministic and
    independent of arrival order, and no sender can steer it: the share of a sender group in
    what a node keeps is its share in what the node received, whatever the senders claim.
    """
    import numpy as np

    with np.errstate(over="ignore"):
        z = np.asarray(tag, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= np.asarray(dst, np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        z += np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z ^= z >> np.uint64(shift)
            z *= np.uint64(mult)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def window_errors(weights: Any, windows: Any, order: int, samples: int) -> Any:
    """Mean absolute Q16.16 prediction error of each row's weights on the newest ``samples``
    targets of its window, float64 ``(n,)`` in sample units.

    Products are below 2**42 and sums of at most 256 of them below 2**50, so float64
    matrix products are exact integers whatever order they add in.
    """
    import numpy as np

    n = weights.shape[0]
    out = np.empty(n)
    span = windows.shape[1]
    e = min(samples, span - order)
    for s in range(0, n, 2048):
        x = windows[s : s + 2048, span - e - order :].astype(np.float64)
        w = weights[s : s + 2048].astype(np.float64)
        # lags[p, t, j] = x[p, order - 1 - j + t]
        lags = np.lib.stride_tricks.sliding_window_view(x[:, :-1], order, axis=1)[:, :, ::-1]
        pred = np.matmul(lags, w[:, :, None])[:, :, 0]
        np.clip(pred, -(1 << 28), 1 << 28, out=pred)
        err = np.abs(x[:, order:] * 65536.0 - pred)
        out[s : s + 2048] = err.mean(axis=1) / 65536.0
    return out


def screen(base: Any, windows: Any, rows: Any, order: int, samples: int, tolerance: float):
    """A receiver's own test of updates (the rule the simulator and the real node share): row
    ``i`` of ``rows`` applied to ``base[i]`` is kept unless it makes the error on the newest
    ``samples`` targets of ``windows[i]`` more than ``1 + tolerance`` times worse. Returns
    ``(kept, before, after)``: the mask and both errors (sample units)."""
    import numpy as np

    from qres.fixed.q16 import Q_MAX, Q_MIN

    base = np.asarray(base, np.int64)
    before = window_errors(base, windows, order, samples)
    tried = np.clip(base + rows, Q_MIN, Q_MAX)
    after = window_errors(tried, windows, order, samples)
    return after <= before * (1.0 + tolerance) + 1.0, before, after
