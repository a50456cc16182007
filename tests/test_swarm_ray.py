"""The swarm simulator on Ray: a real local Ray, nodes sharded across actors, and the local
engine's report bytes (the golden reports) whatever the number of shards."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from make_swarm_golden import GOLDEN, STORM_PROFILE, SWARMS, run_cli  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "swarm.md"


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local Ray for the module (2 logical CPUs, no dashboard)."""
    from qres.swarm.ray_engine import RayCluster

    with RayCluster(None, 2) as cluster:
        yield cluster


def ray_report(name: str, shards: int, workdir: Path) -> bytes:
    """The report of golden run ``name`` computed with ``--engine ray --shards K``."""
    storm = workdir / "swarm-golden-storm.toml"
    storm.write_text(STORM_PROFILE)
    target = workdir / f"{shards}-{name}"
    args = [a.replace("{storm}", str(storm)) for a in SWARMS[name]]
    engine = ["--engine", "ray", "--shards", str(shards)]
    run_cli(["swarm", "simulate", *args, *engine, "--report", str(target), "--force"])
    return target.read_bytes()


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_any_shard_count_gives_the_local_report_bytes(ray_cluster, shards, tmp_path):
    name = "swarm-100.alie.json"  # an attack, audits and bans
    assert ray_report(name, shards, tmp_path) == (GOLDEN / name).read_bytes()


def test_joiners_storm_and_baseline_on_three_shards(ray_cluster, tmp_path):
    # nodes joining mid-run take the consensus gathered from the shards; a scripted storm
    # trains with storm_lr; the attack-free baseline runs on the same Ray
    name = "swarm-storm.extreme.json"
    assert ray_report(name, 3, tmp_path) == (GOLDEN / name).read_bytes()


def test_base_poisoning_and_step_audits_on_two_shards(ray_cluster, tmp_path):
    # the attack picks its nodes' bases from models held by the shards; the round-step
    # audits replay the chains the shards keep
    args = ["swarm", "simulate", "--nodes", "30", "--rounds", "8", "--attack", "base-poison"]
    args += ["--byzantine", "0.3", "--no-baseline", "--force"]
    run_cli([*args, "--report", str(tmp_path / "local.json")])
    run_cli([*args, "--report", str(tmp_path / "ray.json"), "--engine", "ray", "--shards", "2"])
    local = (tmp_path / "local.json").read_bytes()
    assert (tmp_path / "ray.json").read_bytes() == local
    assert json.loads(local)["audits"]["wrong_step_byzantine"] > 0


def test_recordings_on_two_shards_match_the_local_engine(ray_cluster, tmp_path):
    # each shard keeps only its nodes' slices of the recordings
    from test_aggbench import folder

    data = folder(tmp_path)
    profile = tmp_path / "short-shards.toml"
    profile.write_text(
        '[profile]\nname = "short"\nextends = "swarm-100"\n[swarm]\nshard_samples = 1024\n'
    )
    args = ["swarm", "simulate", "-p", str(profile), "--nodes", "12", "--rounds", "4"]
    args += ["--data", data]
    args += ["--attack", "sign-flip", "--byzantine", "0.25", "--no-baseline", "--force"]
    run_cli([*args, "--report", str(tmp_path / "local.json")])
    run_cli([*args, "--report", str(tmp_path / "ray.json"), "--engine", "ray", "--shards", "2"])
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "local.json").read_bytes()


def test_packet_recordings_on_two_shards_are_the_local_engine_bytes(ray_cluster, tmp_path):
    # the driver signs every packet from the bases the shards hold, in node order; audit
    # responses follow the same draws, so the stream is the local engine's byte for byte
    args = ["swarm", "simulate", "--nodes", "16", "--rounds", "4", "--attack", "sign-flip"]
    args += ["--byzantine", "0.25", "--no-baseline", "--force"]
    local, ray = tmp_path / "local.qrps", tmp_path / "ray.qrps"
    run_cli([*args, "--record", str(local), "--report", str(tmp_path / "l.json")])
    engine = ["--engine", "ray", "--shards", "2"]
    run_cli([*args, *engine, "--record", str(ray), "--report", str(tmp_path / "r.json")])
    assert ray.read_bytes() == local.read_bytes() and local.stat().st_size > 0
    assert (tmp_path / "r.json").read_bytes() == (tmp_path / "l.json").read_bytes()
    # and the recording passes qres audit
    run_cli(["audit", str(ray)])


def test_rows_cross_between_shards_and_actors_report_memory(ray_cluster):
    from qres.kernel import profiles
    from qres.swarm.engine import settings_from_profile
    from qres.swarm.ray_engine import EngineSettings, RaySimulation

    profile = profiles.load("swarm-100")
    settings = settings_from_profile(profile, nodes=24, rounds=3)
    sim = RaySimulation(profile, settings, EngineSettings("ray", None, 2))
    report = sim.run()
    assert sim.exchanged_rows > 0  # gossip rows went from one actor to the other
    assert len(sim.shard_peak_rss) == 2 and min(sim.shard_peak_rss) > 0
    assert not sim.shards  # the actors are gone after the run
    assert report["nodes"] == 24


def test_shard_bounds_cover_every_node_once():
    from qres.swarm.ray_engine import shard_bounds

    for n in (2, 3, 7, 100, 101):
        for k in range(1, min(n, 9) + 1):
            b = shard_bounds(n, k).tolist()
            assert b[0] == 0 and b[-1] == n and len(b) == k + 1
            assert all(hi > lo for lo, hi in zip(b, b[1:], strict=False))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["--shards", "2"], "--shards needs --engine ray", 2),
        (["--address", "127.0.0.1:6379"], "--address needs --engine ray", 2),
        (["--engine", "spark"], "--engine spark: unknown engine", 2),
        (["--engine", "ray", "--shards", "0"], "--shards: bad value 0", 2),
        (["--engine", "ray", "--address", "127.0.0.1:{port}"], "nothing answers there", 1),
    ],
)
def test_engine_options_are_checked(args, needle, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qres = Path(sys.executable).with_name("qres")
    base = [str(qres), "swarm", "simulate", "--nodes", "10", "--rounds", "1"]
    args = [a.replace("{port}", str(_closed_port())) for a in args]
    done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qres: error:") and needle in lines[0]
    assert not (tmp_path / "x.qrps").exists()


def test_the_documented_example_runs(tmp_path):
    """docs/swarm.md's example, run as written by the console script: it starts its own
    local Ray in a new process tree, whose workers import the installed qres."""
    block = re.search(r"## On Ray.*?```bash\n(.*?)```", DOC.read_text(), re.S).group(1)
    qres = str(Path(sys.executable).with_name("qres"))
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    ran = 0
    for command in filter(None, commands):
        argv = shlex.split(command)
        if argv[0] == "qres":
            argv[0] = qres
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        ran += 1
    assert ran >= 3
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["nodes"] == 40


HEAD = """
import os, sys, tempfile
os.chdir(tempfile.gettempdir())
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin; ray shuts down at exit
"""


def test_joins_a_running_ray_by_address(tmp_path):
    """A Ray started by another process (as `ray start --head` would) is joined with
    --address; the command leaves it running."""
    head = subprocess.Popen(
        [sys.executable, "-I", "-c", HEAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        address = head.stdout.readline().strip()
        assert re.fullmatch(r"[\w.\-]+:\d+", address), address
        qres = str(Path(sys.executable).with_name("qres"))
        name = "swarm-100.alie.json"
        args = [qres, "swarm", "simulate", *SWARMS[name], "--report", "out.json"]
        args += ["--engine", "ray", "--address", address, "--shards", "2"]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (tmp_path / "out.json").read_bytes() == (GOLDEN / name).read_bytes()
        assert head.poll() is None  # the cluster is still up
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
