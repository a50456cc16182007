"""Golden reports pin the swarm simulation and the aggregator grid: the same runs give the same
bytes as the stored reports (a change of behaviour, however small, fails here)."""

from __future__ import annotations

import pytest
from make_swarm_golden import BENCH_GOLDEN, GOLDEN, SWARMS, bench_grid, swarm_report

REGENERATE = "if the change is deliberate, run tests/make_swarm_golden.py and say why"


@pytest.mark.parametrize("name", sorted(SWARMS))
def test_swarm_report_bytes_are_reproduced(name, tmp_path):
    golden = (GOLDEN / name).read_bytes()
    assert swarm_report(name, tmp_path) == golden, f"the swarm report {name} changed; {REGENERATE}"


def test_swarm_goldens_exercise_the_defence():
    import json

    storm = json.loads((GOLDEN / "swarm-storm.extreme.json").read_bytes())
    flip = json.loads((GOLDEN / "swarm-100.sign-flip.json").read_bytes())
    for report in (storm, flip):
        assert report["audits"]["failed_byzantine"] > 0
        assert report["bans_by_cause"]["audit_byzantine"] > 0
        assert report["bans_by_cause"]["group_byzantine"] == 0  # similarity never bans
        assert report["banned_honest"] == 0
        assert "attack_free" in report
    assert storm["joined_mid_run"] > 0 and storm["regime_rounds"]["storm"] > 0
    assert storm["flags"]["grubbs_honest"] + storm["flags"]["grubbs_byzantine"] > 0
    assert storm["screened_updates"]["rejected_byzantine"] > 0


def test_bench_grid_bytes_are_reproduced(tmp_path):
    golden = (GOLDEN / BENCH_GOLDEN).read_bytes()
    assert bench_grid(tmp_path) == golden, f"the aggregator grid changed; {REGENERATE}"


def test_recording_bytes_are_reproduced_and_audit_as_pinned(tmp_path):
    """The recorded stream pins every format a recording holds (``QRPS`` version 4, ``QRUP``
    packets with inline proofs and round-step digests, ``QRAR`` responses, round-step
    evidence with its ``QRST`` records); auditing it names exactly the two poisoners."""
    import io

    from make_swarm_golden import RECORDING, STEPS_PROFILE, recording

    from qres.cli.audit_cmd import _step_rule
    from qres.trust.audit import audit_stream

    golden = (GOLDEN / RECORDING).read_bytes()
    assert recording(tmp_path) == golden, f"the recording {RECORDING} changed; {REGENERATE}"
    profile = tmp_path / "steps.toml"
    profile.write_text(STEPS_PROFILE)
    report = audit_stream(io.BytesIO(golden), RECORDING, None, _step_rule(str(profile)))
    assert {f.check for f in report.failures} == {"wrong-step"}
    assert len({f.did for f in report.failures}) == 2
    assert sum(s.steps_verified for s in report.senders.values()) > 0
