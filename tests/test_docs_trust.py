"""Every Python example in docs/trust.md runs as written and checks what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "trust.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_doc_has_the_examples_this_test_runs():
    assert len(BLOCKS) >= 2
    assert all("assert " in block for block in BLOCKS)


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_example_runs(number):
    exec(compile(BLOCKS[number], f"docs/trust.md python block {number + 1}", "exec"), {})
