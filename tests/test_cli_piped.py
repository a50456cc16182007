"""Piped output is never wrapped or cut, and ``profiles show --toml`` round-trips every bundled
profile through a file."""

from __future__ import annotations

import json

import pytest
from conftest import run_qres, run_qres_process

from qres.kernel import profiles

LONG = "a description far longer than any terminal, " * 8 + "END-OF-DESCRIPTION"


@pytest.fixture
def long_profile(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "wide-one.toml").write_text(f'[profile]\nextends = "esp32"\ndescription = "{LONG}"\n')
    return folder


def test_piped_tables_and_profiles_are_not_wrapped(long_profile):
    env = {"QRES_PROFILE_PATH": str(long_profile), "COLUMNS": "40"}
    listed = run_qres("profiles", "list", env=env)
    assert listed.returncode == 0
    line = next(x for x in listed.stdout.decode().splitlines() if "wide-one" in x)
    assert LONG in line  # one row, the whole description
    shown = run_qres("profiles", "show", "wide-one", env=env)
    text = shown.stdout.decode()
    assert f'description = "{LONG}"' in text and "\x1b[" not in text
    plugins = run_qres("plugins", "list", env=env).stdout.decode()
    assert "qres.builtin_plugins.predictors.interp " in plugins


def test_piped_show_is_loadable_toml(tmp_path):
    shown = run_qres("profiles", "show", "swarm-100")
    path = tmp_path / "p.toml"
    path.write_bytes(shown.stdout)
    assert profiles.load(str(path)).data["swarm"] == profiles.load("swarm-100").data["swarm"]


@pytest.mark.parametrize("name", sorted(profiles.available()))
def test_show_toml_round_trips_every_bundled_profile(tmp_path, name):
    assert profiles.available()[name].parent == profiles.bundled_dir()
    shown = run_qres("profiles", "show", name, "--toml")
    assert shown.returncode == 0, shown.stderr.decode()
    path = tmp_path / "elsewhere" / f"{name}-copy.toml"
    path.parent.mkdir()
    path.write_bytes(shown.stdout)
    original = profiles.load(name).data
    again = profiles.load(str(path)).data
    # The copy stands alone: the same tables, without the extends it no longer needs.
    assert again["profile"].pop("extends") == ""
    original["profile"].pop("extends")
    assert json.dumps(again, sort_keys=True) == json.dumps(original, sort_keys=True)
    # And printing the copy gives the same bytes.
    assert run_qres("profiles", "show", str(path), "--toml").stdout == shown.stdout


def test_shadowed_bundled_profiles_are_marked_and_warned_once(tmp_path):
    # Separate processes: the warning is given once per process.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "server.toml").write_text('[profile]\nextends = "fast"\n')
    (folder / "extra.toml").write_text('[profile]\nextends = "fast"\n')
    env = {"QRES_PROFILE_PATH": str(folder)}
    listed = run_qres_process("profiles", "list", "--json", env=env)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["server"]["source"] == "QRES_PROFILE_PATH"
    assert rows["server"]["shadows"] == [str(profiles.bundled_dir() / "server.toml")]
    assert rows["extra"]["shadows"] == [] and rows["fast"]["source"] == "bundled"
    assert listed.stderr.decode().count("shadows the bundled one") == 1
    table = run_qres_process("profiles", "list", env=env).stdout.decode()
    assert "(shadows bundled)" in next(x for x in table.splitlines() if "server" in x)
    raw = tmp_path / "r.bin"
    raw.write_bytes(bytes(2000))
    out = run_qres_process("compress", str(raw), "-o", str(tmp_path / "r.qres"), env=env)
    assert out.returncode == 0
    warned = [x for x in out.stderr.decode().splitlines() if x.startswith("qres: warning")]
    assert len(warned) == 1 and "'server'" in warned[0] and str(folder) in warned[0]
    fast = ("compress", str(raw), "-p", "fast", "-o", str(tmp_path / "f.qres"))
    quiet = run_qres_process(*fast, env=env)
    assert quiet.returncode == 0 and b"warning" not in quiet.stderr
