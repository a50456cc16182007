"""qres as a zarr v3 codec: ``zarr.create_array(..., serializer=QresCodec(profile="server"))``.

An array-to-bytes codec (it replaces zarr's ``bytes`` serializer) registered under the name
``qres`` through zarr's ``zarr.codecs`` entry-point group, so stores written with it open by
name in any Python that has qres installed. Configuration: ``profile``, ``max_error`` and
``channels`` as for the numcodecs codec. Chunks are coded in C order; partial chunks at the
array's edge arrive padded by zarr and are coded as such.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from qres.integrations import arrays

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

NAME = "qres"


@dataclass(frozen=True)
class QresCodec(ArrayBytesCodec):
    """Learned, deterministic compression of zarr chunks (lossless or bounded error)."""

    is_fixed_size = False
    settings: arrays.ArraySettings

    def __init__(self, *, profile: str = "server", max_error: float = 0, channels: int = 1):
        object.__setattr__(self, "settings", arrays.ArraySettings(profile, max_error, channels))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QresCodec:
        _, config = parse_named_configuration(data, NAME, require_configuration=False)
        return cls(**(config or {}))

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        config = {"profile": s.profile, "max_error": s.max_error, "channels": s.channels}
        return {"name": NAME, "configuration": config}

    def validate(self, *, shape: Any, dtype: Any, chunk_grid: Any) -> None:
        """Refuse, when the array is created, a sample type that cannot be coded as asked."""
        arrays.coded_dtype(dtype.to_native_dtype(), self.settings.max_error)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        data = arrays.encode(chunk_array.as_numpy_array(), self.settings)
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = chunk_spec.dtype.to_native_dtype()
        values = arrays.decode(chunk_bytes.to_bytes()).view(dtype).reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("qres chunks are variable-size")
