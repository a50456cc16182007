"""The swarm simulator on Ray at scale: wall time per round, peak memory of the driver and of
each shard actor, and the gossip rows that crossed between shards.

The default is the scale target, 100,000 nodes x 20 rounds with 64 weights (the ``swarm-10k``
profile's model), sharded over 2 actors of a local Ray started for the run:

    .venv/bin/python benchmarks/swarm_ray.py [--nodes 100000] [--rounds 20] [--shards 2]
        [--address HOST:PORT] [--json out.json]

``--local-rounds R`` also times R rounds of the local engine on the same swarm, side by
side (the local engine at this size takes minutes per round: keep R small).

Every run ends with a model of a round at ``--model-nodes`` (1,000,000) on ``--model-machines``
(8) machines, one shard each, built from what this run measured (``model`` in the JSON; the
assumptions are printed with it and in ``benchmarks/README.md``). ``--model-from FILE``
prints the model of a saved run's JSON without running anything.
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
    cpu = [time.process_time()]  # the driver's own CPU time, at each round's end
    waits = [0.0]  # the driver's waits on the shards, cumulated, at each round's end

    def progress(st) -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())
        waits.append(getattr(sim, "wait_seconds", 0.0))
        print(
            f"{engine} round {st.round + 1}: {stamps[-1] - stamps[-2]:.1f} s "
            f"(driver CPU {cpu[-1] - cpu[-2]:.1f} s)",
            flush=True,
        )

    report = sim.run(on_round=progress)
    per_round = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    out = {
        "engine": engine,
        "nodes": nodes,
        "rounds": rounds,
        "weights": settings.order,
        "seconds_total": round(stamps[-1] - stamps[0], 1),
        "seconds_per_round": [round(s, 2) for s in per_round],
        "driver_cpu_seconds_per_round": [
            round(b - a, 2) for a, b in zip(cpu, cpu[1:], strict=False)
        ],
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
        out["shard_cpu_seconds"] = [round(c, 1) for c in sim.shard_cpu_seconds]
        out["driver_bytes_out_per_round"] = round(sim.driver_bytes_out / rounds)
        out["driver_bytes_in_per_round"] = round(sim.driver_bytes_in / rounds)
        hist = sim.receivers
        out["receivers_histogram"] = [] if hist is None else [int(v) for v in hist]
    return out


ASSUMPTIONS = [
    "every per-node cost (shard CPU, driver CPU, driver traffic, memory) grows linearly "
    "with the nodes: the phases are vectorised over nodes, one aggregation per awake node, "
    "and the tightness statistic uses a fixed-size reference sample",
    "gossip peers are uniform over the live nodes, so an update wanted by c receiving nodes "
    "reaches each other shard with probability 1 - (1 - 1/K)**c; the histogram of c per "
    "exchange, measured here, does not depend on the swarm's size (fanout, hops and inbox "
    "limits set it)",
    "one shard per machine, each on a core of its own (shard CPU seconds measured here, "
    "on a shared machine, are the time it would take)",
    "the round is serial: driver time, then the slowest shard, then the transfers at the "
    "link speed; nothing overlaps (an upper bound on the round's wall time)",
]


def expected_rows(hist: list[int], k: int) -> float:
    """Rows pushed between shards for ``k`` shards, given how many exchanges wanted an
    update at ``c`` receivers (``hist[c]``): each other shard with ``1 - (1 - 1/k)**c``."""
    return sum(h * (k - 1) * (1 - (1 - 1 / k) ** c) for c, h in enumerate(hist))


def memory_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(fixed MB, MB per node)`` through ``(nodes, peak MB)`` points: a least-squares line
    when the points hold two node counts or more (a process's fixed part, Python, numpy and
    Ray, is not paid per node), else through the origin."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return 0.0, sum(y for _, y in points) / sum(xs)
    mx, my = sum(xs) / len(xs), sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def model(run: dict, nodes: int, machines: int, link_gbps: float, others: tuple = ()) -> dict:
    """A round at ``nodes`` on ``machines`` (one shard each), from a Ray run's figures (and
    the peak memory of ``others``, runs at other sizes, for the memory lines)."""
    n, k, r, d = run["nodes"], run["shards"], run["rounds"], run["weights"]
    row = 8 + 4 * d
    later = run["driver_cpu_seconds_per_round"][1:] or run["driver_cpu_seconds_per_round"]
    driver_cpu = sorted(later)[len(later) // 2] / n  # per node, median round after the first
    shard_cpu = sum(run["shard_cpu_seconds"]) / r / n
    scale = nodes / n
    hist = run["receivers_histogram"]
    rows = expected_rows(hist, machines) / r * scale
    exchange = rows * row
    per_machine = nodes / machines
    link = link_gbps * 1e9 / 8
    driver_bytes = (run["driver_bytes_in_per_round"] + run["driver_bytes_out_per_round"]) * scale
    out = {
        "nodes": nodes,
        "machines": machines,
        "link_gbps": link_gbps,
        "measured_on": {"nodes": n, "shards": k, "rounds": r, "weights": d},
        "check_rows_between_shards": {
            "measured": run["rows_between_shards"],
            "model": round(expected_rows(hist, k)),
        },
        "exchange_rows_per_round": round(rows),
        "exchange_mb_per_round": round(exchange / 1e6),
        "exchange_mb_per_machine_per_round": round(exchange / machines / 1e6),
        "driver_cpu_s_per_round": round(driver_cpu * nodes, 1),
        "driver_traffic_mb_per_round": round(driver_bytes / 1e6),
        "shard_cpu_s_per_round": round(shard_cpu * per_machine, 1),
    }
    runs = (run, *others)
    fixed, per = memory_fit([(x["nodes"], x["driver_peak_rss_mb"]) for x in runs])
    out["driver_peak_rss_gb"] = round((fixed + per * nodes) / 1024, 1)
    shard_points = [(x["nodes"] / x["shards"], max(x["shard_peak_rss_mb"])) for x in runs]
    fixed, per = memory_fit(shard_points)
    out["shard_peak_rss_gb"] = round((fixed + per * per_machine) / 1024, 1)
    transfer = (exchange / machines + driver_bytes) / link
    out["round_s_upper"] = round(
        out["driver_cpu_s_per_round"] + out["shard_cpu_s_per_round"] + transfer, 1
    )
    out["assumptions"] = ASSUMPTIONS
    return out


def print_model(m: dict) -> None:
    print(
        f"\nmodel: {m['nodes']:,} nodes on {m['machines']} machines "
        f"(measured on {m['measured_on']['nodes']:,} nodes, {m['measured_on']['shards']} shards)"
    )
    c = m["check_rows_between_shards"]
    print(f"  rows between shards in the run: measured {c['measured']:,}, model {c['model']:,}")
    for key in (
        "exchange_rows_per_round",
        "exchange_mb_per_round",
        "exchange_mb_per_machine_per_round",
        "driver_cpu_s_per_round",
        "driver_traffic_mb_per_round",
        "driver_peak_rss_gb",
        "shard_cpu_s_per_round",
        "shard_peak_rss_gb",
        "round_s_upper",
    ):
        print(f"  {key}: {m[key]:,}")
    for a in m["assumptions"]:
        print(f"  assumption: {a}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--address", default=None)
    ap.add_argument("--local-rounds", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--model-nodes", type=int, default=1_000_000)
    ap.add_argument("--model-machines", type=int, default=8)
    ap.add_argument("--model-link-gbps", type=float, default=1.0)
    ap.add_argument(
        "--model-from",
        nargs="+",
        default=None,
        help="saved runs' JSON: the model of the first (the others' peak memory joins the fit)",
    )
    a = ap.parse_args()
    shape = (a.model_nodes, a.model_machines, a.model_link_gbps)
    if a.model_from:
        runs = []
        for name in a.model_from:
            with open(name) as f:
                runs.append(json.load(f)[0])
        print_model(model(runs[0], *shape, others=tuple(runs[1:])))
        return
    started = time.perf_counter()
    results = [run("ray", a.nodes, a.rounds, a.shards, a.address)]
    results[0]["seconds_with_ray_start"] = round(time.perf_counter() - started, 1)
    results[0]["model"] = model(results[0], *shape)
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
    print_model(results[0]["model"])
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
