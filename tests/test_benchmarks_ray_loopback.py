"""The Ray benchmarks start Ray as raygen does (`ensure_ray`): a private cluster whose every socket is on
127.0.0.1, with the few CPUs asked for. They called `ray.init` themselves, without the loopback node address
(Ray then binds its servers to every interface). Ray itself is not started here: `ray.init` is stopped at the
call and its arguments are checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Started(Exception):
    pass


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, cpus", [("bench_ray_train", 2), ("bench_sweep", 2)])
def test_ray_benchmarks_start_a_private_loopback_cluster(name, cpus, monkeypatch):
    import ray

    from raygen.engine import local

    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise _Started

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # someone's cluster: a benchmark must not join it
    module = _load(name)
    monkeypatch.setattr(local, "run_local", lambda *a, **k: None)  # the in-process baseline: not measured here
    if hasattr(module, "throughput"):
        monkeypatch.setattr(module, "throughput", lambda root: 1.0)
    if hasattr(module, "calibrate"):
        monkeypatch.setattr(module, "calibrate", lambda seconds: 20)
    monkeypatch.setattr(sys, "argv", [name, "--smoke"])
    with pytest.raises(_Started):
        module.main()
    (kwargs,) = calls
    assert kwargs["address"] == "local" and kwargs["num_cpus"] == cpus
    assert kwargs["_node_ip_address"] == "127.0.0.1" and kwargs["dashboard_host"] == "127.0.0.1"
