"""The swarm simulator's engine: determinism, defence, joining nodes, accounting."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from qres.kernel import profiles
from qres.kernel.errors import ProfileError
from qres.swarm.engine import Simulation, settings_from_profile
from qres.swarm.report import to_json


def small(tmp_path, text: str = "", **overrides):
    path = tmp_path / "small.toml"
    path.write_text('[profile]\nextends = "swarm-100"\n[swarm]\nnodes = 40\nrounds = 14\n' + text)
    prof = profiles.load(str(path))
    return prof, settings_from_profile(prof, **overrides)


def test_same_seed_same_report_bytes(tmp_path):
    prof, s = small(tmp_path, byzantine=0.25)
    one = to_json(Simulation(prof, s, attack="alie").run())
    two = to_json(Simulation(prof, s, attack="alie").run())
    assert one == two
    other = to_json(Simulation(prof, attrs.evolve(s, seed=1), attack="alie").run())
    assert other != one


def test_report_has_the_documented_keys(tmp_path):
    prof, s = small(tmp_path)
    report = Simulation(prof, s).run()
    for key in (
        "honest_error",
        "final_honest_error",
        "banned_honest",
        "banned_byzantine",
        "bytes_sent",
        "regime_rounds",
        "sleep_fraction",
    ):
        assert key in report
    assert len(report["honest_error"]) == s.rounds
    assert report["bytes_sent"] == sum(report["bytes_by_kind"].values())
    assert report["bytes_sent"] == report["transport"]["sent_bytes"]
    # learning works: the error falls, and the learned models help the nodes' coder
    assert report["honest_error"][-1] < 0.6 * report["honest_error"][0]
    codec = report["codec"]
    assert codec["coder"] == "rice"
    # every honest node coded every round it was awake; the trained models save the most
    assert 0 < codec["nodes"] <= s.nodes - report["byzantine_nodes"]
    assert codec["bits_per_sample_learned"] < codec["bits_per_sample_no_predictor"]
    assert codec["bits_per_sample_last_round"] < codec["bits_per_sample_no_predictor"] - 1
    assert codec["coded_bytes"] * 8 / codec["samples"] == pytest.approx(
        codec["bits_per_sample_learned"]
    )
    traffic = report["traffic_per_node_per_day"]
    assert traffic["compressed_data_bytes"] < traffic["raw_data_bytes"]


def test_iid_partition_runs_and_differs(tmp_path):
    prof, s = small(tmp_path)
    iid = Simulation(prof, attrs.evolve(s, partition="iid")).run()
    non = Simulation(prof, s).run()
    assert iid["partition"] == "iid" and iid["honest_error"] != non["honest_error"]


def test_attackers_banned_and_honest_spared(tmp_path):
    prof, s = small(tmp_path, byzantine=0.3)
    report = Simulation(prof, s, attack="sign-flip").run()
    assert report["banned_byzantine"] == report["byzantine_nodes"] == 12
    assert report["banned_honest"] == 0
    assert report["audits"]["failed_honest"] == 0
    assert report["byzantine_isolated_round"] is not None


def test_attack_does_not_wreck_learning(tmp_path):
    prof, s = small(tmp_path, byzantine=0.3)
    attacked = Simulation(prof, s, attack="extreme").run()
    free = Simulation(prof, s, attack_free=True).run()
    assert attacked["final_honest_error"] < 1.10 * free["final_honest_error"]


def test_joining_nodes_start_from_the_consensus(tmp_path):
    prof, s = small(tmp_path, "join_fraction = 0.25\njoin_round = 8\n")
    sim = Simulation(prof, s)
    report = sim.run()
    assert report["joined_mid_run"] == 10
    assert report["active_per_round"][7] == 30
    assert report["active_per_round"][8] == 40
    # a newcomer with the consensus model is as good as the others at once
    assert report["honest_error"][8] < 1.2 * report["honest_error"][7]


def test_cartel_of_drifters_isolated(tmp_path):
    prof, s = small(tmp_path, nodes=60, rounds=20, byzantine=0.1)
    report = Simulation(prof, s, attack="drift").run()
    assert report["banned_byzantine"] == 6
    assert report["banned_honest"] == 0


def test_bad_swarm_setting_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[swarm]\nfanout = 0\n")
    with pytest.raises(ProfileError, match=r"bad.toml: swarm.fanout: bad value 0"):
        profiles.load(str(path))
    path.write_text("[swarm]\nfrob = 1\n")
    with pytest.raises(ProfileError, match=r"swarm.frob: unknown key; allowed keys: aggregator"):
        profiles.load(str(path))


def test_manifest_data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(3)
    t = np.arange(20000)
    sig = (800 * np.sin(2 * np.pi * t / 50) + rng.normal(0, 20, t.size)).astype("<i2")
    sig.tofile(folder / "tone.bin")
    (folder / "MANIFEST.tsv").write_text(
        "name\tfile\tdtype\tbyteorder\tchannels\ntone\ttone.bin\tint16\tlittle\t1\n"
    )
    prof, s = small(tmp_path, data=str(folder), shard_samples=2048)
    report = Simulation(prof, s).run()
    assert report["data"] == str(folder)
    assert report["honest_error"][-1] < report["honest_error"][0]
