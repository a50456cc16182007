"""Regenerate the swarm and aggregator-bench golden reports in tests/golden (run only when a
change of the simulation or of the grid is deliberate).

python tests/make_swarm_golden.py

Each golden is the exact bytes of a report the CLI writes: ``qres swarm simulate --report``
for small swarms under attack (defence, audits, bans, a scripted storm, joining nodes, the
attack-free baseline), and ``qres bench aggregators --quick --no-speed --json`` (the
robustness grid; the speed table is timing and is not pinned).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"

#: A profile with a scripted storm early in a short run, nodes joining mid-run, and the
#: energy rule of gossip switched on (swarm-100 gossips every round).
STORM_PROFILE = """\
[profile]
name = "swarm-golden-storm"
extends = "swarm-storm"
[swarm]
nodes = 36
rounds = 30
storm_start = 8
storm_rounds = 12
storm_min_rounds = 6
join_fraction = 0.1
join_round = 5
gossip_bias_calm = 1.0
gossip_bias_prestorm = 0.5
gossip_bias_storm = 0.25
"""

#: golden file name -> arguments of ``qres swarm simulate`` (``{storm}`` is the profile above)
SWARMS = {
    "swarm-100.sign-flip.json": [
        "--profile", "swarm-100", "--nodes", "40", "--rounds", "14",
        "--attack", "sign-flip", "--byzantine", "0.3",
    ],
    "swarm-storm.extreme.json": [
        "--profile", "{storm}", "--attack", "extreme", "--byzantine", "0.2", "--seed", "3",
    ],
    "swarm-100.alie.json": [
        "--profile", "swarm-100", "--nodes", "30", "--rounds", "10",
        "--attack", "alie", "--byzantine", "0.25", "--no-baseline",
    ],
}  # fmt: skip

BENCH_GOLDEN = "bench-aggregators.quick-grid.json"

#: A recorded packet stream (``--record``): every packet, audit response and round-step
#: evidence of a small swarm with two base-poisoning nodes, every packet audited.
RECORDING = "swarm-steps.base-poison.qrps"
STEPS_PROFILE = '[profile]\nname = "steps"\nextends = "swarm-100"\n[swarm]\naudit_rate = 1.0\n'
RECORD_ARGS = ["--nodes", "8", "--rounds", "3", "--seed", "3"]
RECORD_ARGS += ["--attack", "base-poison", "--byzantine", "0.25", "--no-baseline"]


def recording(workdir: Path) -> bytes:
    """The bytes of the recording golden, computed now in ``workdir``."""
    profile = workdir / "steps.toml"
    profile.write_text(STEPS_PROFILE)
    target = workdir / RECORDING
    args = ["swarm", "simulate", "--profile", str(profile), *RECORD_ARGS]
    run_cli([*args, "--record", str(target), "--force"])
    return target.read_bytes()


def run_cli(args: list[str]) -> str:
    """Run ``qres ARGS`` in this process; returns its stdout (raises if it failed)."""
    from qres.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"qres {' '.join(args)} exited with {exc.code}") from exc
    return out.getvalue()


def swarm_report(name: str, workdir: Path) -> bytes:
    """The report bytes of the swarm golden ``name``, computed now in ``workdir``."""
    storm = workdir / "swarm-golden-storm.toml"
    storm.write_text(STORM_PROFILE)
    target = workdir / name
    args = [a.replace("{storm}", str(storm)) for a in SWARMS[name]]
    run_cli(["swarm", "simulate", *args, "--report", str(target), "--force"])
    return target.read_bytes()


def bench_grid(workdir: Path) -> bytes:
    """The ``bench aggregators --quick`` grid JSON, computed now on the test recordings."""
    from test_aggbench import folder

    data = workdir / "bench-data"
    data.mkdir(exist_ok=True)
    args = ["bench", "aggregators", "--quick", "--no-speed", "--json", "--data", folder(data)]
    text = run_cli(args)
    return text.replace(str(data), "DATA").encode()


def main() -> None:
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SWARMS:
            (GOLDEN / name).write_bytes(swarm_report(name, Path(tmp)))
        (GOLDEN / BENCH_GOLDEN).write_bytes(bench_grid(Path(tmp)))
        (GOLDEN / RECORDING).write_bytes(recording(Path(tmp)))


if __name__ == "__main__":
    main()
