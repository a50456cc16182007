"""The plugin manager: built-ins, entry points, QRES_PLUGINS, clashes and failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import attrs
import pytest
from conftest import run_qres
from qres.builtin_plugins.coders.rice import RiceCoder
from qres.builtin_plugins.transports.inproc import InProcessConfig, InProcessTransport

from qres.kernel import plugins
from qres.kernel.config import Location, integer
from qres.kernel.errors import PluginError, ProfileError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.coder import Coder


class _Widget(InProcessTransport):
    """A transport used only by these tests: the in-process one with one more setting."""

    name = "test-widget"

    @attrs.frozen
    class Config(InProcessConfig):
        size: int = attrs.field(default=4, validator=integer(1, 64))

    @classmethod
    def memory_bytes(cls, config):
        return config.size * 100


class _WidgetPlugin:
    @hookimpl
    def register_transports(self, register):
        register(_Widget)


def test_registered_object_is_found_and_removed(register_plugin):
    register_plugin(_WidgetPlugin(), "widget-plugin")
    assert plugins.get_plugin("transport", "test-widget") is _Widget
    info = plugins.registry()["transport"]["test-widget"]
    assert info.source == "widget-plugin"
    plugins.pm.unregister(name="widget-plugin")
    with pytest.raises(PluginError, match="unknown transport 'test-widget'"):
        plugins.get_plugin("transport", "test-widget")
    plugins.pm.register(_WidgetPlugin(), name="widget-plugin")  # the fixture unregisters it


def test_duplicate_names_in_one_kind_name_both_plugins(register_plugin):
    register_plugin(_WidgetPlugin(), "first-widgets")
    register_plugin(_WidgetPlugin(), "second-widgets")
    with pytest.raises(PluginError) as info:
        plugins.registry()
    message = str(info.value)
    assert "first-widgets" in message and "second-widgets" in message
    assert "'test-widget'" in message


def test_same_name_in_different_kinds_is_fine(register_plugin):
    class Other:
        @hookimpl
        def register_coders(self, register):
            register(type("WidgetCoder", (RiceCoder,), {"name": "test-widget"}))

    register_plugin(_WidgetPlugin(), "widgets")
    register_plugin(Other(), "widget-coders")
    assert plugins.get_plugin("coder", "test-widget").__name__ == "WidgetCoder"
    assert plugins.get_plugin("transport", "test-widget") is _Widget


def test_nameless_class_is_rejected(register_plugin):
    class Bad:
        @hookimpl
        def register_coders(self, register):
            register(type("Nameless", (Coder,), {}))

    register_plugin(Bad(), "nameless")
    with pytest.raises(PluginError, match="without a name"):
        plugins.registry()


def test_create_validates_settings(register_plugin):
    register_plugin(_WidgetPlugin(), "widgets")
    where = Location("p.toml", "swarm.transport")
    widget = plugins.create("transport", {"use": "test-widget", "size": 9}, where)
    assert widget.config.size == 9
    assert widget.get_config()["use"] == "test-widget"
    assert widget.get_config()["size"] == 9
    again = plugins.create("transport", widget.get_config(), where)
    assert again.config == widget.config
    with pytest.raises(ProfileError, match=r"p.toml: swarm.transport.size: bad value 99"):
        plugins.create("transport", {"use": "test-widget", "size": 99}, where)
    with pytest.raises(ProfileError, match=r"swarm.transport.colour: unknown setting"):
        plugins.create("transport", {"use": "test-widget", "colour": 1}, where)
    with pytest.raises(ProfileError, match=r"swarm.transport.use: unknown transport 'nope'"):
        plugins.create("transport", {"use": "nope"}, where)
    with pytest.raises(ProfileError, match=r"bad value True"):
        plugins.create("transport", {"use": "test-widget", "size": True}, where)


def test_unknown_kind():
    with pytest.raises(PluginError, match="unknown plugin kind"):
        plugins.get_plugin("teleporter", "x")


def test_loading_plugins_does_not_import_numpy(tmp_path):
    code = (
        "import sys; from qres.kernel import plugins; plugins.registry(); "
        "import qres.cli; qres.cli.make_app(); "
        "print('numpy' in sys.modules)"
    )
    # Run outside the source tree so the installed package is the one imported.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "False", out.stderr


def _write_dist(root, *, broken: bool = False, body: str | None = None):
    """Lay out an installed third-party distribution (as pip would) with a ``qres`` entry point."""
    pkg = root / "qres_example_plugin"
    pkg.mkdir()
    custom = body is not None
    body = body or textwrap.dedent(
        '''
        import attrs
        from qres.builtin_plugins.transports.inproc import InProcessConfig, InProcessTransport
        from qres.kernel.config import integer
        from qres.kernel.hookspecs import hookimpl

        class Pigeon(InProcessTransport):
            """A carrier-pigeon transport (for the entry-point test)."""
            name = "pigeon"

            @attrs.frozen
            class Config(InProcessConfig):
                birds: int = attrs.field(default=2, validator=integer(1, 10))

        @hookimpl
        def register_transports(register):
            register(Pigeon)
        '''
    )
    if broken:
        body = "raise ImportError('the example plugin is broken on purpose')\n"
    (pkg / "__init__.py").write_text(textwrap.dedent(body) if custom else body)
    dist = root / "qres_example_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qres-example-plugin\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text("[qres]\nexample = qres_example_plugin\n")
    (dist / "RECORD").write_text("")
    return root


@pytest.fixture
def third_party(tmp_path):
    return _write_dist(tmp_path)


def test_entry_point_plugin_is_listed_and_usable(third_party, tmp_path):
    env = {"PYTHONPATH": str(third_party)}
    out = run_qres("plugins", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    pigeon = [p for p in listed if p["name"] == "pigeon"]
    assert pigeon == [
        {
            "name": "pigeon",
            "kind": "transport",
            "package": "qres-example-plugin",
            "version": "1.2.3",
            "source": "example",
        }
    ]
    assert all({"name", "kind", "package", "version"} <= set(p) for p in listed)
    profile = tmp_path / "birds.toml"
    profile.write_text(
        '[profile]\nname = "birds"\n[swarm]\ntransport = { use = "pigeon", birds = 3 }\n'
    )
    shown = run_qres("profiles", "show", str(profile), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["swarm"]["transport"] == {"use": "pigeon", "birds": 3}


def test_qres_plugins_env_limits_external_plugins(third_party, tmp_path):
    profile = tmp_path / "birds.toml"
    profile.write_text('[swarm]\ntransport = { use = "pigeon" }\n')
    for allow, expected in (
        ("", False),
        ("something-else", False),
        ("example", True),
        ("qres-example-plugin", True),
    ):
        env = {"PYTHONPATH": str(third_party), "QRES_PLUGINS": allow}
        out = run_qres("plugins", "list", "--json", env=env)
        names = {p["name"] for p in json.loads(out.stdout)}
        assert ("pigeon" in names) is expected, allow
    env = {"PYTHONPATH": str(third_party), "QRES_PLUGINS": ""}
    shown = run_qres("profiles", "show", str(profile), env=env)
    assert shown.returncode == 3
    assert b"unknown transport 'pigeon'" in shown.stderr
    assert b"Traceback" not in shown.stderr


def test_broken_plugin_is_reported_and_others_work(tmp_path):
    root = _write_dist(tmp_path, broken=True)
    out = run_qres("plugins", "list", "--json", env={"PYTHONPATH": str(root)})
    assert out.returncode == 0
    assert b"plugin 'example' failed to load" in out.stderr
    assert b"broken on purpose" in out.stderr
    assert isinstance(json.loads(out.stdout), list)


def test_class_of_the_wrong_base_is_refused_when_used(register_plugin):
    class Loose(plugins.Plugin):  # a transport that derives from no transport base
        name = "loose"

    class Registers:
        @hookimpl
        def register_transports(self, register):
            register(Loose)

    register_plugin(Registers(), "loose-plugin")
    assert "loose" not in plugins.registry()["transport"]
    assert any("loose" in reason for _, reason in plugins.problems())
    with pytest.raises(PluginError, match=r"not a subclass of qres.kinds.transport.Transport"):
        plugins.get_plugin("transport", "loose")
    with pytest.raises(PluginError, match=r"swarm.transport.use: plugin 'loose-plugin'"):
        plugins.create("transport", {"use": "loose"}, Location("p.toml", "swarm.transport"))
    assert plugins.get_plugin("transport", "inproc")  # the others keep working


def test_class_missing_a_method_is_refused(register_plugin):
    from qres.kinds.predictor import Predictor

    class Half(Predictor):
        name = "half"  # no _run: the codec would crash with AttributeError mid-file

    class Registers:
        @hookimpl
        def register_predictors(self, register):
            register(Half)

    register_plugin(Registers(), "half-plugin")
    with pytest.raises(PluginError, match=r"does not implement _run"):
        plugins.get_plugin("predictor", "half")


_HALF_PREDICTOR = """
    from qres.kernel.hookspecs import hookimpl
    from qres.kinds.predictor import Predictor

    class Half(Predictor):
        name = "half"

    @hookimpl
    def register_predictors(register):
        register(Half)
"""


def test_cli_reports_a_broken_plugin_class_in_one_line_exit_4(tmp_path):
    (tmp_path / "dist").mkdir()
    root = _write_dist(tmp_path / "dist", body=_HALF_PREDICTOR)
    profile = tmp_path / "half.toml"
    profile.write_text('[codec]\npredictor = { use = "half" }\ncoder = { use = "rice" }\n')
    data = tmp_path / "x.bin"
    data.write_bytes(bytes(range(256)) * 8)
    env = {"PYTHONPATH": str(root)}
    commands = (("profiles", "check", str(profile)), ("compress", str(data), "-p", str(profile)))
    for args in commands:
        out = run_qres(*args, env=env, cwd=tmp_path)
        assert out.returncode == 4, (args, out.stderr)
        lines = out.stderr.decode().strip().splitlines()
        assert lines[-1].startswith("qres: error: ") and "does not implement _run" in lines[-1]
        assert b"Traceback" not in out.stderr
    assert not (tmp_path / "x.bin.qres").exists()
    listed = run_qres("plugins", "list", "--json", env=env)
    assert listed.returncode == 0
    assert b"does not implement _run" in listed.stderr


def test_misspelled_hook_is_reported(tmp_path):
    body = """
        from qres.builtin_plugins.transports.inproc import InProcessTransport
        from qres.kernel.hookspecs import hookimpl

        class Pigeon(InProcessTransport):
            name = "pigeon"

        @hookimpl
        def register_transport(register):  # the hook is register_transports
            register(Pigeon)
    """
    root = _write_dist(tmp_path, body=body)
    out = run_qres("plugins", "list", "--json", env={"PYTHONPATH": str(root)})
    assert out.returncode == 0
    assert b"unknown hook register_transport" in out.stderr
    assert b"register_transports" in out.stderr
