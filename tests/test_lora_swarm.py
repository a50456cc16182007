"""The LoRA swarm (``qres swarm simulate --profile swarm-lora``): shared layers through the
robust aggregation and the nodes' screen, local layers never sent; deterministic reports."""

from __future__ import annotations

import json

import attrs
import pytest
from conftest import run_qres

from qres.kernel import profiles
from qres.kernel.errors import QresError
from qres.lora import swarm as lora_swarm
from qres.swarm.engine import settings_from_profile
from qres.swarm.report import to_json


def _run(profile="swarm-lora", attack=None, **overrides):
    loaded = profiles.load(profile)
    settings = settings_from_profile(loaded, **{"nodes": 10, "rounds": 12, **overrides})
    return lora_swarm.simulate(loaded, settings, attack, None)


def test_same_seed_same_report_bytes():
    a, b = _run(seed=3), _run(seed=3)
    a.pop("cpu_seconds_per_round"), b.pop("cpu_seconds_per_round")
    assert to_json(a) == to_json(b)
    c = _run(seed=4)
    c.pop("cpu_seconds_per_round")
    assert to_json(c) != to_json(a)


def test_only_shared_layers_travel_one_per_round():
    report = _run()
    # 2 x 4 dense layers: B only, 8 parameters of 4 bytes, one shared layer per round
    assert report["bytes_per_node_round"] == [32] * 12
    assert report["parameters_per_node"] == 24
    # the domains are found from the data: exactly the four generated sources
    assert report["honest_nodes_per_domain"] == {
        "domain-0": 3,
        "domain-1": 2,
        "domain-2": 3,
        "domain-3": 2,
    }
    assert report["domains"] == {
        "mode": "discovered",
        "members": {f"domain-{k}": {f"source-{k}": n} for k, n in enumerate((3, 2, 3, 2))},
        "moves": 0,  # the sources do not change kind: nobody moves, nothing flaps
    }


def test_the_report_counts_the_bits_the_encoder_signals(tmp_path):
    report = _run()
    bits = report["honest_bits_per_sample"]
    assert len(bits) == 12 and all(0 < b < 16 for b in bits)
    assert report["final_honest_bits_per_sample"] == round(sum(bits[-3:]) / 3, 6)
    # every honest node's block of every round is counted once, by the candidate signalled
    assert sum(report["signalled"].values()) == 12 * 10
    scored_profile = tmp_path / "scored.toml"
    scored_profile.write_text(
        '[profile]\nname = "scored"\nextends = "swarm-lora"\n\n[lora]\nblock_choice = "scored"\n'
    )
    scored = _run(str(scored_profile))
    # the encoder's choice spends fewer bits than the scored depth, index bits included
    assert sum(bits) < sum(scored["honest_bits_per_sample"])


def test_declared_domains_are_the_sources(tmp_path):
    declared = tmp_path / "declared.toml"
    declared.write_text(
        '[profile]\nname = "declared"\nextends = "swarm-lora"\n\n[lora]\ndomains = "declared"\n'
    )
    report = _run(str(declared))
    assert report["honest_nodes_per_domain"] == {
        "source-0": 3,
        "source-1": 2,
        "source-2": 3,
        "source-3": 2,
    }
    assert report["domains"]["mode"] == "declared"


def _final(profile="swarm-lora", attack=None, attack_free=False):
    loaded = profiles.load(profile)
    settings = settings_from_profile(loaded, nodes=10, rounds=12, byzantine=0.3)
    sim = lora_swarm.LoraSwarm(loaded, settings, attack=attack, attack_free=attack_free)
    report = sim.run()
    assert report["byzantine_nodes"] == 3
    return report["final_honest_error"]


@pytest.fixture(scope="module")
def attack_free():
    return _final(attack_free=True)


@pytest.mark.parametrize("attack", ["sign-flip", "extreme", "gaussian", "alie"])
def test_thirty_percent_attackers_on_the_shared_layers_cost_under_ten_percent(attack, attack_free):
    assert _final(attack=attack) <= 1.10 * attack_free


def test_without_the_defence_the_same_attack_hurts(tmp_path, attack_free):
    # the control: a plain mean and no screen let the forged shared layers through
    weak = tmp_path / "weak.toml"
    weak.write_text(
        '[profile]\nname = "weak"\nextends = "swarm-lora"\n\n'
        '[swarm]\naccept_tolerance = 1000000.0\naggregator = { use = "mean" }\n'
    )
    assert _final(str(weak), attack="extreme") > 1.10 * _final(str(weak), attack_free=True)


def test_simulate_command_runs_the_lora_swarm(tmp_path):
    out = run_qres(
        "swarm",
        "simulate",
        "--profile",
        "swarm-lora",
        "--nodes",
        "8",
        "--rounds",
        "6",
        "--attack",
        "sign-flip",
        "--byzantine",
        "0.25",
        "--json",
        "--report",
        str(tmp_path / "r.json"),
        "--plot",
        str(tmp_path / "r.png"),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"] == "lora" and report["attack"] == "sign-flip"
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    refused = run_qres(
        "swarm", "simulate", "--profile", "swarm-lora", "--record", str(tmp_path / "p.qrps")
    )
    assert refused.returncode == 2 and b"--record" in refused.stderr


def test_the_profile_fits_an_esp32_with_its_adapters():
    from qres.kernel.budget import check

    report = check(profiles.load("swarm-lora"))
    lora = [item for item in report.items if item.path == "lora"]
    assert lora and 0 < lora[0].bytes < 16384 and report.fits


def test_recorded_domains_need_two_channels(tmp_path):
    loaded = profiles.load("swarm-lora")
    settings = attrs.evolve(settings_from_profile(loaded, nodes=4, rounds=2), data=str(tmp_path))
    (tmp_path / "MANIFEST.tsv").write_text(
        "name\tfile\tdtype\tbyteorder\tn_samples\tchannels\tlayout\n"
    )
    with pytest.raises(QresError, match="two channels"):
        lora_swarm.LoraSwarm(loaded, settings).run()


def test_a_node_whose_sensor_changes_kind_moves_domain(tmp_path):
    import numpy as np

    # three recordings of three pieces (one per node); the third's nodes read source 2 for
    # six rounds, then source 0: they should end in the first recording's domain
    rounds, window = 12, 256
    piece = rounds * window + 3
    src = [x for _, x in lora_swarm.generated_domains(0, 3 * piece)]
    half = 6 * window
    third = np.concatenate(
        [
            np.concatenate([src[2][:, k * piece : k * piece + half], src[0][:, half:piece]], 1)
            for k in range(3)
        ],
        axis=1,
    )
    lines = ["name\tfile\tdtype\tbyteorder\tchannels"]
    for name, x in (("a", src[0]), ("b", src[1]), ("c", third)):
        (tmp_path / f"{name}.bin").write_bytes(x.astype("<i2").tobytes())
        lines.append(f"{name}\t{name}.bin\tint16\tlittle\t2")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    loaded = profiles.load("swarm-lora")
    settings = attrs.evolve(
        settings_from_profile(loaded, nodes=9, rounds=rounds, window=window), data=str(tmp_path)
    )
    report = lora_swarm.LoraSwarm(loaded, settings).run()
    assert report["domains"]["moves"] == 3
    assert report["domains"]["members"] == {"domain-0": {"a": 3, "c": 3}, "domain-1": {"b": 3}}
