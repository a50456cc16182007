"""The ``[node]`` table of a profile: where a real node keeps its state, how it cuts its stream
into segments, its clock and its HTTP API. Learning, reputation and the aggregator come from the
``[swarm]`` table, exactly as the simulator reads them; the transport is ``[node.transport]``."""

from __future__ import annotations

import math

import attrs

from qres.kernel.config import InvalidSetting, integer, number, text


def _range_or_empty(_inst, attribute, value):
    ok = isinstance(value, list | tuple) and len(value) in (0, 2)
    if ok and value:
        lo, hi = value
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ok = numbers and math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if not ok:
        raise InvalidSetting(
            attribute.name, value, "[] (calibrate) or [lo, hi], finite numbers with lo < hi"
        )


def _address_or_empty(_inst, attribute, value):
    if not isinstance(value, str) or (value and ":" not in value) or len(value) > 300:
        raise InvalidSetting(attribute.name, value, '"" (off) or host:port, e.g. 127.0.0.1:8700')


@attrs.frozen
class NodeSettings:
    """Settings of ``qres node run`` (the ``[node]`` table's plain keys).

    * ``data_dir``: folder of the node's SQLite state and ``.qres`` segments (relative paths
      are relative to the working directory).
    * ``sample_rate``: samples per second of the source (a file is replayed at this rate).
    * ``dtype``, ``channels``: the source's sample type ("" for the codec's default).
    * ``segment_samples``, ``segment_seconds``: a segment is closed when either is reached.
    * ``http``: ``host:port`` of the HTTP API, "" for none (127.0.0.1 unless told otherwise).
    * ``key``: the node's key file ("" for the default key of ``qres keys``).
    * ``sample_range``: ``[lo, hi]``, the source's values mapped onto the learning task's
      integers (:class:`qres.learning.task.Scale`); ``[]``: fitted on the first
      ``calibration_samples`` samples, as the simulator fits a whole recording, and kept.
    * ``domain``: with a ``[lora]`` profile, the node's domain (nodes on the same kind of
      sensor): nodes that name the same domain learn the domain layer together.
    * ``check_rate``: the share of peers' update packets this node checks in full before it
      uses them (1: every one; docs/node.md, "Checks"). A packet drawn for a check is
      aggregated only once its check has passed; one not drawn goes through the robust rule
      unchecked, audited after the round at the swarm's ``audit_rate``.
    """

    data_dir: str = attrs.field(default="qres-node", validator=text(4096))
    sample_rate: float = attrs.field(default=100.0, validator=number(1e-3, 1e9))
    dtype: str = attrs.field(default="", validator=text(16))
    channels: int = attrs.field(default=1, validator=integer(1, 1))
    segment_samples: int = attrs.field(default=65536, validator=integer(16, 1 << 26))
    segment_seconds: float = attrs.field(default=3600.0, validator=number(0.001, 1e7))
    http: str = attrs.field(default="", validator=_address_or_empty)
    key: str = attrs.field(default="", validator=text(4096))
    sample_range: list = attrs.field(factory=list, validator=_range_or_empty)
    calibration_samples: int = attrs.field(default=1024, validator=integer(16, 1 << 24))
    domain: str = attrs.field(default="", validator=text(200))
    check_rate: float = attrs.field(default=1.0, validator=number(0.0, 1.0))
