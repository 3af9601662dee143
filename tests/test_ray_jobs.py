"""Job submission end to end: a head and a worker started with `ray start` on this machine, a smoke sweep
submitted with `ray job submit`, its trials in the results store; both nodes stopped by their own PIDs.

Token authentication is switched off consistently (RAY_AUTH_MODE=disabled on both nodes and for `ray job
submit`) because this cluster listens on the loopback interface only; cluster.yaml uses token mode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from raygen.results import read_runs

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> list[str]:
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc (Linux; no psutil dependency)."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(proc: subprocess.Popen | None) -> set[int]:
    if proc is None:
        return set()
    children, found, todo = _children(), set(), [proc.pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    end = time.time() + timeout
    while time.time() < end and any(alive(p) for p in pids):
        time.sleep(0.5)
    return {p for p in pids if alive(p)}


def stop(proc: subprocess.Popen, tree: set[int]) -> set[int]:
    """SIGTERM the `ray start --block` process, then end by PID whatever of the tree it started is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = wait_gone(tree, 30)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        left = wait_gone(left, 15)
    return left


def wait_for_nodes(dashboard: str, env: dict, count: int, timeout: float = 180.0) -> None:
    code = (
        "import ray, sys; ray.init(address=sys.argv[1]); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    start = time.time()
    while time.time() - start < timeout:
        out = subprocess.run([sys.executable, "-c", code, dashboard], env=env, capture_output=True, text=True,
                             check=False)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise AssertionError(f"the {count} Ray nodes did not come up: {out.stderr[-2000:]}")


def test_ray_job_submit_runs_a_sweep_into_the_store(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    # Each node gets its own Ray temp dir: nodes sharing one machine would otherwise share the runtime-env
    # cache, and one node's cleanup of the job's working_dir removes the driver's current directory.
    head_tmp = tempfile.mkdtemp(prefix="rgh", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    worker_tmp = tempfile.mkdtemp(prefix="rgw", dir="/tmp")
    logs = tmp_path / "logs"
    logs.mkdir()
    head_log = open(logs / "head.log", "w")  # noqa: SIM115 - closed in the finally below
    worker_log = open(logs / "worker.log", "w")  # noqa: SIM115
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={head_tmp}",
         f"--ray-client-server-port={free_port()}", *node_ports()],
        env=env, stdout=head_log, stderr=subprocess.STDOUT,
    )
    worker = None
    tree: set[int] = set()
    try:
        time.sleep(5)
        worker = subprocess.Popen(
            [RAY, "start", "--block", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
             "--node-ip-address=127.0.0.1", f"--temp-dir={worker_tmp}", *node_ports()],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )
        wait_for_nodes(f"127.0.0.1:{gcs}", env, 2)

        job_dir = tmp_path / "job"
        job_dir.mkdir()
        spec = {
            "name": "jobs",
            "algorithm": "walkback",
            "dataset": "toy2d:swissroll",
            "fixed": {"algo.walkback_steps": 2, "algo.net.hidden": [16], "algo.reversibility_steps": 0,
                      "eval.parzen": False, "train.batch_size": 64},
            "metric": {"name": "valid/lower_bound", "goal": "maximize"},
            "method": "tpe",
            "run_cap": 3,
            "parameters": {"train.lr": {"min": 1.0e-4, "max": 3.0e-3, "log": True}},
        }
        (job_dir / "sweep.yaml").write_text(yaml.safe_dump(spec))
        results = tmp_path / "results"
        submit = subprocess.run(
            [RAY, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", f"--working-dir={job_dir}",
             "--", "raygen", "sweep", "sweep.yaml", "--smoke", "--results", str(results)],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
        assert "succeeded" in (submit.stdout + submit.stderr).lower()
        # The job's log ends with the sweep's summary: the best trial and the next commands.
        assert "best valid/lower_bound (maximize): " in submit.stdout and f"raygen report {results}" in submit.stdout

        # The README's data-parallel command, against the same cluster: one worker on each node.
        train = subprocess.run(
            ["raygen", "train", "walkback", "--dataset", "toy2d:swissroll", "--steps", "40",
             "--results", str(tmp_path / "train"), "--workers", "2", "--address", f"127.0.0.1:{gcs}",
             "algo.walkback_steps=2", "algo.net.hidden=[16]", "algo.reversibility_steps=0", "eval.parzen=false",
             "train.batch_size=64", "train.eval_every=20", "train.checkpoint_every=20", "eval.test_examples=50",
             "eval.train_examples=20", "eval.repeats=1"],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
        tree = descendants(head) | descendants(worker)
    finally:
        tree |= descendants(head) | descendants(worker)
        if worker is not None:
            left = stop(worker, tree)
        left = stop(head, tree)
        head_log.close()
        worker_log.close()
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)
    assert head.returncode is not None and worker.returncode is not None
    assert not left, f"processes of the test cluster survived: {sorted(left)}"

    runs = read_runs(results)
    assert len(runs) == 3 and (runs["sweep_id"] == "jobs-smoke").all()
    assert (runs["status"] == "completed").all(), runs[["run_id", "status", "error"]]
    assert (runs["steps"] == 60).all()
    assert json.loads((results / "sweeps" / "jobs-smoke.json").read_text())["num_samples"] == 3
    (row,) = read_runs(tmp_path / "train").itertuples()
    assert (row.run_id, row.status, row.workers, row.steps) == (train.stdout.split()[-1], "completed", 2, 40)
