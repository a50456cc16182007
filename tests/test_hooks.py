"""Every hook is documented and has a test (the datasette rule), and each hook works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from conftest import run_qres

from qres.cli import main
from qres.kernel import hookspecs, plugins
from qres.kernel.hookspecs import hookimpl

REPO = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def test_every_hook_is_documented():
    docs = (REPO / "docs" / "plugins.md").read_text() + (REPO / "README.md").read_text()
    missing = [hook for hook in HOOKS if not re.search(rf"`{hook}\(", docs)]
    assert not missing, f"hooks not documented in docs/plugins.md: {missing}"


def test_every_hook_has_a_test():
    source = Path(__file__).read_text()
    missing = [hook for hook in HOOKS if f"def test_hook_{hook}(" not in source]
    assert not missing


def test_every_kind_has_a_hook():
    assert sorted(plugins.KINDS.values()) == sorted(h for h in HOOKS if h != "register_commands")


def _check_kind_hook(register_plugin, kind, hook_name):
    # a working built-in class of the kind, renamed: registration checks the contract
    base = sorted(plugins.registry()[kind].items())[0][1].cls
    cls = type(f"Sample_{kind}", (base,), {"name": f"sample-{kind}"})

    class Sample:
        pass

    def impl(register):
        register(cls)

    setattr(Sample, hook_name, staticmethod(hookimpl(impl)))
    register_plugin(Sample(), f"sample-{kind}-plugin")
    assert plugins.get_plugin(kind, f"sample-{kind}") is cls
    info = plugins.registry()[kind][f"sample-{kind}"]
    assert (info.kind, info.source) == (kind, f"sample-{kind}-plugin")


def test_hook_register_predictors(register_plugin):
    _check_kind_hook(register_plugin, "predictor", "register_predictors")


def test_hook_register_coders(register_plugin):
    _check_kind_hook(register_plugin, "coder", "register_coders")


def test_hook_register_aggregators(register_plugin):
    _check_kind_hook(register_plugin, "aggregator", "register_aggregators")


def test_hook_register_attacks(register_plugin):
    _check_kind_hook(register_plugin, "attack", "register_attacks")


def test_hook_register_transports(register_plugin):
    _check_kind_hook(register_plugin, "transport", "register_transports")


def test_hook_register_hardware(register_plugin):
    _check_kind_hook(register_plugin, "hardware", "register_hardware")


def test_hook_register_llm_backends(register_plugin):
    _check_kind_hook(register_plugin, "llm_backend", "register_llm_backends")


def test_hook_register_lora_layers(register_plugin):
    _check_kind_hook(register_plugin, "lora_layer", "register_lora_layers")


def test_hook_register_validators(register_plugin):
    _check_kind_hook(register_plugin, "validator", "register_validators")


def test_hook_register_commands(register_plugin, capsys):
    class Greeter:
        @hookimpl
        def register_commands(self, app):
            @app.command()
            def greet(who: str = typer.Argument("swarm")):
                """Say hello."""
                print(f"hello, {who}")

    register_plugin(Greeter(), "greeter")
    with pytest.raises(SystemExit) as exit_info:
        main(["greet", "nodes"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == "hello, nodes\n"


def test_trace_env_prints_every_hook_call_on_stderr():
    traced = run_qres("plugins", "list", "--json", env={"QRES_TRACE_PLUGINS": "1"})
    assert traced.returncode == 0, traced.stderr
    lines = traced.stderr.decode().splitlines()
    assert lines and all(line.startswith("qres: trace: ") for line in lines)
    for hook in HOOKS:
        assert any(re.search(rf"\b{hook}\b.*\[hook\]$", line) for line in lines), hook
    assert json.loads(traced.stdout)  # stdout stays clean JSON
    quiet = run_qres("plugins", "list", "--json", env={"QRES_TRACE_PLUGINS": "0"})
    assert quiet.returncode == 0 and quiet.stderr == b"" and quiet.stdout == traced.stdout
