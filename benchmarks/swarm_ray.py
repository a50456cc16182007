"""The swarm simulator on Ray at scale: wall time per round, peak memory of the driver and of
each shard actor, and the gossip rows that crossed between shards.

The default is the scale target, 100,000 nodes x 20 rounds with 64 weights (the ``swarm-10k``
profile's model), sharded over 2 actors of a local Ray started for the run:

    .venv/bin/python benchmarks/swarm_ray.py [--nodes 100000] [--rounds 20] [--shards 2]
        [--address HOST:PORT] [--json out.json]

``--local-rounds R`` also times R rounds of the local engine on the same swarm, side by
side (the local engine at this size takes minutes per round: keep R small).
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def run(engine: str, nodes: int, rounds: int, shards: int, address: str | None) -> dict:
    """One run of ``swarm-10k`` at ``nodes`` x ``rounds``: timings, memory, report summary."""
    from qres.kernel import profiles
    from qres.swarm.engine import Simulation, settings_from_profile
    from qres.swarm.ray_engine import EngineSettings, RaySimulation

    profile = profiles.load("swarm-10k")
    settings = settings_from_profile(profile, nodes=nodes, rounds=rounds)
    if engine == "ray":
        sim = RaySimulation(profile, settings, EngineSettings("ray", address, shards))
    else:
        sim = Simulation(profile, settings)
    stamps = [time.perf_counter()]
    waits = [0.0]  # the driver's waits on the shards, cumulated, at each round's end

    def progress(st) -> None:
        stamps.append(time.perf_counter())
        waits.append(getattr(sim, "wait_seconds", 0.0))
        print(f"{engine} round {st.round + 1}: {stamps[-1] - stamps[-2]:.1f} s", flush=True)

    report = sim.run(on_round=progress)
    per_round = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    out = {
        "engine": engine,
        "nodes": nodes,
        "rounds": rounds,
        "weights": settings.order,
        "seconds_total": round(stamps[-1] - stamps[0], 1),
        "seconds_per_round": [round(s, 2) for s in per_round],
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "final_honest_error": report["final_honest_error"],
        "bytes_sent": report["bytes_sent"],
    }
    if engine == "ray":
        out["shards"] = shards
        out["shard_peak_rss_mb"] = [round(b / 2**20) for b in sim.shard_peak_rss]
        out["rows_between_shards"] = sim.exchanged_rows
        # per round after the first (which also starts the actors): the driver's own time
        # (the round minus its waits on the shards) and the waits
        wait = [b - a for a, b in zip(waits[1:], waits[2:], strict=False)]
        own = [t - w for t, w in zip(per_round[1:], wait, strict=True)]
        out["driver_seconds_per_round"] = [round(x, 2) for x in own]
        out["shard_wait_seconds_per_round"] = [round(x, 2) for x in wait]
        out["bytes_between_shards_per_round"] = round(
            sim.exchanged_rows * (8 + 4 * settings.order) / rounds
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--address", default=None)
    ap.add_argument("--local-rounds", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    started = time.perf_counter()
    results = [run("ray", a.nodes, a.rounds, a.shards, a.address)]
    results[0]["seconds_with_ray_start"] = round(time.perf_counter() - started, 1)
    if a.local_rounds:
        results.append(run("local", a.nodes, a.local_rounds, 1, None))
    print("engine  nodes    rounds  s/round(mean)  driver MB  shard MB")
    for r in results:
        mean = sum(r["seconds_per_round"]) / max(len(r["seconds_per_round"]), 1)
        shard_mb = ",".join(str(m) for m in r.get("shard_peak_rss_mb", [])) or "-"
        print(
            f"{r['engine']:<7} {r['nodes']:<8} {r['rounds']:<7} {mean:<14.1f} "
            f"{r['driver_peak_rss_mb']:<10} {shard_mb}"
        )
    text = json.dumps(results, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
