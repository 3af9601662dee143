"""The private local Ray cluster raygen starts (train --workers, sweeps) listens on the loopback interface only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` to list listening sockets")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of every listening TCP socket and bound UDP socket of `pids`."""
    text = subprocess.run(["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True,
                          check=True).stdout
    found = []
    for line in text.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((line.split()[4], ",".join(re.findall(r'"([^"]+)"', line))))
    return found


def _pid() -> int:
    return os.getpid()


def test_private_cluster_binds_every_socket_to_loopback(monkeypatch):
    import ray

    from raygen.engine.ray_train import ensure_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    assert ensure_ray(None, num_cpus=1)
    pid = ray.remote(_pid)
    try:
        @ray.remote(num_cpus=0.5)
        class Echo:  # an actor and a task: worker processes with their own servers
            def ping(self):
                return os.getpid()

        actor = Echo.remote()
        assert ray.get(actor.ping.remote()) != os.getpid()
        assert ray.get(pid.options(num_cpus=0.5).remote()) != os.getpid()
        sockets = _listening(_descendants(os.getpid()))
        names = " ".join(name for _, name in sockets)
        # every kind of Ray process was found, so each one's sockets are checked below: the GCS, the raylet, the
        # actor's worker, the dashboard agent and the runtime-env agent (`ss` cuts names to 15 characters)
        for part in ("gcs_server", "raylet", "ray::Echo", "ray::DashboardA", "ray::RuntimeEnv"):
            assert part in names, (part, sockets)
        exposed = [(addr, name) for addr, name in sockets
                   if not re.match(r"^(127\.\d+\.\d+\.\d+|\[::ffff:127\.\d+\.\d+\.\d+\]|\[::1\]):\d+$", addr)]
        assert not exposed, f"sockets on other interfaces than loopback: {exposed}"
    finally:
        ray.shutdown()
