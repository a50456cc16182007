"""Arrays to and from ``.qres`` bytes: the shared core of the numcodecs and zarr codecs.

Sample types the codec knows (int8-64, uint8-32, float32/64) are coded as they are. Other
fixed-width numeric types are coded losslessly through a same-width view of their bits (bool
and uint64 as int8/int64, float16 as uint16, complex as pairs of floats); a bounded-error
(``max_error > 0``) request on such a type is refused rather than applied to the wrong numbers.
The last axis is taken as channels when ``channels > 1`` (interleaved frames), otherwise the
array is coded as one flat stream in C order.
"""

from __future__ import annotations

import io
import math
from typing import Any

import attrs
import numpy as np

from qres.codec.samples import ITEMSIZE, StreamSpec

#: Same-width views for numeric types the codec has no sample type for.
_VIEWS = {"b": "i1", "?": "i1", "e": "u2", "Q": "i8", "L": "i8", "F": "f4", "D": "f8"}


def _finite_bound(value: Any) -> float:
    bound = float(value)
    if not math.isfinite(bound) or bound < 0:
        raise ValueError(f"max_error {value!r}: must be a finite number >= 0")
    return bound


@attrs.frozen
class ArraySettings:
    """How arrays are coded: the profile, the error bound and the channel count."""

    profile: str = "server"
    max_error: float = attrs.field(default=0.0, converter=_finite_bound)
    channels: int = attrs.field(default=1)

    @channels.validator
    def _check_channels(self, _attribute: Any, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
            raise ValueError(f"channels {value!r}: must be an integer in [1, 4096]")


def coded_dtype(dtype: np.dtype, max_error: float) -> np.dtype:
    """The sample type the codec codes ``dtype`` as (itself, or a same-width view)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None:
        raise TypeError(f"qres codes fixed-width numbers, not {dtype}")
    native = dtype.newbyteorder("=")
    if native.name in ITEMSIZE:
        return dtype
    view = _VIEWS.get(native.char)
    if view is None:
        raise TypeError(f"qres has no sample type for {dtype}")
    if max_error:
        raise ValueError(f"max_error needs a sample type qres predicts; {dtype} is coded as bits")
    return np.dtype(view).newbyteorder(dtype.byteorder if dtype.byteorder != "|" else "=")


def encode(array: np.ndarray, settings: ArraySettings) -> bytes:
    """The ``.qres`` bytes of ``array`` (its values in C order)."""
    from qres.codec.files import compress_bytes

    as_coded = np.ascontiguousarray(array).view(coded_dtype(array.dtype, settings.max_error))
    channels = settings.channels
    if channels > 1 and (as_coded.ndim == 0 or as_coded.shape[-1] != channels):
        raise ValueError(
            f"channels={channels} needs arrays whose last axis has {channels} entries, "
            f"got shape {array.shape}"
        )
    order = "big" if as_coded.dtype.byteorder == ">" else "little"
    spec = StreamSpec(as_coded.dtype.newbyteorder("=").name, channels, "interleaved", order)
    return compress_bytes(as_coded.tobytes(), spec, settings.profile, settings.max_error)


def decode(data: bytes) -> np.ndarray:
    """The flat array coded in ``data``, with the sample type the container records."""
    from qres.codec.files import decompress_stream

    out = io.BytesIO()
    header, _ = decompress_stream(io.BytesIO(bytes(data)), out)
    spec = StreamSpec(header.dtype, header.channels, header.layout, header.byte_order)
    raw = out.getvalue()[len(header.prefix) :]
    return spec.to_array(raw)
