"""Every parser of untrusted bytes, fuzzed: it parses or raises the project's own error; it never
crashes, hangs, allocates without bound or writes a file.

Each fuzzer mutates a valid input (bit flips, truncation, splices) and also feeds raw garbage;
example counts are modest so the whole file runs in seconds. tests/test_container.py already
fuzzes the container's block decoding; here are its ``qres info``/``verify`` paths, plus update
packets, audit responses, packet streams, proofs, key files and TOML profiles.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import time
import tracemalloc
from pathlib import Path

import bombs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qres.codec import container
from qres.codec import files as api
from qres.kernel import profiles
from qres.kernel.errors import IntegrityError, QresError
from qres.node import audits
from qres.trust import audit as au
from qres.trust import commitment as cm
from qres.trust import packet as pk
from qres.trust import proof as pf
from qres.trust import roundstep as rs
from qres.trust.identity import Identity, load_identity, parse_private_key

ALICE = Identity.from_seed(hashlib.sha256(b"fuzz").digest())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: One parse of a small input taking longer than this would be a hang in the making.
SLOW_SECONDS = 10.0


def _rand(seed):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _make_valid():
    claim = au.Claim(tuple(range(-4, 4)), 5000, 300)
    packet, response = au.prepare(
        ALICE, 9, b"fuzz-nonce-00001", [10] * 8, claim, randbytes=_rand(1), inline_proof=True
    )
    buf = io.BytesIO()
    writer = pk.StreamWriter(buf)
    writer.write_packet(packet)
    writer.write_audit(response)
    writer.write_packet(packet.without_proof(ALICE))
    writer.finish()
    return packet.encode(), response.encode(), buf.getvalue(), packet.proof


PACKET, RESPONSE, STREAM, PROOF = _make_valid()


@st.composite
def mutated(draw, valid: bytes):
    """A valid input damaged: bit flips, a cut, or spliced garbage (or several)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "splice", "insert"]))
        if how == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif how == "splice" and data:
            i = draw(st.integers(0, len(data) - 1))
            junk = draw(st.binary(min_size=1, max_size=16))
            data[i : i + len(junk)] = junk
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _only_own_errors(fn, *args):
    """Run ``fn``: a result or a QresError pass; anything else (or a slow parse) fails."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except QresError:
        result = None
    assert time.perf_counter() - start < SLOW_SECONDS
    return result


@FUZZ
@given(
    st.one_of(
        mutated(PACKET),
        st.binary(max_size=400),
        st.binary(max_size=200).map(lambda b: pk.MAGIC + bytes([pk.VERSION]) + b),
    )
)
def test_update_packets(data):
    packet = _only_own_errors(pk.decode, data)
    if packet is not None:
        assert packet.encode() == data  # canonical: what parses re-encodes to the same bytes
    verdict = pk.Verifier(known=[ALICE.public_key], current_round=9).check(data)
    assert verdict.ok == (data == PACKET)


STEP = rs.RoundStep(
    ALICE.public_key,
    7,
    bytes(range(32)),
    cm.scalar_bytes(5),
    [1, -2, 3],
    [rs.SubStep(6, [4, 5, -6], [b"h" * 32, b"i" * 32], [7, 8], own_weight=9, weighted=True)],
).encode()


@FUZZ
@given(
    st.one_of(
        mutated(STEP),
        st.binary(max_size=400),
        st.binary(max_size=300).map(lambda b: rs.MAGIC + bytes([rs.VERSION]) + b),
    )
)
def test_round_step_records(data):
    step = _only_own_errors(rs.decode, data)
    if step is not None:
        assert step.encode() == data  # canonical


EVIDENCE = rs.StepEvidence(STEP, PACKET, [PACKET, PACKET[:-1] + b"x"]).encode()


@FUZZ
@given(st.one_of(mutated(EVIDENCE), st.binary(max_size=400)))
def test_round_step_evidence(data):
    evidence = _only_own_errors(rs.decode_evidence, data)
    if evidence is not None:
        assert evidence.encode() == data  # canonical


SUBSTEP = rs.encode_substep(rs.decode(STEP).substeps[0], 3)


@FUZZ
@given(st.one_of(mutated(SUBSTEP), st.binary(max_size=200)))
def test_stored_substeps(data):
    sub = _only_own_errors(rs.decode_substep, data, 3)
    if sub is not None:
        assert rs.encode_substep(sub, 3) == data


def _answer() -> bytes:
    return audits.make_answer(ALICE, RESPONSE, [1, -2, 3] * 5, True, EVIDENCE).encode()


ANSWER = _answer()


@FUZZ
@given(st.one_of(mutated(ANSWER), st.binary(max_size=600)))
def test_audit_answers_with_step_evidence(data):
    answer = _only_own_errors(audits.decode_answer, data)
    if answer is not None:
        assert answer.encode() == data  # signed: any other bytes fail the signature


@FUZZ
@given(st.one_of(mutated(RESPONSE), st.binary(max_size=400)))
def test_audit_responses(data):
    response = _only_own_errors(pk.decode_audit, data)
    if response is not None:
        assert response.encode() == data
    result = au.check_response(pk.decode(PACKET), data)
    assert result.ok == (data == RESPONSE)


@FUZZ
@given(
    st.one_of(
        mutated(STREAM),
        st.binary(max_size=400),
        st.binary(max_size=100).map(lambda b: pk.STREAM_HEADER + b),
    )
)
def test_packet_streams(data):
    def read_all():
        return list(pk.read_stream(io.BytesIO(data)))

    _only_own_errors(read_all)
    report = au.audit_stream(io.BytesIO(data))  # never raises: faults become failures
    # The end record holds the count and hash of everything before it: any change, any cut
    # (at a record boundary too) and any bytes after it fail the audit.
    if data != STREAM:
        assert not report.ok


@FUZZ
@given(st.one_of(mutated(PROOF), st.binary(max_size=80), st.binary(min_size=64, max_size=64)))
def test_proofs(data):
    _only_own_errors(pf.parse_proof, data)
    packet = pk.decode(PACKET)
    ok = pf.verify(packet.did, 9, packet.base, packet.update, packet.commitment, data)
    assert ok == (data == PROOF)


@FUZZ
@given(st.binary(min_size=32, max_size=32))
def test_points_and_scalars(raw):
    _only_own_errors(cm.check_point, raw)
    _only_own_errors(cm.parse_scalar, raw)


def _pem() -> bytes:
    return ALICE.private_pem()


@FUZZ
@given(
    st.one_of(
        mutated(_pem()),
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: b"-----BEGIN PRIVATE KEY-----\n" + b),
    )
)
def test_key_files(data):
    identity = _only_own_errors(parse_private_key, data, "fuzz.key")
    if identity is not None:
        assert identity.did.startswith("did:qres:")
    # The error message never echoes the file's bytes.
    try:
        parse_private_key(data, "fuzz.key")
    except IntegrityError as exc:
        body = [line for line in data.splitlines() if len(line) > 8]
        assert not any(line.decode("latin-1") in str(exc) for line in body)


def test_key_file_on_disk_is_read_with_a_bound(tmp_path):
    path = tmp_path / "huge.key"
    with open(path, "wb") as out:
        out.truncate(1 << 30)  # sparse 1 GiB: must be refused without reading it all
    os.chmod(path, 0o600)
    tracemalloc.start()
    with pytest.raises(IntegrityError):
        load_identity(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


PROFILE = profiles.bundled_dir() / "esp32.toml"
TOML_VALUES = st.sampled_from(
    [
        "1",
        "-1",
        "0",
        "99999999999999999999",
        "1.5",
        "nan",
        "inf",
        "true",
        '"x"',
        '""',
        "[]",
        "[1, 2]",
        '[[1], ["a"]]',
        "{}",
        '{ use = "nope" }',
        '{ use = "rice", x = 1 }',
        "1979-05-27T07:32:00Z",
        '"' + "a" * 5000 + '"',
        "[" * 50 + "]" * 50,
        '"esp32"',
        '"edge"',
    ]
)
TOML_KEYS = st.sampled_from(
    [
        "codec.block_samples",
        "codec.predictor",
        "codec.coder",
        "codec.dtype",
        "hardware.use",
        "profile.extends",
        "profile.name",
        "swarm.aggregator",
        "lora.layers",
        "llm.backend",
        "profile.description",
        "codec.predictor.stages",
        "nothing.here",
    ]
)


def _profile_text() -> str:
    return PROFILE.read_text()


def _load_profile(tmp_path: Path, raw: bytes):
    folder = tmp_path / f"p{hashlib.sha256(raw).hexdigest()[:12]}"
    folder.mkdir(exist_ok=True)
    path = folder / "fuzz.toml"
    path.write_bytes(raw)
    before = sorted(os.listdir(folder))
    _only_own_errors(profiles.load, str(path))
    assert sorted(os.listdir(folder)) == before  # nothing written beside it


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.one_of(mutated(PROFILE.read_bytes()), st.binary(max_size=300)))
def test_profiles_bytes(tmp_path, raw):
    _load_profile(tmp_path, raw)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(TOML_KEYS, TOML_VALUES), min_size=1, max_size=4))
def test_profiles_values(tmp_path, edits):
    lines = ['[profile]\nname = "fuzz"\nextends = "esp32"\n']
    tables: dict[str, list[str]] = {}
    for key, value in edits:
        table, _, name = key.rpartition(".")
        tables.setdefault(table, []).append(f"{name} = {value}")
    for table, body in tables.items():
        if table != "profile":
            lines.append(f"[{table}]\n" + "\n".join(dict.fromkeys(body)) + "\n")
    _load_profile(tmp_path, "\n".join(lines).encode())


@pytest.fixture(scope="module")
def packed():
    from qres.codec.demo import make_sample
    from qres.codec.samples import StreamSpec

    return api.compress_bytes(make_sample(frames=6000), StreamSpec("int16", 4), "esp32")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_container_info_and_verify(packed, tmp_path, data):
    damaged = data.draw(mutated(packed))
    _only_own_errors(container.describe, io.BytesIO(damaged))
    path = tmp_path / "x.qres"
    path.write_bytes(damaged)
    before = sorted(os.listdir(tmp_path))
    _only_own_errors(api.verify_file, str(path))
    assert sorted(os.listdir(tmp_path)) == before


def _payload_damaged(packed: bytes, data) -> bytes:
    """``packed`` (one block) with its block's payload damaged under valid checksums: the
    container is written again around it, so the payload's parser, not a CRC, meets it."""
    import attrs

    reader = container.Reader(io.BytesIO(packed))
    ((_, block),) = list(reader.blocks())
    forged = io.BytesIO()
    writer = container.Writer(forged, reader.header)
    writer.add(attrs.evolve(block, payload=data.draw(mutated(block.payload))), b"")
    writer.finish()
    return forged.getvalue()


@pytest.fixture(scope="module", params=["bound's grid", "lattice grids"])
def quantised_packed(request):
    """A bounded-error stream of quantised blocks with NaNs: hourly-like steps of 0.9 on the
    bound's grid (format 10's payload), or readings of 3 decimals (some an ulp off) on grids
    recorded from the channels' own lattices (format 11: the flag and a step and offset per
    channel before the coded samples)."""
    import numpy as np

    from qres.codec import quantised
    from qres.codec.samples import StreamSpec

    rng = np.random.default_rng(8)
    lattice = request.param == "lattice grids"
    if lattice:
        codes = 250 + np.cumsum(rng.integers(-1, 2, 4000) * (rng.random(4000) < 0.3))
        x = np.where(codes % 5 == 1, np.nextafter(codes / 1000, 1.0), codes / 1000)
        bound = 3e-4
    else:
        x = np.repeat(rng.integers(0, 40, 200), rng.integers(1, 60, 200))[:4000] * 0.9
        bound = 2
    x[100:130] = np.nan
    raw = np.stack([x, x[::-1]], 1).astype("<f8").tobytes()
    packed = api.compress_bytes(raw, StreamSpec("float64", 2), "server", max_error=bound)
    reader = container.Reader(io.BytesIO(packed))
    blocks = [b for _, b in reader.blocks()]
    assert {b.method for b in blocks} == {container.METHOD_QUANTISED}
    assert {bool(b.payload[0] & quantised.LATTICE_FLAG) for b in blocks} == {lattice}
    return packed


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_quantised_containers_fail_cleanly(quantised_packed, data):
    """Damaged files, and damaged quantised payloads under valid checksums (so that the
    payload's parser, not a CRC, meets the damage)."""
    damaged = data.draw(mutated(quantised_packed))
    _only_own_errors(api.decompress_bytes, damaged)
    _only_own_errors(api.decompress_bytes, _payload_damaged(quantised_packed, data))


@pytest.fixture(scope="module")
def run_table_packed():
    """A lossless float stream whose channels keep scattered NaN and -inf dropouts (two bit
    patterns) in run tables (side-record kind 9, format 11), around a decimal lattice, a
    shifted bit view (kind 10: mantissas cut to 30 bits) and a narrow entry (kind 11: float32
    readings stored as float64)."""
    import numpy as np

    from qres.codec.samples import StreamSpec

    rng = np.random.default_rng(9)
    x = np.round(np.cumsum(rng.normal(0, 0.1, (3000, 3)), axis=0), 1)
    walk = np.cumsum(rng.normal(0, 0.1, 3000))
    x[:, 1] = (walk.view(np.uint64) & ~np.uint64((1 << 22) - 1)).view(np.float64)
    x[:, 2] = walk.astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    x[rng.random(x.shape) < 0.01] = -np.inf
    return api.compress_bytes(x.astype("<f8").tobytes(), StreamSpec("float64", 3), "server")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_run_table_payloads_fail_cleanly(run_table_packed, data):
    """Damaged run tables under valid checksums (the side record's counts and patterns, the
    gap, length and pattern streams) are refused with the project's own errors."""
    from qres.codec import mapping
    from qres.codec import pipeline as codec

    reader = container.Reader(io.BytesIO(run_table_packed))
    assert reader.header.version == 11
    ((_, block),) = list(reader.blocks())
    decoder = codec.open_decoder(reader.header)()
    layout = decoder._read_layout(memoryview(block.payload), block.frames, block.flags)
    kinds = [(m.kind, m.inner.kind) for m in layout.side.maps]
    inner = [mapping.KIND_DECIMAL, mapping.KIND_FLOAT_SHIFTED, mapping.KIND_NARROW]
    assert kinds == [(mapping.KIND_RUN_TABLE, k) for k in inner]
    _only_own_errors(api.decompress_bytes, _payload_damaged(run_table_packed, data))


def test_lying_lengths_do_not_allocate(packed):
    """Length and count fields claiming gigabytes are refused before anything is allocated."""
    cases = []
    huge = bytearray(PACKET)
    struct.pack_into("<I", huge, 76, pk.MAX_WEIGHTS)  # d at its maximum, body absent
    struct.pack_into("<I", huge, 8, 0xFFFFFFFF)
    cases.append(lambda: pk.decode(bytes(huge)))
    record = pk.STREAM_HEADER + struct.pack("<BI", 1, 0xFFFFFFFF)
    cases.append(lambda: list(pk.read_stream(io.BytesIO(record))))
    response = bytearray(RESPONSE)
    struct.pack_into("<I", response, 100, 0xFFFFFFFF)
    cases.append(lambda: pk.decode_audit(bytes(response)))
    for at in (0, 4 + len(STEP), 8 + len(STEP) + len(PACKET)):  # record, previous, count
        lying = bytearray(EVIDENCE)
        struct.pack_into("<I", lying, at, 0xFFFFFFFF)
        cases.append(lambda lying=lying: rs.decode_evidence(bytes(lying)))
    answer = bytearray(ANSWER)
    struct.pack_into("<I", answer, 16, 0xFFFFFFFF)  # the step evidence's length
    cases.append(lambda: audits.decode_answer(bytes(answer)))
    header = bytearray(packed[:64])
    cases.append(lambda: api.decompress_bytes(bytes(header[:12]) + b"\xff" * 52))
    # A header body length (varint after the version) claiming 2**28 bytes.
    long_header = bytes(header[:10]) + b"\xff\xff\xff\x7f" + b"\0" * 60
    cases.append(lambda: api.decompress_bytes(long_header))
    for case in cases:
        tracemalloc.start()
        with pytest.raises(IntegrityError):
            case()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, peak


class _Pipe(io.BytesIO):
    """Bytes that cannot seek, as stdin from a pipe."""

    def seekable(self):
        return False


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bombs.extreme_containers())
def test_container_info_of_extreme_headers_and_blocks(data):
    """``qres info`` (from a file and from a pipe) on containers with extreme in-range fields:
    it reads heads and index only, so memory stays small whatever the blocks declare."""
    for stream in (io.BytesIO(data), _Pipe(data)):
        tracemalloc.start()
        _only_own_errors(container.describe, stream)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, peak
    tracemalloc.start()
    _only_own_errors(lambda: api.decompress_stream(io.BytesIO(data), None, max_output=1 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 24 << 20, peak
