"""The examples of docs/node.md are valid: the profile builds, the commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from qres.kernel import profiles

DOC = Path(__file__).parent.parent / "docs" / "node.md"


def test_documented_profile_validates(tmp_path):
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "field-7.toml"
    path.write_text(block)
    loaded = profiles.load(str(path))
    profiles.validate(loaded)
    assert loaded.data["node"]["sample_rate"] == 250.0
    assert loaded.build("node", "transport").name == "tcp"


def test_documented_commands_exist():
    from typer.testing import CliRunner

    from qres.cli import make_app

    app = make_app()
    commands = re.findall(r"^qres (node \w+)", DOC.read_text(), re.M)
    assert {"node run", "node status", "node export"} <= set(commands)
    for command in set(commands):
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, result.output
