"""``qres keys``: key files 0600 and atomic, refused when open to others, secrets never shown."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import run_qres

from qres.kernel.errors import IntegrityError, QresError
from qres.trust import identity as idn


def _env(tmp_path):
    return {"QRES_HOME": str(tmp_path / "home")}


def _secret_fragments(path) -> list[bytes]:
    """Pieces of the private key as it could leak: PEM body lines and the raw seed in hex."""
    from cryptography.hazmat.primitives import serialization

    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    return [*lines, raw.hex().encode(), raw.hex().upper().encode(), raw]


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_new_show_export_with_default_path(tmp_path):
    env = _env(tmp_path)
    made = run_qres("keys", "new", "--json", env=env)
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    key = tmp_path / "home" / "node.key"
    assert info["key_file"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert info["did"] == "did:qres:" + info["public_key"]
    shown = run_qres("keys", "show", "--json", env=env)
    assert json.loads(shown.stdout)["did"] == info["did"]
    pem = run_qres("keys", "export-public", env=env)
    assert pem.returncode == 0 and pem.stdout.startswith(b"-----BEGIN PUBLIC KEY-----")
    did = run_qres("keys", "export-public", "--format", "did", env=env)
    assert did.stdout.decode().strip() == info["did"]
    out = tmp_path / "pub.hex"
    run_qres("keys", "export-public", "--format", "hex", "-o", str(out), env=env)
    assert out.read_text().strip() == info["public_key"]
    texts = made.stdout + made.stderr + shown.stdout + shown.stderr + pem.stdout + did.stdout
    plain = run_qres("keys", "show", env=env)
    texts += plain.stdout + plain.stderr
    for fragment in _secret_fragments(key):
        assert fragment not in texts


def test_new_refuses_to_overwrite_and_writes_atomically(tmp_path):
    target = tmp_path / "k" / "a.key"
    first = run_qres("keys", "new", "-o", str(target))
    assert first.returncode == 0, first.stderr
    before = target.read_bytes()
    again = run_qres("keys", "new", "-o", str(target))
    assert again.returncode == 1 and b"already exists" in again.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.key"]  # no temp left behind
    forced = run_qres("keys", "new", "-o", str(target), "--force")
    assert forced.returncode == 0 and target.read_bytes() != before
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_open_key_file_is_refused(tmp_path):
    target = tmp_path / "a.key"
    run_qres("keys", "new", "-o", str(target))
    for mode in (0o640, 0o604, 0o620):
        os.chmod(target, mode)
        out = run_qres("keys", "show", "--key", str(target))
        assert out.returncode == 1, mode
        assert b"chmod 600" in out.stderr and b"Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        for fragment in _secret_fragments(target):
            assert fragment not in out.stderr + out.stdout


def test_errors_are_one_line(tmp_path):
    missing = run_qres("keys", "show", "--key", str(tmp_path / "none.key"))
    assert missing.returncode == 1 and b"qres keys new" in missing.stderr
    garbage = tmp_path / "g.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    os.chmod(garbage, 0o600)
    out = run_qres("keys", "show", "--key", str(garbage))
    assert out.returncode == 5 and len(out.stderr.strip().splitlines()) == 1
    assert b"not base64" not in out.stderr
    bad_format = run_qres("keys", "export-public", "--key", str(garbage), "--format", "xml")
    assert bad_format.returncode == 2 and b"use pem, hex or did" in bad_format.stderr


def test_library_round_trip_and_foreign_keys(tmp_path):
    me = idn.Identity.generate()
    path = idn.save_identity(me, tmp_path / "sub" / "me.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    back = idn.load_identity(path)
    assert back.did == me.did and repr(back) == f"Identity({me.did})"
    assert idn.public_key_of(me.did) == me.public_key
    msg = b"hello"
    assert idn.verify_signature(me.public_key, me.sign(msg), msg)
    assert not idn.verify_signature(me.public_key, me.sign(msg), msg + b"!")
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(me)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(IntegrityError, match="not an Ed25519 key"):
        idn.parse_private_key(other, "x.key")
    with pytest.raises(IntegrityError):
        idn.parse_private_key(b"x" * (idn.MAX_KEY_FILE_BYTES + 1), "big.key")
    for bad in ["did:qres:zz", "did:web:" + "0" * 64, "did:qres:" + "A" * 64, 5]:
        with pytest.raises(QresError):
            idn.public_key_of(bad)


def test_special_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(QresError, match="not a regular file"):
        idn.load_identity(fifo)
    with pytest.raises(OSError):
        idn.load_identity(tmp_path)
