"""Inputs that used to end in a traceback or a noisy terminal: each is one short line now."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_qres


def _one_line(result, code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_thousand_deep_dotted_table_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("[" + ".".join(["a"] * 1000) + "]\nx = 1\n")
    err = _one_line(run_qres("profiles", "show", str(deep)), 3)
    assert "nest more than" in err and "deep.toml" in err


@pytest.mark.parametrize("bound", ["inf", "1e400", "1e300", "-inf", "nan"])
def test_huge_error_bounds_on_integers_are_usage_errors(tmp_path, bound):
    raw = tmp_path / "r.bin"
    raw.write_bytes(np.arange(1000, dtype=np.int16).tobytes())
    args = ("compress", str(raw), "--dtype", "int16", "-o", str(tmp_path / "o.qres"))
    err = _one_line(run_qres(*args, f"--max-error={bound}"), 2)
    assert "--max-error" in err and "header" not in err
    assert len(err) < 200  # a bound of 1e300 is not echoed as 300 digits
    assert not (tmp_path / "o.qres").exists()


@pytest.mark.parametrize("bound", ["1e300", "1e308", "0.001"])
def test_bounded_floats_print_no_numpy_warnings(tmp_path, bound):
    values = np.array([1.5, -1e308, 1e308, 3.0, np.inf, -np.inf, np.nan, 5e-324] * 300)
    raw = tmp_path / "f.bin"
    raw.write_bytes(values.tobytes())
    out = tmp_path / "f.qres"
    result = run_qres(
        "compress", str(raw), "--dtype", "float64", "--max-error", bound, "-o", str(out)
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    back = run_qres("decompress", str(out), "-o", str(tmp_path / "back.bin"))
    assert back.returncode == 0 and back.stderr == b"", back.stderr.decode()


def test_a_node_refuses_a_state_of_the_other_kind_of_model(tmp_path):
    from qres.node.state import State
    from qres.trust.identity import Identity, save_identity

    key = save_identity(Identity.generate(), tmp_path / "node.key")
    state = State(tmp_path / "n" / "state.sqlite")
    state.set_meta("model_kind", "shared")  # a node of the swarm's shared model kept it
    state.close()
    args = ("node", "run", "--profile", "node-lora", "--data-dir", str(tmp_path / "n"))
    err = _one_line(run_qres(*args, "--key", str(key), "--rounds", "1"), 1)
    assert "shared model" in err and "[lora]" in err and "state.sqlite" in err
