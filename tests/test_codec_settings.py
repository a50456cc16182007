"""The codec settings of a profile are read once per process and read again whenever what
they came from changes: the profile's files, a parent it extends, or a new profile of the
same name earlier on the search path."""

from __future__ import annotations

import os

import pytest

from qres.codec import files
from qres.kernel.errors import ProfileError

PROFILE = """[profile]
description = "test"

[codec]
block_samples = {block}
dtype = "int16"
predictor = {{ use = "polynomial", order = {order} }}
coder = {{ use = "rice", checksum = false }}
"""


def write(folder, name, block=4096, order=2, text=None):
    path = folder / f"{name}.toml"
    path.write_text(text if text is not None else PROFILE.format(block=block, order=order))
    return path


def test_settings_follow_edits_of_the_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("QRES_PROFILE_PATH", str(tmp_path))
    write(tmp_path, "cached", block=4096, order=2)
    first, dtype = files.codec_settings("cached")
    assert (first.block_frames, first.predictor["order"], dtype) == (4096, 2, "int16")
    assert files.codec_settings("cached")[0] == first
    write(tmp_path, "cached", block=8192, order=3)  # same size, other content
    again, _ = files.codec_settings("cached")
    assert (again.block_frames, again.predictor["order"]) == (8192, 3)


def test_settings_follow_a_parent_and_a_new_shadowing_profile(tmp_path, monkeypatch):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    monkeypatch.setenv("QRES_PROFILE_PATH", os.pathsep.join([str(first_dir), str(second_dir)]))
    write(second_dir, "base", block=4096, order=1)
    write(second_dir, "child", text='[profile]\nextends = "base"\n')
    assert files.codec_settings("child")[0].predictor["order"] == 1
    write(second_dir, "base", block=4096, order=4)
    assert files.codec_settings("child")[0].predictor["order"] == 4
    # A profile of the same name earlier on the search path now wins.
    write(first_dir, "child", block=1024, order=0)
    got = files.codec_settings("child")[0]
    assert (got.block_frames, got.predictor["order"]) == (1024, 0)


def test_settings_are_fresh_copies_and_errors_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("QRES_PROFILE_PATH", str(tmp_path))
    write(tmp_path, "copies", order=2)
    first, _ = files.codec_settings("copies", 3)
    first.predictor["order"] = 4  # a caller's change stays its own
    second, _ = files.codec_settings("copies")
    assert second.predictor["order"] == 2 and (first.max_error, second.max_error) == (3, 0)
    write(tmp_path, "copies", text="[codec]\nblock_samples = -5\n")
    with pytest.raises(ProfileError):
        files.codec_settings("copies")
    write(tmp_path, "copies", order=1)
    assert files.codec_settings("copies")[0].predictor["order"] == 1


def test_a_relative_profile_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", "here", order=1)
    write(tmp_path / "two", "here", order=3)
    monkeypatch.chdir(tmp_path / "one")
    assert files.codec_settings("here.toml")[0].predictor["order"] == 1
    monkeypatch.chdir(tmp_path / "two")
    assert files.codec_settings("here.toml")[0].predictor["order"] == 3


def test_settled_files_are_checked_by_their_status_alone(tmp_path, monkeypatch):
    """Files last changed long enough ago are not read again while their status (inode,
    size, times) stays the same; a change of status is still seen."""
    import time

    monkeypatch.setenv("QRES_PROFILE_PATH", str(tmp_path))
    write(tmp_path, "settled", order=1)
    later = time.time_ns() + 2 * files._SETTLE_NS
    monkeypatch.setattr(files.time, "time_ns", lambda: later)  # the files look settled
    assert files.codec_settings("settled")[0].predictor["order"] == 1
    reads = []
    real = files._sources
    monkeypatch.setattr(files, "_sources", lambda chain: reads.append(chain) or real(chain))
    assert files.codec_settings("settled")[0].predictor["order"] == 1
    assert reads == []  # the status alone said unchanged
    # A new file put in its place (as editors and atomic writers do) has another inode.
    write(tmp_path, "new", order=3).replace(tmp_path / "settled.toml")
    assert files.codec_settings("settled")[0].predictor["order"] == 3


def test_unsettled_files_are_compared_by_content(tmp_path, monkeypatch):
    """A file changed within the timestamp step of the last read may keep its status; it is
    compared by content until it has settled."""
    monkeypatch.setenv("QRES_PROFILE_PATH", str(tmp_path))
    path = write(tmp_path, "racy", block=4096, order=2)
    assert files.codec_settings("racy")[0].predictor["order"] == 2
    stat = path.stat()
    write(tmp_path, "racy", block=8192, order=3)  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert files.codec_settings("racy")[0].predictor["order"] == 3
