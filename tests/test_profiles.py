"""Profile resolution and validation: extends, cycles, origins, and one-line errors."""

from __future__ import annotations

import json

import attrs
import pytest
from conftest import run_qres
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import profiles
from qres.kernel.config import integer, one_of
from qres.kernel.errors import ProfileError
from qres.kernel.hookspecs import hookimpl
from qres.kinds.transport import Message, Transport, TransportStats


class _Queue(Transport):
    """A transport used by these tests: one FIFO or LIFO of messages per node, no delay."""

    name = "test-queue"

    def __init__(self, config=None):
        super().__init__(config)
        self._boxes, self._seq = {}, 0

    @property
    def now(self):
        return 0

    @property
    def stats(self):
        return TransportStats(sent_messages=self._seq)

    def send(self, src, dst, payload):
        self._boxes.setdefault(dst, []).append(Message(self._seq, src, dst, payload, 0, 0))
        self._seq += 1
        return True

    def receive(self, node, limit=None):
        box = self._boxes.pop(node, [])
        return box[::-1] if getattr(self.config, "mode", "fifo") == "lifo" else box

    def advance(self, dt):
        pass

    @attrs.frozen
    class Config:
        depth: int = attrs.field(default=8, validator=integer(1, 1024))
        mode: str = attrs.field(default="fifo", validator=one_of("fifo", "lifo"))

    @classmethod
    def memory_bytes(cls, config):
        return config.depth * 1000


class _Stack(_Queue):
    name = "test-stack"

    @attrs.frozen
    class Config:
        height: int = attrs.field(default=2, validator=integer(1, 9))


class _TestPlugins:
    @hookimpl
    def register_transports(self, register):
        register(_Queue)
        register(_Stack)


@pytest.fixture
def queues(register_plugin):
    register_plugin(_TestPlugins(), "test-queues")


def write(folder, name, text):
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_extends_merges_tables_and_records_origins(tmp_path, queues):
    write(
        tmp_path,
        "base",
        '[profile]\ndescription = "base"\n'
        '[codec]\nblock_samples = 1024\ndtype = "int32"\n'
        '[swarm]\ntransport = { use = "test-queue", depth = 4, mode = "lifo" }\n',
    )
    child = write(
        tmp_path,
        "child",
        '[profile]\nextends = "base"\n'
        '[codec]\nblock_samples = 2048\n[swarm]\ntransport = { use = "test-queue", depth = 16 }\n',
    )
    profile = profiles.load(str(child))
    assert profile.name == "child"
    assert profile.data["codec"] == {"block_samples": 2048, "dtype": "int32"}
    assert profile.data["swarm"]["transport"] == {"use": "test-queue", "depth": 16, "mode": "lifo"}
    assert profile.data["profile"]["extends"] == "base"
    assert profile.description == "base"
    assert [p.name for p in profile.chain] == ["base.toml", "child.toml"]
    assert str(profile.where("codec", "dtype")).startswith(str(tmp_path / "base.toml"))
    assert str(profile.where("codec", "block_samples")).startswith(str(child))


def test_different_plugin_replaces_the_parent_table(tmp_path, queues):
    write(tmp_path, "base", '[swarm]\ntransport = { use = "test-queue", depth = 4 }\n')
    child = write(
        tmp_path,
        "child",
        '[profile]\nextends = "base"\n[swarm]\ntransport = { use = "test-stack", height = 3 }\n',
    )
    profile = profiles.load(str(child))
    assert profile.data["swarm"]["transport"] == {"use": "test-stack", "height": 3}


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a", '[profile]\nextends = "b.toml"\n')
    write(tmp_path, "b", '[profile]\nextends = "a.toml"\n')
    with pytest.raises(ProfileError, match=r"cycle \(a.toml -> b.toml -> a.toml\)"):
        profiles.load(str(tmp_path / "a.toml"))


def test_missing_parent_is_an_error(tmp_path):
    path = write(tmp_path, "orphan", '[profile]\nextends = "no-such-parent"\n')
    with pytest.raises(ProfileError, match=r"orphan.toml: profile.extends: unknown profile"):
        profiles.load(str(path))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            '[codec]\nblock_samples = "big"\n',
            r"bad.toml: codec.block_samples: bad value 'big'; "
            r"allowed: an integer in \[16, 16777216\]",
        ),
        ('[codec]\ndtype = "int12"\n', r"codec.dtype: bad value 'int12'; allowed: one of"),
        ("[codec]\nblocksize = 4\n", r"codec.blocksize: unknown setting 'blocksize'"),
        ("[warp]\nspeed = 9\n", r"bad.toml: warp: unknown section; allowed sections: profile"),
        (
            '[swarm]\ntransport = { use = "no-such" }\n',
            r"swarm.transport.use: unknown transport 'no-such'",
        ),
        (
            '[swarm]\ntransport = { use = "test-queue", depth = 0 }\n',
            r"swarm.transport.depth: bad value 0; allowed: an integer in \[1, 1024\]",
        ),
        (
            '[swarm]\ntransport = { use = "test-queue", mode = "random" }\n',
            r"swarm.transport.mode: bad value 'random'; allowed: one of 'fifo', 'lifo'",
        ),
        ('[swarm]\ntransport = "test-queue"\n', r"swarm.transport: expected a table"),
        ("[swarm]\nfrobs = 1\n", r"swarm.frobs: unknown key; allowed keys: aggregator, transport"),
        ('[lora]\nlayers = { use = "x" }\n', r"lora.layers: expected an array of tables"),
        ("[profile\n", r"bad.toml: invalid TOML"),
    ],
)
def test_bad_profiles_name_file_key_value_and_allowed(tmp_path, queues, text, pattern):
    path = write(tmp_path, "bad", text)
    with pytest.raises(ProfileError, match=pattern):
        profiles.load(str(path))


def test_error_in_parent_names_the_parent_file(tmp_path):
    write(tmp_path, "parent", "[codec]\nblock_samples = -5\n")
    child = write(tmp_path, "kid", '[profile]\nextends = "parent"\n')
    with pytest.raises(ProfileError) as info:
        profiles.load(str(child))
    assert str(info.value).startswith(str(tmp_path / "parent.toml") + ": codec.block_samples")


def test_profile_path_search(tmp_path, monkeypatch):
    write(tmp_path, "mine", '[profile]\ndescription = "on the search path"\n')
    monkeypatch.setenv("QRES_PROFILE_PATH", str(tmp_path))
    assert "mine" in profiles.available()
    assert profiles.load("mine").description == "on the search path"


def test_oversize_and_binary_profiles_are_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (profiles.MAX_PROFILE_BYTES + 1))
    with pytest.raises(ProfileError, match="too large"):
        profiles.load(str(big))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[profile]")
    with pytest.raises(ProfileError, match="not UTF-8"):
        profiles.load(str(binary))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse_toml_raises_only_profile_error(raw):
    try:
        data = profiles.parse_toml(raw, "fuzz.toml")
    except ProfileError as exc:
        assert str(exc).startswith("fuzz.toml: ")
    else:
        assert isinstance(data, dict)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet='[]=\n "abcdeflkoprstuxy0123456789.{},_-', max_size=200))
def test_fuzz_profile_text_raises_only_profile_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "f.toml"
    path.write_text(text)
    try:
        profiles.load(str(path))
    except ProfileError:
        pass


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_cli_bad_profile_is_one_line_exit_3(tmp_path):
    cases = {
        "unknown-key": "[codec]\nblocksize = 4\n",
        "wrong-type": '[codec]\nblock_samples = "x"\n',
        "unknown-plugin": '[swarm]\ntransport = { use = "no-such" }\n',
        "cycle": '[profile]\nextends = "cycle.toml"\n',
    }
    for name, text in cases.items():
        path = write(tmp_path, name, text)
        for command in ("show", "check"):
            out = run_qres("profiles", command, str(path))
            assert out.returncode == 3, (name, out.stderr)
            lines = out.stderr.decode().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("qres: error: "), (name, lines)
            assert str(path) in lines[0]
    debug = run_qres("--debug", "profiles", "show", str(tmp_path / "cycle.toml"))
    assert debug.returncode != 0 and b"Traceback" in debug.stderr


def test_cli_show_json_of_a_path(tmp_path):
    path = write(tmp_path, "plain", '[profile]\ndescription = "d"\n[codec]\nblock_samples = 512\n')
    out = run_qres("profiles", "show", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["codec"] == {"block_samples": 512}
    assert data["profile"]["name"] == "plain"


def test_every_bundled_profile_resolves_and_fits_its_hardware():
    from qres.kernel import budget

    names = sorted(profiles.bundled_dir().glob("*.toml"))
    assert {p.stem for p in names} >= {
        "edge",
        "esp32",
        "arduino-mega",
        "cortex-a55",
        "rpi4",
        "server",
        "fast",
    }
    for path in names:
        report = budget.check(profiles.load(path.stem))
        assert report.fits, report.summary()
    small = budget.check(profiles.load("arduino-mega"))
    assert small.budget_bytes is not None and small.budget_bytes <= 8192


def test_child_key_error_names_the_child_file(tmp_path, queues):
    write(tmp_path, "base", '[swarm]\ntransport = { use = "test-queue", depth = 4 }\n')
    child = write(
        tmp_path,
        "kid",
        '[profile]\nextends = "base"\n[swarm]\ntransport = { use = "test-queue", depth = 0 }\n',
    )
    with pytest.raises(ProfileError) as info:
        profiles.load(str(child))
    assert str(info.value).startswith(f"{child}: swarm.transport.depth: bad value 0")


def test_cli_check_exit_code_when_the_pipeline_does_not_fit(tmp_path):
    path = write(
        tmp_path, "tiny", '[profile]\nextends = "arduino-mega"\n[codec]\nblock_samples = 65536\n'
    )
    out = run_qres("profiles", "check", str(path))
    assert out.returncode == 1
    assert b"DOES NOT FIT" in out.stdout
    ok = run_qres("profiles", "check", "esp32", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits"] is True


def test_sections_are_typed_once_with_their_defaults(tmp_path):
    from qres.codec.container import DEFAULT_BLOCK_FRAMES

    path = write(tmp_path, "typed", "[codec]\nblock_samples = 512\n[swarm]\nnodes = 7\n")
    profile = profiles.load(str(path))
    codec = profile.settings("codec")
    assert isinstance(codec, profiles.CodecTable)
    assert (codec.block_samples, codec.block_frames, codec.dtype) == (512, 512, "int16")
    assert profile.settings("swarm").nodes == 7
    assert profile.settings("codec") is codec  # built once
    bare = profiles.load(str(write(tmp_path, "bare", '[profile]\ndescription = "d"\n')))
    assert bare.settings("codec").block_frames == DEFAULT_BLOCK_FRAMES
