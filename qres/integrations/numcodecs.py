"""qres as a numcodecs codec: ``numcodecs.get_codec({"id": "qres", "profile": "server"})``.

Registered through numcodecs' ``numcodecs.codecs`` entry-point group, so zarr v2 arrays and any
tool built on numcodecs can store chunks with qres. Settings: ``profile`` (any profile with a
``[codec]`` table), ``max_error`` (0: lossless; E > 0: every value within E), ``channels`` (the
last axis holds that many channels) and ``dtype`` (the sample type of plain byte buffers, which
carry none; arrays bring their own).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from qres.integrations import arrays


class Qres(Codec):
    """Learned, deterministic compression of numeric arrays (lossless or bounded error)."""

    codec_id = "qres"

    def __init__(
        self,
        profile: str = "server",
        max_error: float = 0,
        channels: int = 1,
        dtype: str | None = None,
    ):
        self.settings = arrays.ArraySettings(profile, max_error, channels)
        self.dtype = None if dtype is None else np.dtype(dtype).str
        if self.dtype is not None:
            arrays.coded_dtype(np.dtype(self.dtype), self.settings.max_error)

    def encode(self, buf: Any) -> bytes:
        """The ``.qres`` bytes of ``buf`` (an array, or bytes of the configured ``dtype``)."""
        if isinstance(buf, np.ndarray) and buf.dtype != np.uint8 or self.dtype is None:
            if isinstance(buf, np.ndarray) and buf.dtype.hasobject:
                raise TypeError("qres codes fixed-width numbers, not Python objects")
            array = buf if isinstance(buf, np.ndarray) else ensure_contiguous_ndarray(buf)
        else:
            array = ensure_contiguous_ndarray(buf).view(self.dtype)
        return arrays.encode(array, self.settings)

    def decode(self, buf: Any, out: Any = None) -> Any:
        """The decoded values (flat), or ``out`` filled with them."""
        if out is not None and isinstance(out, np.ndarray) and out.dtype.hasobject:
            raise TypeError("cannot decode numbers into an object array")
        values = arrays.decode(ensure_contiguous_ndarray(buf).tobytes())
        if self.dtype is not None:
            values = values.view(self.dtype)
        return ndarray_copy(values, out)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Qres:
        """The codec of a configuration (with or without its ``id``)."""
        config = dict(config)
        if config.pop("id", cls.codec_id) != cls.codec_id:
            raise ValueError(f"not a qres codec configuration: {config!r}")
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "id": self.codec_id,
            "profile": self.settings.profile,
            "max_error": self.settings.max_error,
            "channels": self.settings.channels,
        }
        if self.dtype is not None:
            config["dtype"] = self.dtype
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"Qres({args})"
