"""The exit codes of the README's table ("Errors and exit codes"), one case per row and per
way a user meets it: 0 ok, 1 bad input or failed operation, 2 command-line usage, 3 bad
profile or plugin setting, 4 plugin loading, 5 integrity. Every failing case prints one line.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import run_qres

from qres.codec import container


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A raw input, its container, a damaged copy and a container naming a missing plugin."""
    folder = tmp_path_factory.mktemp("codes")
    raw = folder / "r.bin"
    raw.write_bytes(np.arange(4000, dtype=np.int16).tobytes())
    packed = folder / "r.bin.qres"
    assert run_qres("compress", str(raw), "--dtype", "int16", "-o", str(packed)).returncode == 0
    damaged = folder / "damaged.qres"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    foreign = folder / "foreign.qres"
    header = container.Header(
        dtype="int16",
        channels=1,
        layout="interleaved",
        byte_order="little",
        block_frames=1024,
        frames=None,
        codec={"predictor": {"use": "no-such-predictor"}, "coder": {"use": "rice"}},
    )
    out = io.BytesIO()
    container.Writer(out, header).finish()
    foreign.write_bytes(out.getvalue())
    bad_profile = folder / "bad.toml"
    bad_profile.write_text('[profile]\nextends = "server"\n[codec]\nblock_samples = "big"\n')
    return {
        "raw": str(raw),
        "packed": str(packed),
        "damaged": str(damaged),
        "foreign": str(foreign),
        "profile": str(bad_profile),
        "out": str(folder / "out.qres"),
    }


SWARM = ("swarm", "simulate", "--profile", "swarm-100", "--nodes", "10")

#: (what, arguments with {placeholders} from the fixture, stdin file or None, exit code)
CASES = [
    ("ok", ("info", "{packed}"), None, 0),
    ("info of a pipe", ("info", "-"), "packed", 0),
    ("verify of a pipe", ("verify", "-"), "packed", 0),
    ("missing input", ("compress", "{raw}.nope", "--dtype", "int16"), None, 1),
    ("not a container", ("verify", "{raw}"), None, 5),
    ("unknown dtype", ("compress", "{raw}", "--dtype", "int12", "-o", "{out}"), None, 2),
    ("unknown layout", ("compress", "{raw}", "--layout", "diagonal", "-o", "{out}"), None, 2),
    ("unknown byte order", ("compress", "{raw}", "--byte-order", "middle", "-o", "{out}"), None, 2),
    ("channels out of range", ("compress", "{raw}", "--channels", "0", "-o", "{out}"), None, 2),
    ("infinite error bound", ("compress", "{raw}", "--max-error", "inf", "-o", "{out}"), None, 2),
    ("huge integer bound", ("compress", "{raw}", "--max-error", "1e400", "-o", "{out}"), None, 2),
    ("unknown command", ("frobnicate",), None, 2),
    ("Byzantine share", (*SWARM, "--byzantine", "0.6"), None, 2),
    ("zero rounds", (*SWARM, "--rounds", "0"), None, 2),
    ("bad profile setting", ("compress", "{raw}", "-p", "{profile}", "-o", "{out}"), None, 3),
    ("unknown profile", ("profiles", "show", "no-such-profile"), None, 3),
    ("plugin the file needs is missing", ("decompress", "{foreign}", "-o", "{out}"), None, 4),
    ("plugin missing, verify", ("verify", "{foreign}"), None, 4),
    ("damaged block", ("verify", "{damaged}"), None, 5),
    ("damaged, decompress", ("decompress", "{damaged}", "-o", "{out}"), None, 5),
]


@pytest.mark.parametrize(("what", "args", "stdin", "code"), CASES, ids=[c[0] for c in CASES])
def test_exit_code_table(files, what, args, stdin, code):
    argv = [a.format(**files) for a in args]
    data = open(files[stdin], "rb").read() if stdin else None  # noqa: SIM115
    result = run_qres(*argv, input=data)
    err = result.stderr.decode()
    assert result.returncode == code, (what, err)
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "Traceback" not in err
        if code != 2:
            assert lines[0].startswith("qres: error: ")
