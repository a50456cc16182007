"""``qres audit FILE``: clean recordings pass; each kind of fault is named with sender and round."""

from __future__ import annotations

import hashlib
import io
import json
import random

import attrs
import pytest
from conftest import run_qres

from qres.trust import audit as au
from qres.trust import packet as pk
from qres.trust.identity import Identity

NODES = [Identity.from_seed(hashlib.sha256(b"node%d" % i).digest()) for i in range(3)]


def _rand(seed):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def _round(identity, r, weights, seed):
    claim = au.Claim(tuple((i * 37 + r) % 200 - 100 for i in range(len(weights))), 1000 + r, 7)
    return au.prepare(
        identity,
        r,
        bytes([r, seed]) * 8,
        weights,
        claim,
        randbytes=_rand(seed * 100 + r),
        inline_proof=True,
    )


@pytest.fixture(scope="module")
def recording():
    records = []
    for r in range(3):
        for i, node in enumerate(NODES):
            packet, response = _round(node, r, [i * 1000 + r] * 6, i)
            records.append((1, packet.encode()))
            if r == 0:  # a first packet: its genesis base needs no round step
                records.append((2, response.encode()))
    return records


def _write(tmp_path, records, name="s.qrps"):
    buf = io.BytesIO()
    writer = pk.StreamWriter(buf)
    for kind, data in records:
        writer.write(data, kind)
    writer.finish()
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def _find(records, identity, round_):
    for kind, data in records:
        if kind == 1:
            packet = pk.decode(data)
            if packet.sender == identity.public_key and packet.round == round_:
                return packet
    raise AssertionError("no such packet")


@pytest.mark.real_process  # the installed console script, as a user runs it
def test_clean_recording_passes(tmp_path, recording):
    path = _write(tmp_path, recording)
    out = run_qres("audit", str(path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["packets"] == 9 and report["audit_responses"] == 3
    assert all(s["proofs_verified"] == 3 and s["audits_passed"] == 1 for s in report["senders"])
    table = run_qres("audit", str(path))
    assert table.returncode == 0 and NODES[0].did[:21].encode() in table.stdout


def test_each_fault_is_reported(tmp_path, recording):
    alice, bob, carol = NODES
    records = list(recording)
    # a replay of Alice's round-0 packet
    records.append(recording[0])
    # Bob's round-2 packet with one update value changed and re-signed: the proof fails
    bob2 = _find(recording, bob, 2)
    tampered = attrs.evolve(
        bob2, nonce=b"t" * 16, update=(bob2.update[0] + 1, *bob2.update[1:])
    ).signed(bob)
    records.append((1, tampered.encode()))
    # Carol's round-2 packet with a flipped signature bit
    bad_sig = bytearray(_find(recording, carol, 2).encode())
    bad_sig[-3] ^= 4
    records.append((1, bytes(bad_sig)))
    # An audit response for a packet nobody sent, and one opening other weights
    stray = _round(alice, 9, [5] * 6, 7)[1]
    records.append((2, stray.encode()))
    _, real = _round(bob, 0, [1000] * 6, 1)
    lie = attrs.evolve(real, weights=[w + 1 for w in real.weights]).signed(bob)
    records.append((2, lie.encode()))
    # Carol's round-1 response: its packet claims a genesis base after her round-0 packet
    records.append((2, _round(carol, 1, [2001] * 6, 2)[1].encode()))
    # A malformed packet record
    records.append((1, b"QRUP\x02" + bytes(300)))
    path = _write(tmp_path, records)
    out = run_qres("audit", str(path), "--json")
    assert out.returncode == 5
    assert b"audit failed" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    report = json.loads(out.stdout)
    found = {(f["check"], f["did"], f["round"]) for f in report["failures"]}
    assert ("replay", alice.did, 0) in found
    assert ("bad-proof", bob.did, 2) in found
    assert ("equivocation", bob.did, 2) in found
    assert ("bad-signature", carol.did, 2) in found
    assert ("orphan-response", alice.did, 9) in found
    assert ("bad-opening", bob.did, 0) in found
    assert ("bad-step", carol.did, 1) in found
    assert any(f["check"] == "malformed" for f in report["failures"])
    text = run_qres("audit", str(path))
    assert text.returncode == 5 and b"bad-opening" in text.stdout


def test_truncated_and_foreign_files(tmp_path, recording):
    data = _write(tmp_path, recording).read_bytes()
    cut = tmp_path / "cut.qrps"
    cut.write_bytes(data[:-10])
    out = run_qres("audit", str(cut), "--json")
    assert out.returncode == 5
    assert json.loads(out.stdout)["failures"][-1]["check"] == "bad-stream"
    foreign = tmp_path / "f.bin"
    foreign.write_bytes(b"hello world")
    bad = run_qres("audit", str(foreign))
    assert bad.returncode == 5 and bad.stdout == b""
    assert bad.stderr.count(b"\n") == 1 and b"not a qres packet stream" in bad.stderr
    missing = run_qres("audit", str(tmp_path / "none"))
    assert missing.returncode == 1 and b"no such file" in missing.stderr
    stdin = run_qres("audit", "-", "--json", input=data)
    assert stdin.returncode == 0 and json.loads(stdin.stdout)["ok"]


def test_a_cut_at_a_record_boundary_fails(tmp_path, recording):
    """Dropping whole records from the end leaves no torn record; the end record's count and
    hash catch it."""
    whole = _write(tmp_path, recording).read_bytes()
    shorter = _write(tmp_path, recording[:-1], name="short.qrps").read_bytes()
    boundary = shorter[: -(5 + 40)]  # the records of a shorter stream, without its end
    assert whole.startswith(boundary)
    cut = tmp_path / "cut.qrps"
    cut.write_bytes(boundary)
    out = run_qres("audit", str(cut), "--json")
    assert out.returncode == 5
    failure = json.loads(out.stdout)["failures"][-1]
    assert failure["check"] == "bad-stream" and "without its end record" in failure["detail"]
    old = tmp_path / "v1.qrps"
    old.write_bytes(b"QRPS\x01\0\0\0" + boundary[8:])
    refused = run_qres("audit", str(old))
    assert refused.returncode == 5 and refused.stderr.count(b"\n") == 1
    assert b"version 1 has no end record" in refused.stderr


def test_stale_rounds_with_window(tmp_path, recording):
    old = _round(NODES[0], 0, [7] * 6, 50)[0]
    path = _write(tmp_path, [*recording, (1, old.encode())])
    report = au.audit_stream(open(path, "rb"), window=1)
    assert [(f.check, f.round) for f in report.failures] == [
        ("stale-round", 0),
        ("equivocation", 0),
    ]


def test_a_recorded_swarm_replays_its_round_steps_and_names_base_poisoning(tmp_path):
    """``qres swarm simulate --record`` commits every packet to its node's real round step;
    ``qres audit`` replays each audited one with the profile's aggregator: honest nodes'
    steps check out, a node that trains honestly from a poisoned base fails ``wrong-step``."""
    prof = tmp_path / "steps.toml"
    prof.write_text('[profile]\nextends = "swarm-100"\n[swarm]\naudit_rate = 1.0\n')
    rec = tmp_path / "poisoned.qrps"
    args = ["--profile", str(prof), "--nodes", "10", "--rounds", "4", "--seed", "3"]
    out = run_qres(
        "swarm", "simulate", *args, "--attack", "base-poison", "--byzantine", "0.2",
        "--record", str(rec), "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    audit = run_qres("audit", str(rec), "--profile", str(prof), "--json")
    assert audit.returncode == 5, audit.stderr
    data = json.loads(audit.stdout)
    failed = {f["did"] for f in data["failures"]}
    assert {f["check"] for f in data["failures"]} == {"wrong-step"}
    assert len(failed) == 2  # the two poisoners, nobody else
    honest = [s for s in data["senders"] if s["did"] not in failed]
    assert all(s["steps_verified"] == s["audits_passed"] > 0 for s in honest)
    # the evidence follows each audited response in the stream
    kinds = [k for k, _ in pk.read_stream(io.BytesIO(rec.read_bytes()))]
    assert pk.RECORD_STEP in kinds
    assert all(kinds[i - 1] == pk.RECORD_AUDIT for i, k in enumerate(kinds) if k == pk.RECORD_STEP)
