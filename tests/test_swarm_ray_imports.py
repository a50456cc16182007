"""Ray workers import the installed qres, never a source checkout the driver runs from: Ray
puts the driver's working directory on its workers' import path, and a checkout there would
shadow the installed package (its Cython modules are not built in place)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent


def test_workers_do_not_see_the_directory_the_driver_runs_in(monkeypatch):
    from qres.swarm.ray_engine import RayCluster

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")

    def worker_path() -> list[str]:  # local: shipped by value, the worker imports no test
        import os
        import sys

        return [os.path.abspath(p or os.curdir) for p in sys.path] + [os.getcwd()]

    monkeypatch.chdir(REPO)
    with RayCluster(None, 1) as cluster:
        seen = cluster.ray.get(cluster.ray.remote(num_cpus=0.1)(worker_path).remote())
    assert os.getcwd() == str(REPO)  # the driver is back where it was
    assert str(REPO) not in seen
    assert not ray.is_initialized()  # the Ray it started is stopped
