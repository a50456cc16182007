"""The codec's command line as scripts use it: outputs, refusals, pipes, JSON, exit codes, and
damaged files that must fail cleanly without leaving partial output."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from conftest import run_qres
from corpus import DATA, needs_corpus

from qres.codec.demo import make_sample


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "readings.bin"
    path.write_bytes(make_sample(frames=30_000))
    return path


def compress(path, *extra):
    return run_qres("compress", str(path), "--dtype", "int16", "--channels", "4", *extra)


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_compress_writes_file_qres_and_decompress_restores(sample, tmp_path):
    original = sample.read_bytes()
    out = compress(sample, "--profile", "esp32")
    assert out.returncode == 0, out.stderr
    packed = tmp_path / "readings.bin.qres"
    assert packed.is_file()
    assert b"ratio" in out.stdout
    sample.unlink()
    back = run_qres("decompress", str(packed))
    assert back.returncode == 0, back.stderr
    assert sample.read_bytes() == original


def test_refuses_to_overwrite_without_force(sample, tmp_path):
    assert compress(sample).returncode == 0
    again = compress(sample)
    assert again.returncode == 1
    assert b"already exists; pass --force" in again.stderr
    assert compress(sample, "--force").returncode == 0
    back = run_qres("decompress", str(tmp_path / "readings.bin.qres"))
    assert back.returncode == 1 and b"already exists" in back.stderr


def test_json_has_the_promised_keys(sample):
    out = compress(sample, "--json", "-o", str(sample) + ".x.qres")
    record = json.loads(out.stdout)
    assert {"input_bytes", "output_bytes", "ratio", "seconds"} <= set(record)
    assert record["input_bytes"] == sample.stat().st_size
    assert record["ratio"] == pytest.approx(record["input_bytes"] / record["output_bytes"])
    back = run_qres("decompress", str(sample) + ".x.qres", "-o", str(sample) + ".y", "--json")
    assert {"input_bytes", "output_bytes", "ratio", "seconds"} <= set(json.loads(back.stdout))


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_pipes_stdin_to_stdout(sample):
    raw = sample.read_bytes()
    packed = run_qres("compress", "-", "--dtype", "int16", "--channels", "4", input=raw)
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout[:4] == b"\x89QRS"
    back = run_qres("decompress", "-", input=packed.stdout)
    assert back.returncode == 0 and back.stdout == raw


def test_npy_files_describe_themselves(tmp_path):
    arr = np.asfortranarray(np.arange(3000, dtype=">i4").reshape(1000, 3) % 97)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    original = path.read_bytes()
    assert run_qres("compress", str(path)).returncode == 0
    path.unlink()
    assert run_qres("decompress", str(tmp_path / "a.npy.qres")).returncode == 0
    assert path.read_bytes() == original
    bad = run_qres("compress", str(path), "--dtype", "int16", "-o", str(tmp_path / "z.qres"))
    assert bad.returncode == 1 and b"describe their own type" in bad.stderr


def test_threads_give_identical_files(sample, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(make_sample(frames=120_000))
    outs = []
    for threads in ("1", "2"):
        target = tmp_path / f"t{threads}.qres"
        r = run_qres(
            "compress",
            str(big),
            "--dtype",
            "int16",
            "--channels",
            "4",
            "--threads",
            threads,
            "-o",
            str(target),
            "--profile",
            "esp32",
        )
        assert r.returncode == 0, r.stderr
        outs.append(target.read_bytes())
    assert outs[0] == outs[1]


def test_info_and_verify(sample, tmp_path):
    compress(sample)
    packed = tmp_path / "readings.bin.qres"
    info = run_qres("info", str(packed), "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["header"]["channels"] == 4 and summary["frames"] == 30_000
    assert summary["blocks"]
    # lossless blocks name the header's predictor (the server profile's nlms)
    assert {b["predictor"] for b in summary["blocks"]} == {"nlms"}
    assert all(isinstance(b["polynomial_channels"], bool) for b in summary["blocks"])
    ok = run_qres("verify", str(packed))
    assert ok.returncode == 0 and b"OK" in ok.stdout
    before = set(tmp_path.iterdir())
    run_qres("verify", str(packed), "--json")
    assert set(tmp_path.iterdir()) == before  # verify writes nothing


def test_info_names_each_bounded_blocks_predictor(tmp_path):
    smooth = tmp_path / "slow.bin"
    t = np.arange(40_000)
    (np.sin(t / 700.0) * 20_000).astype("<i2").tofile(smooth)
    out = run_qres(
        "compress", str(smooth), "--dtype", "int16", "--max-error", "64", "--profile", "esp32"
    )
    assert out.returncode == 0, out.stderr
    info = run_qres("info", str(tmp_path / "slow.bin.qres"), "--json")
    blocks = json.loads(info.stdout)["blocks"]
    allowed = {"nlms", "interp linear", "interp cubic", "interp per level"}
    assert blocks and {b["predictor"] for b in blocks} <= allowed
    # at a coarse bound on a slow sine, interpolation wins blocks
    assert any(b["predictor"].startswith("interp") for b in blocks)
    text = run_qres("info", str(tmp_path / "slow.bin.qres"))
    assert b"predictor" in text.stdout


def _damaged(tmp_path, sample, mutate):
    compress(sample, "--profile", "esp32")
    packed = tmp_path / "readings.bin.qres"
    data = bytearray(packed.read_bytes())
    mutate(data)
    packed.write_bytes(bytes(data))
    sample.unlink()
    return packed


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_corrupted_block_is_named_and_no_output_is_left(sample, tmp_path):
    def flip(data):
        data[len(data) // 2] ^= 0x40

    packed = _damaged(tmp_path, sample, flip)
    for command in (["decompress", str(packed)], ["verify", str(packed)]):
        out = run_qres(*command)
        assert out.returncode == 5, out.stderr
        line = out.stderr.decode().strip()
        assert "\n" not in line and line.startswith("qres: error: block ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readings.bin.qres"]


def test_truncated_and_foreign_files(sample, tmp_path):
    packed = _damaged(tmp_path, sample, lambda data: data.__delitem__(slice(len(data) - 100, None)))
    out = run_qres("decompress", str(packed))
    assert out.returncode == 5 and b"truncated" in out.stderr
    assert not sample.exists()
    foreign = tmp_path / "notes.txt.qres"
    foreign.write_text("hello, this is not a qres file")
    out = run_qres("decompress", str(foreign))
    assert out.returncode == 5 and b"not a .qres file" in out.stderr
    assert not (tmp_path / "notes.txt").exists()


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_bad_options_are_one_line_errors(sample, tmp_path):
    cases = [
        (["compress", str(sample), "--dtype", "int12"], 2, b"not a sample type"),
        (["compress", str(tmp_path / "missing.bin")], 1, b"no such file"),
        (["compress", str(sample), "--profile", "nope"], 3, b"unknown profile 'nope'"),
        (["compress", str(sample), "--layout", "diagonal"], 2, b"use interleaved or planar"),
        (["decompress", str(sample)], 1, b"does not end in .qres"),
    ]
    for args, code, message in cases:
        out = run_qres(*args)
        assert out.returncode == code, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert b"Traceback" not in out.stderr


@needs_corpus
def test_max_error_on_a_corpus_file(tmp_path):
    src = DATA / "ecg_mitdb208_360hz_int16.bin"
    out = run_qres(
        "compress",
        str(src),
        "--dtype",
        "int16",
        "--max-error",
        "3",
        "-o",
        str(tmp_path / "e.qres"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    lossy = json.loads(out.stdout)["ratio"]
    back = run_qres("decompress", str(tmp_path / "e.qres"), "-o", str(tmp_path / "e.bin"))
    assert back.returncode == 0
    x = np.fromfile(src, "<i2").astype(int)
    y = np.fromfile(tmp_path / "e.bin", "<i2").astype(int)
    assert np.abs(x - y).max() <= 3
    assert lossy > 4.0


def test_demo_runs_and_restores(tmp_path):
    out = run_qres("demo", "--json", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and all(r["identical"] for r in result["results"])
    assert all(r["ratio"] > 2 for r in result["results"])


def test_outputs_get_the_usual_mode_not_a_private_one(sample, tmp_path):
    # the temporary file behind an atomic output is private; the result must not stay so
    mask = os.umask(0o022)
    try:
        assert compress(sample).returncode == 0
        packed = tmp_path / "readings.bin.qres"
        assert stat.S_IMODE(packed.stat().st_mode) == 0o644
        # replacing a file keeps that file's mode
        packed.chmod(0o640)
        assert compress(sample, "--force").returncode == 0
        assert stat.S_IMODE(packed.stat().st_mode) == 0o640
        restored = tmp_path / "restored.bin"
        assert run_qres("decompress", str(packed), "-o", str(restored)).returncode == 0
        assert stat.S_IMODE(restored.stat().st_mode) == 0o644
    finally:
        os.umask(mask)
