"""Run lifecycle through the `raygen` command: nothing is recorded for inputs that cannot train, expected
failures are one line naming the cause, checkpoints never run code, and a full or read-only store is met
before any work and never leaves a `running` row. (Kills and resume: test_lifecycle_kill.py.)"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from raygen.cli import app
from raygen.engine.local import CheckpointError, read_checkpoint
from raygen.engine.ray_train import load_payload
from raygen.results import read_metrics, read_runs

REPO = Path(__file__).resolve().parents[1]
SMALL = ["eval.parzen_samples=50", "eval.test_examples=50", "eval.train_examples=50", "data.toy_samples=200",
         "train.batch_size=20", "train.log_every=5", "train.eval_every=5", "train.checkpoint_every=5"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(toy, store, *extra, steps=10):
    return invoke("train", toy, "--dataset", "toy2d:circle", "--steps", steps, "--results", store,
                  "--device", "cpu", *SMALL, *extra)


def error_lines(output: str) -> list[str]:
    return [line for line in output.strip().splitlines() if line.strip()]


def assert_one_line(res, *needles, code=2):
    assert res.exit_code == code, res.output
    lines = error_lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def no_runs(store: Path) -> bool:
    return not (store / "runs").exists() or read_runs(store).empty


# ---------------------------------------------------------------------------------------------- item 8


class _System:
    """Unpickling this calls os.system(command): what an edited checkpoint can smuggle in."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("variant", ["torch.save", "pickle"])
def test_a_checkpoint_carrying_code_is_refused_unrun(toy_algorithm, tmp_path, variant):
    store = tmp_path / "store"
    res = train(toy_algorithm, store)
    assert res.exit_code == 0, res.output
    run_id = res.output.strip().splitlines()[-1]
    checkpoint = store / "files" / run_id / "checkpoint.pt"
    marker = tmp_path / "marker"
    hostile = {"config": _System(f"touch {marker}"), "algorithm": {}}
    if variant == "torch.save":
        torch.save(hostile, checkpoint)
    else:
        checkpoint.write_bytes(pickle.dumps(hostile))
    (tmp_path / "ray-ckpt").mkdir()
    shutil.copy(checkpoint, tmp_path / "ray-ckpt" / "checkpoint.pt")

    for command in (["sample", run_id], ["evaluate", run_id]):
        res = invoke(*command, "--results", store)
        assert_one_line(res, "refused", str(checkpoint), "posix.system" if variant == "torch.save" else "")
    with pytest.raises(CheckpointError, match="refused"):
        load_payload(tmp_path / "ray-ckpt")  # Ray Train resume and sweep trial resume read through this
    assert not marker.exists()
    # the check is what keeps the marker away: an unrestricted load of the same file runs the command
    torch.load(checkpoint, weights_only=False) if variant == "torch.save" else pickle.loads(checkpoint.read_bytes())
    assert marker.exists()


def test_a_raygen_checkpoint_loads_and_a_truncated_one_is_named(toy_algorithm, tmp_path):
    res = train(toy_algorithm, tmp_path)
    run_id = res.output.strip().splitlines()[-1]
    checkpoint = tmp_path / "files" / run_id / "checkpoint.pt"
    payload = read_checkpoint(checkpoint)
    assert payload["algorithm"]["updates"] == 10 and payload["config"]["algorithm"] == "meanfit"
    stale = {**payload, "config": {**payload["config"], "train": {**payload["config"]["train"], "gone": 1}}}
    torch.save(stale, checkpoint)  # a config field this raygen does not know (an older or newer raygen)
    assert_one_line(invoke("sample", run_id, "--results", tmp_path), str(checkpoint), "train.gone")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert_one_line(invoke("sample", run_id, "--results", tmp_path), "cannot read checkpoint", str(checkpoint))


# ---------------------------------------------------------------------------------------------- items 7, 11


def test_a_corrupt_data_file_leaves_no_run(toy_algorithm, tmp_path):
    data = tmp_path / "images.npz"
    data.write_bytes(b"PK\x03\x04 this is not a zip archive")
    res = invoke("train", toy_algorithm, "--dataset", f"npz:{data}", "--results", tmp_path / "store")
    assert_one_line(res, str(data))
    assert no_runs(tmp_path / "store")


def test_a_sweep_on_a_data_file_that_does_not_load_is_one_line_and_no_run(tmp_path, monkeypatch):
    """Each trial loaded the data after writing its row: a sweep on a corrupt file left one `failed` row per
    trial and exited 0. The driver loads it first, before Ray starts."""
    import yaml

    from raygen.engine import sweep

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(sweep, "ensure_ray", no_ray)
    data = tmp_path / "images.npz"
    data.write_bytes(b"PK\x03\x04 this is not a zip archive")
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "bad", "algorithm": "walkback", "dataset": f"npz:{data}", "method": "random", "seed": 0,
        "fixed": {"train.steps": 4, "train.batch_size": 20, "algo.net.hidden": [8], "eval.final": False},
        "metric": {"name": "valid/lower_bound", "goal": "maximize"}, "run_cap": 3, "resources": {"cpu": 1},
        "parameters": {"train.lr": {"min": 1.0e-4, "max": 1.0e-3, "log": True}}}))
    assert_one_line(invoke("sweep", spec, "--results", tmp_path / "store"), str(data))
    assert no_runs(tmp_path / "store")


def test_a_batch_larger_than_the_data_leaves_no_run(toy_algorithm, tmp_path):
    res = train(toy_algorithm, tmp_path, "train.batch_size=5000")
    assert_one_line(res, "train.batch_size=5000", "200 examples")
    res = train(toy_algorithm, tmp_path, "train.batch_size=150", "--workers", 2)  # 100 each: refused before Ray
    assert_one_line(res, "train.batch_size=150", "100 examples of each of 2 workers")
    assert no_runs(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_no_run(toy_algorithm, tmp_path):
    res = invoke("train", toy_algorithm, "--dataset", "toy2d:circle", "--device", "cuda", "--results", tmp_path)
    assert_one_line(res, "no CUDA GPU")
    assert no_runs(tmp_path)
    res = invoke("train", toy_algorithm, "--dataset", "toy2d:circle", "--device", "cuda", "--results", tmp_path,
                 "--verbose")
    assert res.exit_code != 0 and isinstance(res.exception, Exception)  # --verbose: the exception itself


def test_a_network_too_large_for_memory_is_one_line_and_no_run(tmp_path):
    # 2 x 10^6 x 10^6 float32 weights: 8 TB, refused by the allocator at once
    res = invoke("train", "walkback", "--dataset", "toy2d:circle", "--device", "cpu", "--results", tmp_path,
                 "algo.net.hidden=[1000000,1000000]")
    assert_one_line(res, "out of memory")
    assert no_runs(tmp_path)


def test_a_nan_loss_is_one_line_and_a_failed_row(toy_algorithm, tmp_path):
    res = train(toy_algorithm, tmp_path, "algo.explode_at=7")
    assert_one_line(res, "failed", "NaN or infinite", "at update 7", code=1)
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "failed" and "NonFiniteLossError" in row.error
    assert row.run_id in error_lines(res.output)[0]


def _as_non_root(args, cwd):
    """Run `raygen ARGS` as root without the capability that lets root ignore file permissions."""
    return subprocess.run(
        ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
         "--", sys.executable, "-m", "raygen.cli", *map(str, args)],
        check=False, capture_output=True, text=True, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_read_only_store_is_refused_before_any_work(tmp_path):
    store = tmp_path / "store"
    res = invoke("train", "walkback", "--dataset", "toy2d:circle", "--steps", 4, "--results", store, "--device", "cpu",
                 "train.batch_size=20", "data.toy_samples=200", "eval.final=false", "algo.net.hidden=[8]")
    assert res.exit_code == 0, res.output
    before = len(read_metrics(store))
    for path in [store, *store.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        for args in (["evaluate", "latest"], ["sample", "latest"],
                     ["train", "walkback", "--dataset", "toy2d:circle", "--steps", "4"]):
            out = _as_non_root([*args, "--results", store], tmp_path)
            lines = error_lines(out.stderr)
            # the up-front check's message, not the one a failed write after the work would give
            assert out.returncode == 2 and len(lines) == 1 and "is not writable" in lines[0], out.stderr
            assert "Permission denied" in lines[0] and "Traceback" not in out.stderr
    finally:
        for path in [store, *store.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert len(read_metrics(store)) == before and len(read_runs(store)) == 1


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_compact_of_a_read_only_store_is_one_line(toy_algorithm, tmp_path):
    """A killed run's pieces in a read-only store: `raygen compact` raised a PermissionError traceback."""
    from raygen.config import build_config
    from raygen.results import RunRecorder

    store = tmp_path / "store"
    rec = RunRecorder(store, build_config(algorithm=toy_algorithm, dataset="toy2d:circle"))
    rec.write_run("running")
    rec.log(1, {"train/loss": 1.0})
    rec.flush()  # a piece, as a run killed here leaves it
    for path in [store, *store.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        out = _as_non_root(["compact", "--running", "--results", store], tmp_path)
    finally:
        for path in [store, *store.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    lines = error_lines(out.stderr)
    assert out.returncode == 1 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot write the results store: Permission denied" in lines[0]
    assert len(read_metrics(store)) == 1


@pytest.fixture()
def tiny_disk(tmp_path):
    """A real 8 MiB file system (tmpfs), so the disk really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                           check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_the_row_says_failed(toy_algorithm, tiny_disk, monkeypatch):
    from raygen import lifecycle

    start = lifecycle.Heartbeat.start

    def start_then_fill(self):  # the run is recorded `running`: now fill the disk to the last byte
        with open(tiny_disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        return start(self)

    monkeypatch.setattr(lifecycle.Heartbeat, "start", start_then_fill)
    store = tiny_disk / "store"
    res = train(toy_algorithm, store, steps=20)
    assert_one_line(res, "failed", "cannot write the results store", "no space left", code=1)
    row = read_runs(store).iloc[0]
    assert row.status == "failed" and "No space left" in row.error
    assert not list((store / "runs").glob(".*"))  # the reserve and the temporary files are gone


# ---------------------------------------------------------------------------------------------- item 3 (units)


def test_heartbeat_keeps_a_run_alive_and_never_reopens_an_ended_one(toy_algorithm, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "0.05")  # the thresholds below must exceed the interval

    from raygen.config import build_config
    from raygen.lifecycle import Heartbeat, effective_status
    from raygen.results import RunRecorder

    rec = RunRecorder(tmp_path, build_config(algorithm=toy_algorithm, dataset="toy2d:circle"))
    rec.write_run("running")
    first = read_runs(tmp_path).iloc[0]
    beat = Heartbeat(rec, interval=0.05).start()
    beat.beat(42)
    deadline = time.monotonic() + 60
    while read_runs(tmp_path).iloc[0].heartbeat_step != 42 and time.monotonic() < deadline:
        time.sleep(0.02)
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "running" and row.heartbeat_step == 42 and row.heartbeat_at > first.heartbeat_at
    rec.write_run("completed")  # while the thread still runs: it must not write `running` again
    time.sleep(0.3)
    assert read_runs(tmp_path).iloc[0].status == "completed" and not beat._thread.is_alive()
    beat.stop()

    runs = read_runs(tmp_path).assign(status="running")
    later = row.heartbeat_at + pd.Timedelta(seconds=100)
    assert list(effective_status(runs, after_s=99, now=later)) == ["lost"]
    assert list(effective_status(runs, after_s=101, now=later)) == ["running"]
    assert list(effective_status(runs.assign(status="failed"), after_s=1, now=later)) == ["failed"]


def test_a_full_disk_simulated_ends_the_row_failed(toy_algorithm, tmp_path, monkeypatch):
    """The same without a mountable file system: every store write fails with ENOSPC from the moment the run is
    recorded `running` until the run's reserve is freed (as freeing real blocks would)."""
    import errno

    from raygen import lifecycle
    from raygen.results import store

    full = {"now": False}
    write, start, release = store.atomic_write_bytes, lifecycle.Heartbeat.start, lifecycle.Reserve.release

    def write_unless_full(path, data):
        if full["now"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, data)

    def start_then_fill(self):
        full["now"] = True
        return start(self)

    def release_frees(self):
        full["now"] = False
        release(self)

    monkeypatch.setattr(store, "atomic_write_bytes", write_unless_full)
    monkeypatch.setattr(lifecycle.Heartbeat, "start", start_then_fill)
    monkeypatch.setattr(lifecycle.Reserve, "release", release_frees)
    res = train(toy_algorithm, tmp_path, steps=20)
    assert_one_line(res, "failed", "no space left", code=1)
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "failed" and "No space left" in row.error


def test_a_file_where_the_store_keeps_its_lock_folder_is_one_line(toy_algorithm, tmp_path):
    """A stray file named `.locks` in the store (where the run's claim and row locks go) ended `train` and
    `train --resume` with a FileExistsError traceback."""
    store = tmp_path / "store"
    assert train(toy_algorithm, store, steps=4).exit_code == 0
    (store / ".locks").rename(tmp_path / "locks")
    (store / ".locks").write_text("not a folder")
    assert_one_line(train(toy_algorithm, store, steps=4), "cannot write the results store", ".locks", code=1)
    assert_one_line(invoke("train", "--resume", "latest", "--results", store), "cannot write the results store",
                    ".locks", code=1)


@pytest.mark.parametrize("args", [
    ["vae", "--dataset", "toy2d:circle", "algo.observation=bernoulli"],
    ["net", "--dataset", "seqdigits"],
    ["net", "--dataset", "digits", "algo.time_features=3"],
    ["gmmn", "--dataset", "toy2d:circle", "algo.autoencoder=true"],
    ["gmmn", "--dataset", "digits", "algo.autoencoder=true", "algo.ae_steps=5"],
    ["gsn", "--dataset", "digits", "algo.noise=1.5"],
], ids=["vae-bernoulli-points", "net-sequences", "net-odd-time-features", "gmmn-ae-points", "gmmn-ae-no-steps",
        "gsn-noise"])
def test_an_algorithm_refusing_its_data_or_settings_is_one_line_and_no_run(args, tmp_path):
    """The algorithms' own checks of data and settings (raised when they are built) printed a ValueError
    traceback; they are config errors: one line, and no run recorded."""
    res = invoke("train", *args, "--steps", 3, "--results", tmp_path, "--device", "cpu")
    assert_one_line(res)
    assert no_runs(tmp_path)


def test_a_file_as_the_results_store_is_one_line_in_train_and_sweep(toy_algorithm, tmp_path):
    """`--results FILE`: the writability probe's clean-up raised NotADirectoryError over its own error (train:
    a raw errno text; sweep, which checked only object stores: a traceback)."""
    store = tmp_path / "afile"
    store.write_text("not a store")
    assert_one_line(train(toy_algorithm, store, steps=2), "results store", "is not writable")
    spec = REPO / "sweeps" / "vw-annealing.yaml"
    assert_one_line(invoke("sweep", spec, "--smoke", "--results", store), "results store", "is not writable")
    assert store.read_text() == "not a store"


def test_an_unusable_heartbeat_interval_is_one_line_and_no_run(toy_algorithm, tmp_path, monkeypatch):
    """RAYGEN_HEARTBEAT_S=-1 was read by the heartbeat thread once the run was recorded: a ValueError traceback
    and a `failed` row for a run that never started. It is checked with the other set-up checks."""
    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "-1")
    assert_one_line(train(toy_algorithm, tmp_path / "store", steps=2), "RAYGEN_HEARTBEAT_S", "must be positive")
    assert no_runs(tmp_path / "store")


def test_an_unusable_heartbeat_interval_is_refused_before_workers_or_a_sweep_start(toy_algorithm, tmp_path,
                                                                                     monkeypatch):
    """--workers and sweep trials run the same heartbeat as a local run; RAYGEN_HEARTBEAT_S was read only in the
    workers and trials, after Ray started and their rows were written `running`. Same rule, before any work."""
    from raygen.engine import ray_train, sweep

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_train, "ensure_ray", no_ray)
    monkeypatch.setattr(sweep, "ensure_ray", no_ray)
    for value, needle in (("abc", "is not a number"), ("0", "must be positive")):
        monkeypatch.setenv("RAYGEN_HEARTBEAT_S", value)
        store = tmp_path / f"store-{value}"
        assert_one_line(train(toy_algorithm, store, "--workers", 2, steps=2), "RAYGEN_HEARTBEAT_S", needle)
        assert_one_line(invoke("sweep", REPO / "sweeps" / "vw-annealing.yaml", "--smoke", "--results", store),
                        "RAYGEN_HEARTBEAT_S", needle)
        assert not store.exists()  # nothing written, not even the store's folders


def test_resume_refuses_a_live_run_and_an_unknown_one(toy_algorithm, tmp_path):
    from raygen.config import build_config
    from raygen.lifecycle import claim
    from raygen.results import RunRecorder

    rec = RunRecorder(tmp_path, build_config(algorithm=toy_algorithm, dataset="toy2d:circle"))
    rec.write_run("running")  # its heartbeat is fresh: it may be training right now
    with claim(tmp_path, rec.run_id) as mine:  # as its training process does
        assert mine
        assert_one_line(invoke("train", "--resume", rec.run_id, "--results", tmp_path), "being trained")
    rec.node = "another-node"  # on another machine of a shared folder only the heartbeat tells
    rec.write_run("running")
    assert_one_line(invoke("train", "--resume", rec.run_id, "--results", tmp_path), "still running")
    assert_one_line(invoke("train", "--resume", "nosuchrun", "--results", tmp_path), "not found")
    assert_one_line(invoke("train", "--resume", rec.run_id, "--steps", 5, "--results", tmp_path), "drop --steps")
    # typer parses a lone key=value as ALGORITHM: the message names the overrides typed, not a missing ALGORITHM
    assert_one_line(invoke("train", "--resume", rec.run_id, "--results", tmp_path, "train.lr=0.1", "seed=2"),
                    "drop the overrides train.lr=0.1 seed=2")
    assert read_runs(tmp_path).iloc[0].status == "running"


def test_a_run_killed_on_this_machine_resumes_at_once(toy_algorithm, tmp_path):
    """Its row still says running with a fresh heartbeat, but nobody holds its claim: the process is gone."""
    from raygen.config import build_config
    from raygen.results import RunRecorder

    rec = RunRecorder(tmp_path, build_config(algorithm=toy_algorithm, dataset="toy2d:circle",
                                             overrides={"train.steps": 20, **dict(o.split("=") for o in SMALL)}))
    rec.write_run("running")
    rec.log(5, {"train/nll": 1.0})
    rec.flush()  # what a SIGKILL leaves: no checkpoint yet, a running row, rows it wrote
    res = invoke("train", "--resume", rec.run_id, "--results", tmp_path)
    assert res.exit_code == 0, res.output
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "completed" and row.steps == 20
    metrics = read_metrics(tmp_path)
    assert not metrics.duplicated(["run_id", "step", "split", "metric"]).any()


def test_a_diverging_walkback_is_one_line_and_a_failed_row(tmp_path):
    # lr=1e12 drives the transition operator's std to 0 within a few updates (a ValueError, not a NaN loss); from
    # the network's own initial noise (init_noise=null): the toy preset's small initial noise gives a NaN loss first
    res = invoke("train", "walkback", "--dataset", "toy2d:circle", "--steps", 200, "--device", "cpu", "--results",
                 tmp_path, "train.lr=1e12", "algo.net.hidden=[16]", "data.toy_samples=200", "train.batch_size=20",
                 "algo.init_noise=null")
    assert_one_line(res, "failed", "training diverged", "train.lr", code=1)
    assert read_runs(tmp_path).iloc[0].status == "failed"


def _algorithm_names() -> list[str]:
    from raygen import algorithms

    return sorted(algorithms._ALGORITHMS)


@pytest.mark.parametrize("algorithm", _algorithm_names())
def test_every_algorithm_checkpoint_loads_without_unpickling_code(algorithm, tmp_path):
    """weights_only=True accepts only tensors and plain data: every algorithm's checkpoint (model, optimizers
    with their state, selection, data position, RNG) must be made of those, or its runs could not resume."""
    from raygen.config import ConfigError, build_config
    from raygen.engine.loop import train as train_loop

    saved = {}

    def report(step, metrics, *, checkpoint=None, artifacts=()):
        if checkpoint is not None:
            saved["payload"] = checkpoint

    for dataset in ("toy2d:spiral", "digits", "seqdigits"):  # the first kind of data the algorithm accepts
        try:
            cfg = build_config(algorithm=algorithm, dataset=dataset, overrides={
                "train.steps": 2, "train.checkpoint_every": 2, "train.eval_every": 2, "train.eval_examples": 20,
                "train.batch_size": 20, "eval.final": False, "device": "cpu"})
            train_loop(cfg, report)
            break
        except ConfigError:  # the algorithm does not model this kind of data
            continue
    else:
        pytest.skip(f"{algorithm} accepts none of the small embedded datasets")
    torch.save(saved["payload"], tmp_path / "checkpoint.pt")
    payload = read_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["algorithm"]["updates"] >= 2 and payload["config"]["algorithm"] == algorithm


def test_repair_marks_only_the_runs_whose_heartbeat_stopped(toy_algorithm, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "0.05")  # repair's threshold below must exceed the interval

    from raygen.config import build_config
    from raygen.lifecycle import Heartbeat, repair
    from raygen.results import RunRecorder

    cfg = build_config(algorithm=toy_algorithm, dataset="toy2d:circle")
    dead, alive, done = (RunRecorder(tmp_path, cfg, run_id=name) for name in ("dead", "alive", "done"))
    for rec in (dead, alive, done):
        rec.write_run("running")
    done.write_run("completed")
    beat = Heartbeat(alive, interval=0.05).start()
    try:
        time.sleep(2.5)  # `dead` wrote its last heartbeat 2.5 s ago; `alive` one every 0.05 s
        assert repair(tmp_path, after_s=2.0) == ["dead"]
    finally:
        beat.stop()
    status = read_runs(tmp_path).set_index("run_id")["status"]
    assert status.to_dict() == {"dead": "failed", "alive": "running", "done": "completed"}


def test_evaluating_a_run_whose_data_file_changed_shape_is_one_line(tmp_path):
    """A user's npz rewritten with other images after training: the checkpoint no longer fits the model built
    from the file, which is the data's fault, said in one line (it was a 100-line state_dict traceback)."""
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, size=(60, 8, 8), dtype=np.uint8)
    data = tmp_path / "mine.npz"
    np.savez(data, images)
    store = tmp_path / "store"
    res = invoke("train", "infusion", "--dataset", f"npz:{data}", "--steps", 2, "--results", store,
                 "eval.final=false", "train.batch_size=4", "algo.net.hidden=[16]", "train.progress=false")
    assert res.exit_code == 0, res.output
    np.savez(data, images[:, :7, :7])
    assert_one_line(invoke("evaluate", "latest", "--results", store), "the data changed since the run was trained",
                    "(1, 7, 7)")
