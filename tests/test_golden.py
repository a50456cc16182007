"""Golden files pin the format: compressing the same input again gives the same bytes, and the
stored containers decode to the stored inputs."""

from __future__ import annotations

import pytest
from make_golden import GOLDEN, INPUTS, PROFILES

from qres import api

CASES = [(name, profile) for name in INPUTS for profile in PROFILES]


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_golden_bytes_are_reproduced(name, profile):
    raw = (GOLDEN / f"{name}.bin").read_bytes()
    golden = (GOLDEN / f"{name}.{profile}.qres").read_bytes()
    assert api.decompress_bytes(golden) == raw
    spec = INPUTS[name][1]
    assert api.compress_bytes(raw, spec, profile=profile) == golden, (
        "the .qres format changed: if on purpose, bump it and run tests/make_golden.py"
    )


def test_golden_inputs_are_what_the_makers_produce():
    for name, (make, _) in INPUTS.items():
        assert (GOLDEN / f"{name}.bin").read_bytes() == make()
