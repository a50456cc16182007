"""matplotlib for the PNG outputs, loaded on first use with the headless backend."""

from __future__ import annotations

from typing import Any

from qres.kernel.errors import QresError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), or a one-line error."""
    try:
        import matplotlib
    except ImportError as exc:
        raise QresError(
            "PNG output needs matplotlib, which is missing; install it with "
            "`pip install matplotlib` (a dependency of qres, so reinstalling qres also works)"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
