"""The examples of docs/mesh.md are valid: the profile builds, the commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from qres.kernel import profiles

DOC = Path(__file__).parent.parent / "docs" / "mesh.md"


def test_documented_profile_validates(tmp_path):
    from qres.kernel.config import build_config
    from qres.mesh.settings import MeshSettings

    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "client.toml"
    path.write_text(block)
    loaded = profiles.load(str(path))
    settings = build_config(MeshSettings, loaded.data["mesh"], loaded.where("mesh"))
    assert len(settings.workers) == 2 and settings.spot_check_rate == 0.1


def test_documented_commands_exist():
    from typer.testing import CliRunner

    from qres.cli import make_app

    commands = set(re.findall(r"^qres (mesh \w+)", DOC.read_text(), re.M))
    assert commands == {"mesh worker", "mesh ask", "mesh gateway"}
    for command in commands:
        result = CliRunner().invoke(make_app(), [*command.split(), "--help"])
        assert result.exit_code == 0, result.output


def test_every_documented_mesh_table_validates():
    import tomllib

    from qres.kernel.config import Location, build_config
    from qres.mesh.settings import MeshSettings

    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        table = tomllib.loads(block)["mesh"]
        build_config(MeshSettings, table, Location("docs/mesh.md", "mesh"))
    assert "mqtt" in tomllib.loads(blocks[1])["mesh"]["announce_via"]
