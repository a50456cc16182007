"""docs/router.md runs: every console example gives the documented output, the profile
validates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import run_qres

from qres.kernel import profiles

DOC = Path(__file__).parent.parent / "docs" / "router.md"


def _console_examples() -> list[tuple[list[str], str]]:
    out = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            out.append((shlex.split(command), expected))
    return out


def test_documented_commands_print_the_documented_output():
    examples = _console_examples()
    assert len(examples) >= 4
    for args, expected in examples:
        assert args[0] == "qres"
        result = run_qres(*args[1:])
        assert result.returncode == 0, (args, result.stderr.decode())
        assert result.stdout.decode() == expected, args


def test_documented_profile_validates(tmp_path):
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "my-router.toml"
    path.write_text(block)
    loaded = profiles.load(str(path))
    assert loaded.data["router"]["budget_per_day"] == 2.5
    assert loaded.build("router", "validators", 0).name == "json-schema"
