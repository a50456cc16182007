"""Every output qres writes: complete or exit 1 naming the target; special files written in
place, never replaced; no binary data on a terminal; nothing replaced that appeared while
writing; signals and SIGKILL leave no temporary file behind for long.

Real file systems (a tiny tmpfs, a read-only tmpfs), real device nodes, FIFOs, a pty and real
signals to a real ``qres`` process. Device nodes are made inside the test's folder, never the
system's: a regression must not be able to replace ``/dev/null``.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_qres_process as run_qres  # real processes: descriptors matter here

from qres.codec.demo import make_sample

pytestmark = pytest.mark.real_process  # real descriptors, devices, pipes and signals
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a tmpfs and mknod need root")
QRES = str(Path(sys.executable).with_name("qres"))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A .qres file of 400 KB of samples, and the bytes it restores."""
    folder = tmp_path_factory.mktemp("packed")
    raw = make_sample(frames=50_000)
    (folder / "s.bin").write_bytes(raw)
    out = run_qres("compress", str(folder / "s.bin"), "--dtype", "int16", "--channels", "4")
    assert out.returncode == 0, out.stderr
    return folder / "s.bin.qres", raw


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert len(text.strip().splitlines()) == 1, text
    assert "Traceback" not in text
    return text


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> None:
    """Fill a file system to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)


# 1 and 5: short writes, full disks, errors that name the target ------------------------------


@needs_root
def test_a_full_file_system_fails_every_writer_naming_the_target(packed, tmp_path):
    qres_file, _ = packed
    with tmpfs(tmp_path / "small", "size=128k") as small:
        target = small / "out.bin"
        out = run_qres("decompress", str(qres_file), "-o", str(target))
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert line.startswith(f"qres: error: {target}: no space left on device"), line
        assert ".part" not in line and not target.exists() and no_temps(small)
        with open(small / "piped.bin", "wb") as sink:
            piped = subprocess.run(
                [QRES, "decompress", str(qres_file), "-o", "-"], stdout=sink, stderr=subprocess.PIPE
            )
        assert piped.returncode == 1
        assert "qres: error: stdout: no space left on device" in one_line(piped.stderr)
        (small / "piped.bin").unlink()
        fill(small)
        key = run_qres("keys", "new", "-o", str(small / "node.key"))
        assert key.returncode == 1 and str(small / "node.key") in one_line(key.stderr)
        updates = tmp_path / "u.npy"
        import numpy as np

        np.save(updates, np.arange(40 * 8, dtype=np.int32).reshape(40, 8))
        agg = run_qres("aggregate", str(updates), "--rule", "mean", "-o", str(small / "a.npy"))
        assert agg.returncode == 1 and f"{small / 'a.npy'}: no space" in one_line(agg.stderr)
        assert sorted(p.name for p in small.iterdir()) == ["filler"]


def test_dev_full_as_stdout_fails_with_exit_1(packed):
    qres_file, _ = packed
    with open("/dev/full", "wb") as full:
        out = subprocess.run(
            [QRES, "decompress", str(qres_file), "-o", "-"], stdout=full, stderr=subprocess.PIPE
        )
    assert out.returncode == 1
    assert "qres: error: stdout: no space left on device" in one_line(out.stderr)


@pytest.mark.parametrize("command", [["plugins", "list", "--json"], ["--version"]])
def test_text_on_a_full_stdout_fails_naming_stdout(command):
    with open("/dev/full", "wb") as full:
        out = subprocess.run([QRES, *command], stdout=full, stderr=subprocess.PIPE)
    assert out.returncode == 1
    assert one_line(out.stderr).startswith("qres: error: stdout: no space left on device")


@needs_root
def test_a_full_device_given_with_o_is_written_in_place_and_fails(packed, tmp_path):
    qres_file, _ = packed
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    out = run_qres("decompress", str(qres_file), "-o", str(full), "--force")
    assert out.returncode == 1
    assert f"qres: error: {full}: no space left on device" in one_line(out.stderr)
    assert stat.S_ISCHR(full.lstat().st_mode)


@needs_root
def test_errors_name_the_target_never_the_temporary_file(packed, tmp_path):
    qres_file, _ = packed
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        out = run_qres("decompress", str(qres_file), "-o", str(ro / "x.bin"))
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert line.startswith(f"qres: error: {ro / 'x.bin'}: cannot create it"), line
        assert ".part" not in line and "read-only" in line.lower()


# 2: special files are written in place; symlinks followed; no binary on a terminal -----------


@needs_root
def test_force_never_replaces_a_device_node(packed, tmp_path):
    qres_file, _ = packed
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for extra in ((), ("--force",)):
        out = run_qres("decompress", str(qres_file), "-o", str(null), *extra)
        assert out.returncode == 0, out.stderr
        assert stat.S_ISCHR(null.lstat().st_mode) and null.lstat().st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_fifo_is_written_in_place(packed, tmp_path):
    qres_file, raw = packed
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    out = run_qres("decompress", str(qres_file), "-o", str(fifo), "--force")
    reader.join(30)
    assert out.returncode == 0, out.stderr
    assert got == [raw]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_dev_stdout_is_written_in_place(packed):
    qres_file, raw = packed
    out = run_qres("decompress", str(qres_file), "-o", "/dev/stdout")
    assert out.returncode == 0, out.stderr
    assert out.stdout == raw
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.lstat("/dev/stdout").st_mode)


def test_a_symlink_is_followed_never_replaced(packed, tmp_path):
    qres_file, raw = packed
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    refused = run_qres("decompress", str(qres_file), "-o", str(link))
    assert refused.returncode == 1 and "already exists" in one_line(refused.stderr)
    out = run_qres("decompress", str(qres_file), "-o", str(link), "--force")
    assert out.returncode == 0, out.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == raw and no_temps(tmp_path)


def test_binary_data_is_never_written_to_a_terminal(packed):
    qres_file, _ = packed
    master, slave = pty.openpty()
    try:
        out = subprocess.run(
            [QRES, "decompress", str(qres_file), "-o", "-"],
            stdout=slave,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        assert out.returncode == 1
        assert "stdout: is a terminal" in one_line(out.stderr)
        os.set_blocking(master, False)
        with contextlib.suppress(BlockingIOError):
            assert os.read(master, 1 << 16) == b""
        # text is fine on a terminal
        text = subprocess.run(
            [QRES, "keys", "export-public", "--key", "/nonexistent/k"],
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        assert b"is a terminal" not in text.stderr
    finally:
        os.close(master)
        os.close(slave)


# 3: publishing never replaces a file that appeared meanwhile ---------------------------------


def _default_signals() -> None:
    """In the child: the default action for the signals under test. A suite started under
    ``nohup`` or as a background job inherits SIGHUP or SIGINT ignored, and qres rightly keeps
    an ignored signal ignored, so these tests would see a run that was never interrupted."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


class SlowInput:
    """A FIFO as the input of a ``qres compress`` that the test feeds at its own pace."""

    def __init__(self, folder: Path, *args: str):
        self.fifo = folder / "in.fifo"
        os.mkfifo(self.fifo)
        self.folder = folder
        self.proc = subprocess.Popen(
            [QRES, "compress", str(self.fifo), "--dtype", "int16", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=_default_signals,
        )
        self.pipe = self._open_writer()
        self.raw = make_sample(frames=200_000)
        self.pipe.write(self.raw[: 1 << 20])
        self.pipe.flush()

    def _open_writer(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: qres has not opened it yet
                assert self.proc.poll() is None, self.proc.stderr.read()
                assert time.monotonic() < deadline, "qres never opened its input"
                time.sleep(0.02)
                continue
            os.set_blocking(fd, True)
            return os.fdopen(fd, "wb")

    def wait_for_temp(self) -> Path:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            temps = [p for p in self.folder.iterdir() if p.name.endswith(".part")]
            if temps:
                return temps[0]
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.02)
        raise AssertionError("qres never created its temporary file")

    def finish(self) -> subprocess.CompletedProcess:
        with contextlib.suppress(BrokenPipeError):
            self.pipe.write(self.raw[1 << 20 :])
            self.pipe.close()
        stdout, stderr = self.proc.communicate(timeout=120)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)


def test_a_file_that_appeared_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "out.qres"
    run = SlowInput(tmp_path, "-o", str(target))
    run.wait_for_temp()
    target.write_bytes(b"theirs")
    done = run.finish()
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"{target}: appeared while qres was writing it" in line
    assert target.read_bytes() == b"theirs" and no_temps(tmp_path)


# 4: signals and SIGKILL ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_remove_the_temporary_file(tmp_path, signum):
    target = tmp_path / "out.qres"
    run = SlowInput(tmp_path, "-o", str(target))
    run.wait_for_temp()
    run.proc.send_signal(signum)
    done = run.finish()
    assert done.returncode == 128 + signum, done.stderr
    assert done.stderr.decode().strip() == "qres: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fifo"]


def test_the_next_run_removes_a_killed_runs_temporary_file(tmp_path):
    target = tmp_path / "out.qres"
    run = SlowInput(tmp_path, "-o", str(target))
    stale = run.wait_for_temp()
    run.proc.kill()
    run.finish()
    assert stale.exists()  # SIGKILL cannot be handled
    # a temporary file of a live process writing the same target is left alone
    live = stale.with_name(stale.name.replace(f".{run.proc.pid}-", f".{os.getpid()}-"))
    live.write_bytes(b"busy")
    source = tmp_path / "s.bin"
    source.write_bytes(make_sample(frames=5000))
    out = run_qres("compress", str(source), "--dtype", "int16", "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert not stale.exists() and live.exists() and target.exists()


# 12: long commands check every output before the work --------------------------------------


def test_swarm_simulate_checks_every_output_before_running(tmp_path):
    prof = tmp_path / "tiny.toml"
    prof.write_text('[profile]\nextends = "swarm-100"\n[swarm]\nnodes = 20\nrounds = 3\n')
    report, plot = tmp_path / "r.json", tmp_path / "missing" / "r.png"
    out = run_qres(
        "swarm", "simulate", "--profile", str(prof), "--report", str(report), "--plot", str(plot)
    )
    assert out.returncode == 1
    assert f"qres: error: {plot}: cannot create it" in one_line(out.stderr)
    assert not report.exists() and no_temps(tmp_path)
    same = run_qres(
        "swarm", "simulate", "--profile", str(prof), "--report", str(report), "--plot", str(report)
    )
    assert same.returncode == 2 and "named for two outputs" in one_line(same.stderr)


def test_aggregate_checks_its_output_before_the_work(tmp_path):
    import numpy as np

    updates = tmp_path / "u.npy"
    np.save(updates, np.zeros((5, 3), dtype=np.int32))
    out = run_qres("aggregate", str(updates), "--rule", "mean", "-o", str(tmp_path / "no" / "a"))
    assert out.returncode == 1 and "cannot create it" in one_line(out.stderr)


# 15: the clock starts after the imports --------------------------------------------------------

CLOCK_PROBE = """
import sys, time
from qres.codec import files, pipeline
seen = {}
class Clock:
    def perf_counter(self):
        seen.setdefault("start", set(sys.modules))
        seen["end"] = set(sys.modules)
        return time.perf_counter()
pipeline.time = Clock()
getattr(files, sys.argv[1])(sys.argv[2], sys.argv[3], **eval(sys.argv[4]))
late = sorted(seen["end"] - seen["start"])
print(" ".join(m for m in late if m.split(".")[0] in ("numpy", "qres", "attrs", "pluggy")))
"""


def test_nothing_heavy_is_imported_while_the_codec_is_timed(packed, tmp_path):
    qres_file, _ = packed
    sample = tmp_path / "s.bin"
    sample.write_bytes(make_sample(frames=20_000))
    for call, args in (
        ("compress_file", (str(sample), str(tmp_path / "s.qres"), "{'dtype': 'int16'}")),
        ("decompress_file", (str(qres_file), str(tmp_path / "back"), "{}")),
    ):
        out = subprocess.run(
            [sys.executable, "-I", "-c", CLOCK_PROBE, call, *args], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        late = [m for m in out.stdout.split() if not m.startswith("qres.builtin_plugins")]
        assert late == [], f"{call} imported {late} while its clock ran"


def test_a_device_output_is_not_limited_by_its_file_system(packed):
    # /dev sits on a file system with no free blocks; a device is written in place, so the
    # default --max-output (the free space where the output goes) must not apply to it
    qres_file, _ = packed
    out = run_qres("decompress", str(qres_file), "-o", "/dev/null")
    assert out.returncode == 0, out.stderr
