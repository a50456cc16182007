"""The PNG outputs' matplotlib loader."""

from __future__ import annotations

import sys

import pytest

from qres.kernel.errors import QresError
from qres.kernel.plotting import pyplot


def test_pyplot_uses_the_headless_backend():
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(QresError, match="needs matplotlib") as info:
        pyplot()
    assert "\n" not in str(info.value)
