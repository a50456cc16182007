"""Golden files pin the format: compressing the same input again gives the same bytes, and the
stored containers decode to the stored inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from make_golden import BOUNDED, GOLDEN, INPUTS, PROFILES, bounded_name

from qres.codec import container
from qres.codec import files as api
from qres.codec import pipeline as codec

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


@pytest.mark.parametrize(("name", "profile", "bound"), BOUNDED)
def test_bounded_golden_bytes_are_reproduced(name, profile, bound):
    raw = (GOLDEN / f"{name}.bin").read_bytes()
    golden = (GOLDEN / bounded_name(name, profile, bound)).read_bytes()
    spec = INPUTS[name][1]
    back = spec.to_array(api.decompress_bytes(golden)).astype(np.float64)
    x = spec.to_array(raw).astype(np.float64)
    same = (back == x) | (np.isnan(back) & np.isnan(x))  # NaN and infinities kept as they are
    assert np.abs(np.where(same, 0, back - x)).max() <= bound
    assert api.compress_bytes(raw, spec, profile=profile, max_error=bound) == golden, (
        "the bounded-error format changed: if on purpose, bump it and run tests/make_golden.py"
    )


def test_bounded_goldens_cover_the_block_predictors():
    codes = set()
    for name, profile, bound in BOUNDED:
        reader = container.Reader(
            io.BytesIO((GOLDEN / bounded_name(name, profile, bound)).read_bytes())
        )
        codes |= {
            (b.flags & codec.PREDICTOR_MASK) >> codec.PREDICTOR_SHIFT for _, b in reader.blocks()
        }
    assert {0, codec.LEVELS} <= codes


def test_bounded_goldens_cover_quantised_and_lossless_blocks():
    """Bounded-error goldens pin quantised blocks (method 3, format 10) of float samples with
    NaN, -0.0 and an infinity and of int16 samples with repeats, and a block coded lossless
    because that was smallest (flag bit 0)."""
    seen = set()
    for name, profile, bound in BOUNDED:
        reader = container.Reader(
            io.BytesIO((GOLDEN / bounded_name(name, profile, bound)).read_bytes())
        )
        for _, block in reader.blocks():
            seen.add((name, block.method, block.flags & (codec.FLAG_LOSSLESS | codec.FLAG_REPEATS)))
    assert ("hourly-3ch-float64", container.METHOD_QUANTISED, 0) in seen
    assert ("gestures-3ch-int16", container.METHOD_QUANTISED, codec.FLAG_REPEATS) in seen
    assert ("counts-2ch-int16", container.METHOD_PREDICTED, codec.FLAG_LOSSLESS) in seen
    raw = (GOLDEN / "hourly-3ch-float64.bin").read_bytes()
    back = np.frombuffer(
        api.decompress_bytes(
            (GOLDEN / bounded_name("hourly-3ch-float64", "server", 0.02)).read_bytes()
        ),
        "<f8",
    )
    x = np.frombuffer(raw, "<f8")
    assert np.array_equal(np.isnan(back), np.isnan(x)) and np.isinf(back).sum() == 1


def test_lossless_goldens_cover_the_channel_predictor_codes():
    """Some lossless goldens code channels with a polynomial (flag bit 3), some do not."""
    flags = set()
    for name in INPUTS:
        for profile in PROFILES:
            reader = container.Reader(io.BytesIO((GOLDEN / f"{name}.{profile}.qres").read_bytes()))
            flags |= {b.flags & codec.FLAG_CHANNEL_PREDICTORS for _, b in reader.blocks()}
    assert flags == {0, codec.FLAG_CHANNEL_PREDICTORS}


def test_goldens_are_format_9_10_and_11_and_older_readable_versions_are_pinned():
    """Every integer golden made by tests/make_golden.py is format 9 (lossless) or 10 (bounded
    error), every float one format 11; the last files of versions 4 (int16, float64), 5
    (int24), 6 (int16 with repeats and pairs, float64), 7 (float32 on scaled lattices), 8
    (int16 dictionary), 9 (bounded error: int16, float64; lossless float64 with runs) and 10
    (bounded-error float64 with quantised blocks and runs) are kept and still decode to their
    inputs."""
    versions = {}
    for path in GOLDEN.glob("*.qres"):
        if not path.name.startswith("format-v"):
            versions[path.name] = container.describe(io.BytesIO(path.read_bytes()))
    for name, info in versions.items():
        bounded = bool(info["header"]["codec"]["max_error"])
        floats = info["header"]["dtype"].startswith("float")
        assert info["format_version"] == (11 if floats else 10 if bounded else 9)
        assert (GOLDEN / name).read_bytes()[8] == info["format_version"]
    old = {4: set(), 5: set(), 6: set(), 7: set(), 8: set(), 9: set(), 10: set()}
    for version in old:
        for path in GOLDEN.glob(f"format-v{version}.*.qres"):
            packed = path.read_bytes()
            assert packed[8] == version
            info = container.describe(io.BytesIO(packed))
            old[version].add(info["header"]["dtype"])
            name = path.name.split(".")[1]
            raw = (GOLDEN / f"{name}.bin").read_bytes()
            back = api.decompress_bytes(packed)
            if ".e" in path.name:  # bounded error: within the bound recorded in the header
                spec = INPUTS[name][1]
                y = spec.to_array(back).astype(float)
                x = spec.to_array(raw).astype(float)
                same = (y == x) | (np.isnan(y) & np.isnan(x))  # NaN and infinities kept
                with np.errstate(invalid="ignore"):  # inf - inf: such samples are ``same``
                    err = np.abs(np.where(same, 0, y - x))
                assert err.max() <= info["header"]["codec"]["max_error"]
            else:
                assert back == raw
    assert old == {
        4: {"int16", "float64"},
        5: {"int24"},
        6: {"int16", "float64"},
        7: {"float32"},
        8: {"int16"},
        9: {"int16", "float64"},
        10: {"float64"},
    }


def test_bounded_goldens_pin_grids_on_the_channels_lattices():
    """The float32 converter-code golden at bound 0.01 is a quantised block that records its
    own grids (format 11): each channel's step an odd multiple of its scaled lattice's step
    (10/4095 V and 3.3/1023 V), the largest whose half-width holds the bound, on the lattice's
    offset (whole or half codes)."""
    from qres.codec import quantised

    name, bound = "adc-2ch-float32", 0.01
    packed = (GOLDEN / bounded_name(name, "server", bound)).read_bytes()
    reader = container.Reader(io.BytesIO(packed))
    assert reader.header.version == container.LATTICE_GRIDS == 11
    ((_, block),) = list(reader.blocks())
    assert block.method == container.METHOD_QUANTISED
    assert block.payload[0] & quantised.LATTICE_FLAG
    grids, _ = quantised.read_grids(block.payload, 2)
    for (step, offset), lattice in zip(grids, (10 / 4095, 3.3 / 1023), strict=True):
        k = step / lattice
        assert abs(k - round(k)) < 1e-9 and round(k) % 2 == 1
        assert (round(k) - 1) / 2 * lattice <= bound < (round(k) + 1) / 2 * lattice
        assert abs(2 * offset / lattice - round(2 * offset / lattice)) < 1e-6  # codes or halves


def test_float32_goldens_pin_the_scaled_lattice():
    """Both channels of the converter-code input map through kind 7 (the golden bytes of
    every profile are checked above), with the planted off-lattice samples as ulps."""
    from qres.codec import mapping

    make, spec = INPUTS["adc-2ch-float32"]
    block = spec.to_array(make()).reshape(-1, spec.channels)
    mapped = mapping.to_integers(block, spec, None)
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, len(block))
    assert [m.kind for m in side.maps] == [mapping.KIND_SCALED] * 2
    assert [m.lattice[1] for m in side.maps] == [10 / 4095, 3.3 / 1023]


def test_float_goldens_pin_run_tables():
    """The dropouts golden (every profile) keeps its scattered NaN and -inf samples in run
    tables (kind 9) on both channels, with two bit patterns (a pattern stream) on the first;
    the hourly golden's single gap and infinity stay verbatim (kind 5: fewer bytes)."""
    from qres.codec import mapping

    for name in ("dropouts-2ch-float32", "hourly-3ch-float64"):
        for profile in PROFILES:
            packed = (GOLDEN / f"{name}.{profile}.qres").read_bytes()
            reader = container.Reader(io.BytesIO(packed))
            decoder = codec.open_decoder(reader.header)()
            seen = set()
            for _, block in reader.blocks():
                if block.method != container.METHOD_PREDICTED:
                    continue
                layout = decoder._read_layout(memoryview(block.payload), block.frames, block.flags)
                seen |= {(c, m.kind, m.patterns) for c, m in enumerate(layout.side.maps)}
            tables = {(c, n) for c, kind, n in seen if kind == mapping.KIND_RUN_TABLE}
            if name.startswith("dropouts"):
                assert {c for c, _ in tables} == {0, 1} and (0, 2) in tables, profile
            else:
                assert not tables and {kind for _, kind, _ in seen} >= {mapping.KIND_RUNS}


def test_float_goldens_pin_the_narrow_and_shifted_views():
    """The wide golden's float32 and float16 values stored as float64 map as float32 (kind
    11): the float32 readings on their scaled lattice (a code over 37), the float16 values
    through the float32 bit view without the 13 zero bits they all end in (kind 10)."""
    from qres.codec import mapping

    make, spec = INPUTS["wide-2ch-float64"]
    block = spec.to_array(make()).reshape(-1, spec.channels)
    mapped = mapping.to_integers(block, spec, None)
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, len(block))
    assert [m.kind for m in side.maps] == [mapping.KIND_NARROW] * 2
    first, second = (m.inner for m in side.maps)
    assert first.kind == mapping.KIND_SCALED and first.lattice[1] == 1 / 37
    assert (second.kind, second.shift) == (mapping.KIND_FLOAT_SHIFTED, 13)


def test_lossless_goldens_cover_repeats_and_channel_pairs():
    flags = set()
    for profile in PROFILES:
        packed = (GOLDEN / f"gestures-3ch-int16.{profile}.qres").read_bytes()
        flags |= {b.flags for _, b in container.Reader(io.BytesIO(packed)).blocks()}
    assert any(f & codec.FLAG_REPEATS for f in flags)
    assert any(f & codec.FLAG_CHANNEL_PAIRS for f in flags)


def test_int16_goldens_pin_the_dictionary_and_the_integer_lattice():
    from qres.codec import mapping

    make, spec = INPUTS["counts-2ch-int16"]
    block = spec.to_array(make()).reshape(-1, spec.channels)
    mapped = mapping.to_integers(block, spec, None)
    side, _ = mapping.read_side(memoryview(mapped.side), 0, spec, len(block))
    assert [m.kind for m in side.maps] == [mapping.KIND_DICTIONARY, mapping.KIND_SCALED]


def test_int16_goldens_pin_repeats_that_copy_from_an_earlier_channel():
    """In the irradiance golden (every profile), diffuse copies from global: a match reaches
    back past the channel's own start."""
    import numpy as np

    reached = set()
    for profile in PROFILES:
        packed = (GOLDEN / f"irradiance-3ch-int16.{profile}.qres").read_bytes()
        reader = container.Reader(io.BytesIO(packed))
        decoder = codec.open_decoder(reader.header)()
        for _, block in reader.blocks():
            if not block.flags & codec.FLAG_REPEATS:
                continue
            layout = decoder._read_layout(memoryview(block.payload), block.frames, block.flags)
            for table in layout.repeats:
                if table is not None:
                    starts = np.cumsum(table.runs + table.lengths) - table.lengths
                    if np.any(table.distances > starts):
                        reached.add(profile)
    assert {"server", "fast"} <= reached
