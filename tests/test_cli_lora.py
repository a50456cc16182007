"""``qres lora show``: a saved hierarchy state as a table, JSON and PNG; bad states refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_qres
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel.errors import QresError
from qres.kinds.lora import ROLES
from qres.lora import HierarchySettings
from qres.lora import state as saved
from qres.lora.personal import Personal, PersonalSettings


@pytest.fixture(scope="module")
def state():
    rng = np.random.default_rng(5)
    d = np.zeros((2, 24 * 64 + 3))
    for t in range(2, d.shape[1]):
        d[:, t] = 0.6 * d[:, t - 1] - 0.2 * d[:, t - 2] + rng.normal(0, 4, 2)
    x = np.clip(np.cumsum(d, axis=1) - np.cumsum(d, axis=1).mean(), -2047, 2047)
    node = Personal(HierarchySettings(), PersonalSettings())
    for r in range(24):
        node.learn(np.rint(x[:, r * 64 : r * 64 + 67]).astype(np.int64))
    return node.to_state()


def _write(tmp_path, value, name="node.json"):
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return path


def test_show_prints_every_layer_and_the_health(tmp_path, state):
    out = run_qres("lora", "show", str(_write(tmp_path, state)))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for role in ROLES:
        assert role in text
    assert "24 rounds" in text and "health: " in text and "migrations 0" in text


def test_show_json_has_the_report_keys(tmp_path, state):
    out = run_qres("lora", "show", str(_write(tmp_path, state)), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {
        "tick",
        "rounds",
        "depth",
        "scores",
        "layers",
        "migrations",
        "queues",
        "health",
    }
    assert report["rounds"] == 24 and report["tick"] == 24 and report["depth"] in ROLES
    layer = report["layers"]["agent"]
    assert layer["dense"] and layer["rank"] == 4 and layer["drift"] > 0
    assert report["health"]["status"] in ("HEALTHY", "DEGRADED")


def test_show_writes_the_png_and_refuses_to_overwrite(tmp_path, state):
    path, png = _write(tmp_path, state), tmp_path / "layers.png"
    out = run_qres("lora", "show", str(path), "--plot", str(png))
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_qres("lora", "show", str(path), "--plot", str(png))
    assert again.returncode == 1 and b"--force" in again.stderr
    assert run_qres("lora", "show", str(path), "--plot", str(png), "--force").returncode == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(format="other"),
        lambda s: s["summary"]["layers"].pop("agent"),
        lambda s: s["summary"]["layers"]["agent"].update(rank="4"),
        lambda s: s["summary"]["health"].update(status="FINE"),
        lambda s: s.update(depths=s["depths"][:-1]),
        lambda s: s["trace"][0].append(1),
        lambda s: s.update(scores=[1.0]),
    ],
)
def test_bad_states_get_one_line(tmp_path, state, mutate):
    bad = json.loads(json.dumps(state))
    mutate(bad)
    out = run_qres("lora", "show", str(_write(tmp_path, bad)))
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("qres: error:") and "not a lora state" in lines[0]
    )


def test_missing_and_non_json_files(tmp_path):
    assert run_qres("lora", "show", str(tmp_path / "none.json")).returncode == 1
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00{not json")
    out = run_qres("lora", "show", str(junk))
    assert out.returncode == 1 and b"not JSON" in out.stderr


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_states_parse_or_raise_the_projects_error(tmp_path_factory, state, data):
    text = json.dumps(state).encode()
    cut = data.draw(st.integers(0, len(text)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(text) - 1), st.integers(0, 255))))
    raw = bytearray(text[:cut] if data.draw(st.booleans()) else text)
    for at, value in flips:
        if at < len(raw):
            raw[at] = value
    path = tmp_path_factory.mktemp("fuzz") / "s.json"
    path.write_bytes(bytes(raw))
    try:
        loaded = saved.load(str(path))
    except QresError:
        return
    saved.report(loaded)
    saved.layer_rows(loaded)


def _recording(path, channels=2, n=6000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    rows = [np.sin(t / 30 - 0.5 * c) * 1000 + rng.normal(0, 20, n) for c in range(channels)]
    np.save(path, np.stack(rows, axis=1).astype(np.int16))
    return path


def test_train_writes_a_state_that_show_reads_and_is_deterministic(tmp_path):
    rec = _recording(tmp_path / "rec.npy")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    out = run_qres("lora", "train", str(rec), "--state", str(a), "--rounds", "12")
    assert out.returncode == 0, out.stderr
    assert b"12 windows of 256" in out.stdout
    assert run_qres("lora", "train", str(rec), "--state", str(b), "--rounds", "12").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    shown = run_qres("lora", "show", str(a), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["rounds"] == 12 and report["depth"] in ROLES
    # the scores are the profile's coder's bits per sample (16-bit samples, noise of ~20)
    assert 0 < min(s for s in report["scores"].values() if s is not None) < 9.0


def test_train_refuses_bad_input_with_one_line(tmp_path):
    one = _recording(tmp_path / "one.npy", channels=1)
    target = tmp_path / "s.json"
    out = run_qres("lora", "train", str(one), "--state", str(target))
    assert out.returncode == 1 and b"1 channel(s)" in out.stderr
    assert out.stderr.count(b"\n") == 1 and not target.exists()
    rec = _recording(tmp_path / "rec.npy")
    out = run_qres("lora", "train", str(rec), "--state", str(target), "--profile", "esp32")
    assert out.returncode == 3 and b"no [lora] table" in out.stderr and not target.exists()
    target.write_text("{}")
    out = run_qres("lora", "train", str(rec), "--state", str(target))
    assert out.returncode == 1 and b"--force" in out.stderr and target.read_text() == "{}"
