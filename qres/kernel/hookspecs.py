"""Hook specifications: one ``register_<kind>(register)`` hook per plugin kind, plus commands.

A plugin implements a hook with ``@qres.hookimpl`` and calls ``register(SomeClass)`` once per
class it provides. The class needs a ``name`` (the value of ``use = "..."`` in a profile) and may
define an attrs ``Config`` class for its settings; see :class:`qres.kernel.plugins.Plugin`.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("qres")
hookimpl = pluggy.HookimplMarker("qres")


@hookspec
def register_predictors(register):
    """Register predictor classes: integer predictors that turn samples into residuals and back."""


@hookspec
def register_coders(register):
    """Register coder classes: residual entropy coders that turn residuals into bytes and back."""


@hookspec
def register_aggregators(register):
    """Register aggregator classes: robust rules that combine n Q16.16 model updates into one."""


@hookspec
def register_attacks(register):
    """Register attack classes: forgers of Byzantine model updates from the honest ones."""


@hookspec
def register_transports(register):
    """Register transport classes: carriers of messages between nodes."""


@hookspec
def register_hardware(register):
    """Register hardware classes: a device's memory, word size, clock and power budgets."""


@hookspec
def register_llm_backends(register):
    """Register LLM backend classes: turn a prompt into a completion."""


@hookspec
def register_lora_layers(register):
    """Register LoRA layer classes: low-rank adapters with a rank and an inertia."""


@hookspec
def register_validators(register):
    """Register validator classes: checks of an answer that make the router escalate."""


@hookspec
def register_commands(app):
    """Add commands or command groups to the ``qres`` typer app."""
