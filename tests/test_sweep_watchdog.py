"""A driver of raygen's private local Ray cluster killed outright (SIGKILL: nothing of it runs) leaves no Ray
process behind. Without the watchdog (raygen/engine/ray_watchdog.py) the raylet's DashboardAgent and
RuntimeEnvAgent outlived it for good (they hang reporting the raylet's death to the dead GCS and ignore
SIGTERM). One Ray start on one CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raygen.engine.ray_watchdog import _stat

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]

DRIVER = """
import time
from raygen.engine.ray_train import ensure_ray
from raygen.engine.ray_watchdog import _descendants
import ray

ensure_ray(num_cpus=1, log_to_driver=False)
raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
while True:  # the agents start with the raylet; wait until both are there
    kids = _descendants(raylet)
    agents = {p: s for p, s in kids.items() if "Agent" in open(f"/proc/{p}/cmdline").read()}
    if len(agents) >= 2:
        break
    time.sleep(0.2)
print("AGENTS", " ".join(f"{p}:{s}" for p, s in agents.items()), flush=True)
time.sleep(600)
"""


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def _wait(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the watchdog reads /proc (Linux)")
def test_agents_of_a_killed_drivers_private_cluster_do_not_outlive_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=tmp_path, env=env)
    agents: dict[int, int] = {}
    try:
        line = driver.stdout.readline()  # blocks until Ray is up (or the driver died: an empty line)
        assert line.startswith("AGENTS "), f"the driver did not start Ray: {line!r}"
        agents = {int(p): int(s) for p, s in (item.split(":") for item in line.split()[1:])}
        assert len(agents) >= 2
        time.sleep(2)  # the watchdog looks every 0.2 s at first: let it see the agents that just started
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        # GRACE_S after the driver's end the watchdog kills them; a generous bound against a hang
        assert _wait(lambda: not any(_alive(p, s) for p, s in agents.items()), timeout=60), \
            "Ray's agents outlived their killed driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid, start in agents.items():  # never leave them to the next test (only these pids, still them)
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)


def test_the_watchdog_touches_nothing_but_a_raylet_its_driver_started():
    """It kills with SIGKILL: anything but a raylet child of the named driver (pid 1, this process, a wrong
    parent) is refused before a single process is noted."""
    from raygen.engine.ray_watchdog import _is_raylet_of

    assert not _is_raylet_of(1, 0)
    assert not _is_raylet_of(os.getpid(), os.getppid())  # a live child of that parent, but not a raylet
    assert not _is_raylet_of(os.getpid(), os.getpid())
