"""The LoRA swarm under every attack plugin: personalised error and coded bits with 30%
Byzantine nodes on the shared layers, against the same swarm without the attack.

Each attack runs ``qres swarm simulate --profile swarm-lora`` (qres.lora.swarm) once; the
attack-free run is made once and shared (the Byzantine nodes then behave). Printed per
attack: the honest nodes' final error and bits per sample (the mean of the last quarter of
the rounds) and their ratios to attack-free; the target is a ratio within 1.10. Every
registered attack plugin is run unless ``--attacks`` names some. Deterministic: the same
seed gives the same table.

    .venv/bin/python benchmarks/lora_robustness.py
    .venv/bin/python benchmarks/lora_robustness.py --data /work/shared/data
"""

from __future__ import annotations

import argparse

import attrs

from qres.kernel import plugins, profiles
from qres.lora.swarm import LoraSwarm
from qres.swarm.engine import settings_from_profile


def attack_names() -> list[str]:
    """Every registered attack plugin, sorted."""
    return sorted(plugins.registry().get("attack", {}))


def run(args) -> None:
    loaded = profiles.load(args.profile)
    overrides = {"byzantine": args.byzantine, "seed": args.seed}
    for key in ("nodes", "rounds"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    settings = settings_from_profile(loaded, **overrides)
    if args.data != "generated":
        settings = attrs.evolve(settings, data=args.data)
    free = LoraSwarm(loaded, settings, attack_free=True).run()
    e0, b0 = free["final_honest_error"], free["final_honest_bits_per_sample"]
    print(
        f"{args.profile}: {free['nodes']} nodes, {free['rounds']} rounds, "
        f"{args.byzantine:.0%} Byzantine on the shared layers, data {args.data}, "
        f"aggregator {free['aggregator']}, seed {args.seed}"
    )
    head = f"{'error':>12s}{'bits/sample':>13s}{'error ratio':>13s}{'bits ratio':>12s}"
    print(f"{'attack':18s}{head}")
    print(f"{'(attack-free)':18s}{e0:12.6f}{b0:13.4f}{1:13.4f}{1:12.4f}")
    worst = 0.0
    for name in args.attacks or attack_names():
        report = LoraSwarm(loaded, settings, attack=name).run()
        e, b = report["final_honest_error"], report["final_honest_bits_per_sample"]
        worst = max(worst, e / e0)
        print(f"{name:18s}{e:12.6f}{b:13.4f}{e / e0:13.4f}{b / b0:12.4f}")
    print(f"worst error ratio {worst:.4f} (target: within 1.10)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="swarm-lora")
    ap.add_argument("--nodes", type=int, default=None, help="default: the profile's")
    ap.add_argument("--rounds", type=int, default=None, help="default: the profile's")
    ap.add_argument("--byzantine", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data", default="generated", help="a MANIFEST folder of recordings, or 'generated'"
    )
    ap.add_argument("--attacks", nargs="*", default=None, help="default: every attack plugin")
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
