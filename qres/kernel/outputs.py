"""Every file qres writes goes through :func:`atomic_output`: complete, or not at all.

* A regular file is written to a temporary file beside it and published only when everything
  was written; without ``--force`` it is published without replacing a file that appeared
  meanwhile (``renameat2(RENAME_NOREPLACE)``, else a hard link), and that is an error.
* Outputs that are not regular files (character devices, FIFOs, sockets, ``/dev/stdout`` and
  other descriptor paths) are written in place, as ``cat`` or ``gzip -c`` would: a device node
  is never replaced by a regular file. A symlink is followed: the file it names is written.
* Binary data is never written to a terminal.
* Every write is checked: a short write, a full disk or a closed pipe is an
  :class:`OutputError` (exit 1) that names the target the user gave, never the temporary file.
* Temporary files are named ``.NAME.HOST.PID-RANDOM.part``; a run writing NAME removes those of
  processes of this host that no longer exist (left by a SIGKILL or a power cut).
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import re
import secrets
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qres.kernel.errors import QresError, UsageError

#: Paths that name an already open descriptor: always written in place.
_DESCRIPTOR_PATHS = re.compile(r"^/(dev/(stdout|stderr|fd/\d+)|proc/(self|\d+)/fd/\d+)$")
_NAME_LIMIT = 100  # characters of the target's name kept in a temporary file's name


class OutputError(QresError):
    """An output could not be written completely; names the target as the user gave it."""

    exit_code = 1


class OutputStream(io.RawIOBase):
    """A checked, unbuffered writer on a descriptor: every byte is written or it raises."""

    def __init__(self, fd: int, shown: str, own_fd: bool = True, in_place: bool = False):
        super().__init__()
        self._fd = fd
        self.shown = shown
        self._own = own_fd
        self._in_place = in_place
        self._failed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        try:
            os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:
            return False
        return not stat.S_ISFIFO(os.fstat(self._fd).st_mode)

    def fileno(self) -> int:
        return self._fd

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        if self._failed:
            return total  # reported once; buffers flushed again on the way out are dropped
        while view:
            try:
                written = os.write(self._fd, view[: 1 << 30])
            except InterruptedError:
                continue
            except OSError as exc:
                raise self.error(exc) from exc
            if written <= 0:
                raise self.error(OSError(errno.EIO, "the system wrote nothing"))
            view = view[written:]
        return total

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # An OSError as it is: buffered writers probe tell() on pipes and expect one.
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return self.seek(0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed and self._own:
            try:
                os.close(self._fd)
            except OSError as exc:  # NFS and some FUSE file systems report write errors here
                super().close()
                raise self.error(exc) from exc
        super().close()

    def error(self, exc: OSError) -> OutputError:
        """The one-line error for a failed write to this output."""
        self._failed = True
        reason = exc.strerror or str(exc)
        what = "the output is incomplete" if self._in_place else "nothing was written"
        return OutputError(f"{self.shown}: {reason[:1].lower()}{reason[1:]}; {what}")


class _BufferOutput(io.RawIOBase):
    """A checked writer on a binary stream without a descriptor (stdout captured in memory)."""

    def __init__(self, buffer, shown: str):
        super().__init__()
        self._buffer = buffer
        self.shown = shown

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            self._buffer.write(data)
            self._buffer.flush()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OutputError(f"{self.shown}: {reason}; the output is incomplete") from exc
        return len(memoryview(data).cast("B"))


def _stdout_fd() -> int:
    """The descriptor behind ``sys.stdout``, or -1 when it has none."""
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def _shown(target: str) -> str:
    return "stdout" if target == "-" else target


def _refuse_terminal(fd: int, shown: str) -> None:
    if os.isatty(fd):
        raise OutputError(
            f"{shown}: is a terminal; qres writes no binary data there: redirect it "
            "(> FILE or | ...) or give an output file with -o"
        )


def check_distinct(*targets: str | None) -> None:
    """Refuse two outputs of one command that are the same file (UsageError)."""
    seen: dict[str, str] = {}
    for target in targets:
        if not target or target == "-" or _DESCRIPTOR_PATHS.match(target):
            continue
        key = os.path.realpath(target)
        if key in seen:
            raise UsageError(
                f"{target}: named for two outputs ({seen[key]}); give each its own file"
            )
        seen[key] = target


@contextmanager
def atomic_output(
    target: str,
    force: bool,
    *,
    binary: bool = True,
    private: bool = False,
    durable: bool = False,
) -> Iterator[OutputStream]:
    """A checked binary stream that becomes ``target`` only if the block succeeds.

    ``-`` is stdout. ``binary``: refuse a terminal. ``private``: a regular file only, created
    with mode 0600 (keys). ``durable``: fsync the file and its folder before returning.
    """
    shown = _shown(target)
    if target == "-" or _DESCRIPTOR_PATHS.match(target):
        with _in_place(target, shown, binary, private) as out:
            yield out
        return
    path = Path(os.path.realpath(target)) if os.path.islink(target) else Path(target)
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{shown}: {exc.strerror}; check the path") from exc
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{shown}: is a directory; give a file name")
    if info is not None and not stat.S_ISREG(info.st_mode):
        with _in_place(str(path), shown, binary, private) as out:
            yield out
        return
    if info is not None and not force:
        raise OutputError(f"{shown}: already exists; pass --force to overwrite it")
    with _published(path, shown, force, private, durable, info) as out:
        yield out


@contextmanager
def _in_place(target: str, shown: str, binary: bool, private: bool) -> Iterator[OutputStream]:
    """Write an open descriptor, a device or a FIFO in place, as ``cat > target`` would."""
    if private:
        raise OutputError(f"{shown}: not a regular file; give the path of a file")
    if target == "-":
        sys.stdout.flush()
        fd, own = _stdout_fd(), False
        if fd < 0:  # stdout replaced by an embedding program: write to its binary buffer
            yield _BufferOutput(sys.stdout.buffer, shown)
            return
    else:
        try:
            fd, own = os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC), True
        except OSError as exc:
            raise OutputError(f"{shown}: {exc.strerror}; cannot write there") from exc
    out = OutputStream(fd, shown, own, in_place=True)
    try:
        if binary:
            _refuse_terminal(fd, shown)
        yield out
    finally:
        out.close()


@contextmanager
def _published(
    path: Path, shown: str, force: bool, private: bool, durable: bool, old: os.stat_result | None
) -> Iterator[OutputStream]:
    folder = path.parent
    remove_stale_temps(path)
    tmp = folder / _temp_name(path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        where = f"folder {folder}" if str(folder) != "." else "the current folder"
        raise OutputError(f"{shown}: cannot create it in {where}: {exc.strerror}") from exc
    out = OutputStream(fd, shown)
    try:
        # The temporary file is private until published; the output then gets the mode a
        # plain open() would give it (or keeps the replaced file's), unless it is a secret.
        os.fchmod(fd, 0o600 if private else _output_mode(old))
        yield out
        if durable:
            os.fsync(fd)
        out.close()
        _publish(tmp, path, shown, force)
        if durable:
            _fsync_folder(folder)
    except BaseException:
        try:
            out.close()
        except OutputError:
            pass  # the first error is the one to report
        tmp.unlink(missing_ok=True)
        raise


def _publish(tmp: Path, path: Path, shown: str, force: bool) -> None:
    """Rename the finished temporary file to ``path``; without force never over another file."""
    if force:
        try:
            now = path.lstat()
        except FileNotFoundError:
            now = None
        if now is not None and not stat.S_ISREG(now.st_mode):
            raise OutputError(
                f"{shown}: became a {_kind(now.st_mode)} while qres was writing; left it alone "
                "and wrote nothing"
            )
        os.replace(tmp, path)
        return
    try:
        _rename_noreplace(tmp, path)
    except FileExistsError as exc:
        raise OutputError(
            f"{shown}: appeared while qres was writing it; left it as it is and wrote nothing "
            "(pass --force to overwrite it)"
        ) from exc
    except OSError as exc:
        raise OutputError(f"{shown}: cannot publish it: {exc.strerror}") from exc


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename atomically unless ``dst`` exists (FileExistsError then)."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(dst))
    # No renameat2 here (or not on this file system): a hard link also refuses an existing name.
    os.link(src, dst)
    src.unlink()


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself was synced
    finally:
        os.close(fd)


def _output_mode(old: os.stat_result | None) -> int:
    """The permission bits for a new output: the replaced file's, else 0666 minus the umask."""
    if old is not None:
        return stat.S_IMODE(old.st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _temp_prefix(name: str) -> str:
    return f".{name[:_NAME_LIMIT]}.{_host()}."


def _temp_name(name: str) -> str:
    return f"{_temp_prefix(name)}{os.getpid()}-{secrets.token_hex(4)}.part"


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary files for ``path`` left by processes of this host that are gone."""
    prefix = _temp_prefix(path.name)
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[0-9a-f]{8}\.part$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_uid == os.geteuid():
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # another run removed it first, or it is not ours to remove
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def is_stdout(target: str) -> bool:
    """Whether ``target`` is this process's stdout (``-``, ``/dev/stdout``, the same file)."""
    if target == "-":
        return True
    try:
        here, out = os.stat(target), os.fstat(_stdout_fd())
    except (OSError, ValueError):
        return False
    return (here.st_dev, here.st_ino) == (out.st_dev, out.st_ino)


def checked_stdout() -> Callable[[], None]:
    """Route text printed to stdout through a checked writer, so that a full disk or
    ``/dev/full`` fails the command with ``stdout: ...`` instead of at the interpreter's exit.
    Returns the function that restores the original stdout (nothing happens when stdout is
    not the process's own, e.g. captured by a test runner)."""
    original = sys.stdout
    try:
        fd = original.fileno() if original is sys.__stdout__ else -1
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0:
        return lambda: None
    original.flush()
    raw = OutputStream(fd, "stdout", own_fd=False, in_place=True)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=original.encoding,
        errors=original.errors,
        line_buffering=original.line_buffering,
    )

    def restore() -> None:
        checked, sys.stdout = sys.stdout, original
        try:
            checked.flush()
        finally:
            checked.detach()

    return restore
