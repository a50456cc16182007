"""The audit simulation: 100 nodes, 30 forging Byzantine nodes, 3% audited: every audited
forgery caught, no honest node flagged, proof bytes within 2% of gossip."""

from __future__ import annotations

from qres.trust import auditsim


def test_three_percent_audits_catch_every_audited_forgery():
    report = auditsim.run(
        auditsim.SimSettings(nodes=100, byzantine=30, rounds=10, audit_rate=0.03, seed=1)
    )
    assert report["packets"] == 1000 and report["rejected_by_verifier"] == 0
    assert report["audited_forged"] >= 3, report
    assert report["forged_caught"] == report["audited_forged"]
    assert report["audited_honest"] >= 10
    assert report["honest_flagged"] == 0, report["errors"]
    assert report["proof_share_of_gossip"] <= 0.02


def test_every_kind_of_forgery_meets_its_finding():
    report = auditsim.run(
        auditsim.SimSettings(nodes=60, byzantine=21, rounds=3, audit_rate=0.5, seed=2)
    )
    assert report["honest_flagged"] == 0, report["errors"]
    for kind, stats in report["forgeries"].items():
        assert stats["audited"] >= 1, kind
        assert stats["caught"] == stats["audited"], kind
        assert set(stats["findings"]) <= set(auditsim.FORGERIES[kind]), (kind, stats)


def test_same_seed_same_report():
    small = auditsim.SimSettings(nodes=12, byzantine=4, rounds=2, audit_rate=0.5, seed=3)
    assert auditsim.run(small) == auditsim.run(small)


def test_recording_is_audited_offline():
    import io

    from qres.trust import audit as au

    buf = io.BytesIO()
    report = auditsim.run(
        auditsim.SimSettings(nodes=30, byzantine=10, rounds=2, audit_rate=0.5, seed=4), record=buf
    )
    stream = au.audit_stream(io.BytesIO(buf.getvalue()))
    assert stream.packets == report["packets"]
    checks = {f.check for f in stream.failures}
    # The cryptographic half of the audits is visible offline: forged openings and proofs,
    # all from Byzantine senders.
    assert checks and checks <= {"bad-proof", "bad-opening"}, checks
    assert {f.did for f in stream.failures} <= set(report["byzantine"])
    passed = sum(s.audits_passed for s in stream.senders.values())
    assert passed + len(stream.failures) == stream.audit_responses
