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
