"""100 nodes, 30 Byzantine forging their weight transitions, 3% of updates audited.

Honest nodes train with qres.learning.task on shards of the shared corpus (synthetic sines when
it is absent); each Byzantine node forges with one of the kinds in qres.trust.auditsim.FORGERIES.
Prints one JSON report: audited forged transitions caught, honest ones flagged, per-kind
findings, and the bytes that proofs and audit responses add to the packets sent.

Run: .venv/bin/python benchmarks/trust_audit_sim.py [--rounds 60] [--seed 0] [--audit-rate 0.03]
     [--record sim.qrps]    (then: qres audit sim.qrps)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from qres.trust import auditsim


def main(argv: list[str] | None = None) -> int:
    """Run the simulation and print the report; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--byzantine", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--audit-rate", type=float, default=0.03)
    parser.add_argument("--order", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="A MANIFEST folder (default: shared corpus).")
    parser.add_argument(
        "--record", default=None, help="Record packets and audit responses here (for `qres audit`)."
    )
    args = parser.parse_args(argv)
    settings = auditsim.SimSettings(
        nodes=args.nodes,
        byzantine=args.byzantine,
        rounds=args.rounds,
        audit_rate=args.audit_rate,
        order=args.order,
        seed=args.seed,
    )
    start = time.perf_counter()
    if args.record:
        with open(args.record, "wb") as out:
            report = auditsim.run(settings, args.data, record=out)
    else:
        report = auditsim.run(settings, args.data)
    report["seconds"] = round(time.perf_counter() - start, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    met = (
        report["honest_flagged"] == 0
        and report["forged_caught"] == report["audited_forged"]
        and report["proof_share_of_gossip"] <= 0.02
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
