"""The results store on object storage: a real S3 API (moto's server, on 127.0.0.1 only) through pyarrow's S3
client, the client path a cluster uses (`--results s3://bucket/prefix`)."""

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install '.[test]')")

from raygen.config import build_config
from raygen.results import (
    RunRecorder,
    compact,
    read_artifacts,
    read_metrics,
    read_runs,
    store,
)

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture()
def s3(monkeypatch):
    """A bucket on a local S3 server; yields (store URL, the environment that points clients at it)."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    # moto keeps buckets per process, not per server: a bucket of its own for each test
    bucket = f"bkt-{uuid.uuid4().hex[:8]}"
    pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir(bucket)
    store._filesystem.cache_clear()  # the client reads the endpoint when first made
    try:
        yield f"s3://{bucket}/results", {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    finally:
        store._filesystem.cache_clear()
        server.stop()


def _listing(url, sub):
    fs, base = store.remote(url)
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{sub}", allow_not_found=True))
    return fs, [i.path for i in infos if i.type == pafs.FileType.File]


def test_recorder_and_readers_on_s3(s3):
    url, _ = s3
    cfg = build_config(algorithm="walkback", dataset="toy2d:circle", overrides={})
    rec = RunRecorder(url, cfg)
    rec.write_run("running")
    for step in range(1, 4):
        rec.log(step, {"train/loss": float(step)})
        rec.flush()
    rec.save_file(3, "samples.png", "image", b"\x89PNG not really")
    assert len(_listing(url, "metrics/.pending")[1]) == 3  # one object per flush while the run lives
    assert sorted(read_metrics(url)["step"]) == [1, 2, 3]
    rec.write_run("completed")
    # folded: no pieces left, and a plain reader of the segments sees every row once
    assert _listing(url, "metrics/.pending")[1] == []
    fs, objects = _listing(url, "metrics")
    segments = [p for p in objects if p.endswith(".parquet")]
    assert len(segments) == 1
    assert sorted(pq.read_table(segments[0], filesystem=fs)["step"].to_pylist()) == [1, 2, 3]
    runs = read_runs(url)
    assert list(runs["status"]) == ["completed"] and runs["final.train/loss"].iloc[0] == 3.0
    arts = read_artifacts(url)
    assert list(arts["name"]) == ["samples.png"]
    assert store.read_bytes(f"{url}/{arts['path'].iloc[0]}") == b"\x89PNG not really"
    # a second run: a rewind drops its step 2, compact finds nothing left to fold, every row is there once
    rec2 = RunRecorder(url, cfg)
    rec2.write_run("running")
    rec2.log(1, {"train/loss": 5.0})
    rec2.log(2, {"train/loss": 6.0})
    rec2.flush()
    rec2.rewind(1)
    rec2.write_run("stopped")
    assert compact(url) == {"metrics": 0, "artifacts": 0}
    metrics = read_metrics(url)
    assert len(metrics) == 4 and list(metrics.loc[metrics.run_id == rec2.run_id, "value"]) == [5.0]
    assert len(read_runs(url)) == 2


def test_dashboard_fingerprint_on_s3_changes_with_every_write(s3):
    from analysis.load import store_fingerprint

    url, _ = s3
    cfg = build_config(algorithm="walkback", dataset="toy2d:circle", overrides={})
    rec = RunRecorder(url, cfg)
    seen = [store_fingerprint(url)]
    rec.write_run("running")  # a run row
    seen.append(store_fingerprint(url))
    rec.log(1, {"train/loss": 1.0})
    rec.flush()  # a metrics piece
    seen.append(store_fingerprint(url))
    rec.write_run("completed")  # the row replaced, the piece folded into a segment
    seen.append(store_fingerprint(url))
    assert len(set(seen)) == len(seen), seen
    assert store_fingerprint(url) == seen[-1]  # and it is stable while nothing is written


def test_a_run_row_replaced_while_it_is_read_is_read_whole(s3):
    """A heartbeat replaces the run row every 30 s. Read with random access (a size, then ranged reads) an
    object replaced in between tore ("Page was smaller than expected"): the reader skipped the row or, once
    such errors were no longer skipped, raised. Readers racing a writer that replaces the row without pause
    must see the one row, every time."""
    import threading

    url, _ = s3
    rec = RunRecorder(url, build_config(algorithm="walkback", dataset="toy2d:circle", overrides={}))
    rec.write_run("running")
    stop = threading.Event()

    def rewrite() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            rec.log(step, {f"train/m{step}": float(step)})  # a new final value: each row is larger than the last
            rec.flush()
            rec.heartbeat(step)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [len(read_runs(url, refresh_cache=True)) for _ in range(100)]
    finally:
        stop.set()
        writer.join()
    assert seen == [1] * 100, seen


def test_a_denied_request_is_an_error_not_a_store_without_rows(s3, monkeypatch, tmp_path):
    """Without credentials every object read is denied: the readers skipped each row as "unreadable" and
    `raygen runs` printed an empty table with exit code 0."""
    from typer.testing import CliRunner

    from raygen.cli import app

    url, _ = s3
    rec = RunRecorder(url, build_config(algorithm="walkback", dataset="toy2d:circle", overrides={}))
    rec.write_run("running")
    rec.log(1, {"train/loss": 1.0})
    rec.write_run("completed")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store._filesystem.cache_clear()
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        read_runs(url, refresh_cache=True)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        read_metrics(url)
    for args in (["runs", "--results", url], ["report", url, "--out", str(tmp_path)], ["dashboard", url, "--html",
                 "--out", str(tmp_path / "d.html")], ["sample", "latest", "--results", url]):
        out = CliRunner().invoke(app, args)
        errors = [line for line in out.output.splitlines() if line.startswith("error: ")]
        assert out.exit_code != 0 and not isinstance(out.exception, OSError), (args, out.output)
        assert len(errors) == 1 and "ACCESS_DENIED" in errors[0], (args, out.output)


def test_cli_train_compact_report_on_s3(s3, tmp_path):
    """`raygen train --results s3://...`, `raygen compact` and `raygen report` against the S3 server; nothing
    is written to a local folder named after the URL."""
    url, env = s3
    env = {**env, "OMP_NUM_THREADS": "1"}

    def raygen(*args):
        out = subprocess.run([sys.executable, "-m", "raygen.cli", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=None, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    raygen("train", "walkback", "--dataset", "toy2d:circle", "--steps", "20", "--results", url, "eval.final=false",
           "data.toy_samples=300", "train.batch_size=50")
    runs = read_runs(url)
    assert list(runs["status"]) == ["completed"] and runs["steps"].iloc[0] >= 20
    assert not read_metrics(url).empty
    assert any(p.endswith("checkpoint.pt") for p in _listing(url, f"files/{runs['run_id'].iloc[0]}")[1])
    arts = read_artifacts(url)
    raygen("sample", "latest", "--results", url)  # the checkpoint read back from S3; pictures written there
    assert len(read_artifacts(url)) > len(arts)
    assert runs["run_id"].iloc[0] in raygen("runs", "--results", url)
    raygen("compact", "--results", url)
    raygen("report", "--results", url, "--out", str(tmp_path / "report"))
    assert "walkback completed: 1" in (tmp_path / "report" / "README.md").read_text()  # the run, read back
    assert not (tmp_path / "s3:").exists()


def test_sweep_into_a_missing_bucket_is_refused_in_one_line(s3, tmp_path):
    """`raygen sweep --results s3://<no such bucket>/...` is refused before Ray starts, naming the store and the
    cause; nothing lands in a local folder named after the URL."""
    _, env = s3
    spec = Path(__file__).resolve().parents[1] / "sweeps" / "vw-annealing.yaml"
    out = subprocess.run([sys.executable, "-m", "raygen.cli", "sweep", str(spec), "--smoke", "--results",
                          "s3://no-such-bucket/results"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "s3://no-such-bucket/results is not writable" in out.stderr and "bucket does not exist" in out.stderr
    assert "Traceback" not in out.stderr and list(tmp_path.iterdir()) == []


def test_a_missing_bucket_is_named_by_its_url_in_every_command(s3):
    """`train`, `runs` and `dashboard` named the store `s3:/no-such-bucket/results` (the CLI's Path folds the
    URL's "//"): the message names the store as typed."""
    from typer.testing import CliRunner

    from raygen.cli import app

    url = "s3://no-such-bucket/results"
    for args in (["train", "walkback", "--dataset", "toy2d:circle", "--steps", "2", "--results", url],
                 ["runs", "--results", url], ["dashboard", url, "--html"]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, out.output
        assert f"results store {url} " in out.output and "s3:/no" not in out.output, out.output


def test_an_unreachable_endpoint_is_one_line_in_every_command(monkeypatch, tmp_path):
    """`AWS_ENDPOINT_URL` at a port nobody listens on: `runs`, `compact`, `report`, `dashboard`, `sample` ended
    with an OSError traceback; each is one line naming the store or the request."""
    from typer.testing import CliRunner

    from raygen.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    store._filesystem.cache_clear()
    url = "s3://bkt/results"
    try:
        for args in (["runs", "--results", url], ["compact", "--results", url], ["report", url, "--out", tmp_path],
                     ["dashboard", url, "--html"], ["sample", "latest", "--results", url]):
            out = CliRunner().invoke(app, [str(a) for a in args])
            lines = [line for line in out.output.splitlines() if line.strip() and " INFO " not in line]
            assert out.exit_code in (1, 2) and not isinstance(out.exception, OSError), out.output
            assert len(lines) == 1 and lines[0].startswith("error: ") and "NETWORK_CONNECTION" in lines[0], out.output
    finally:
        store._filesystem.cache_clear()


def _study_trials(path):
    import optuna

    return len(optuna.load_study(study_name="mirror", storage=f"sqlite:///{path}").trials)


def test_study_mirror_on_s3(s3, tmp_path, monkeypatch):
    """The Optuna study of a sweep on S3: a working copy on the driver, uploaded whole; a driver keeps its copy
    when it descends from the store's (also when it is ahead: an upload that failed), takes the store's
    otherwise, and a pickled storage (inside Tune's experiment) opens the working copy of whoever unpickles it."""
    import pickle

    import optuna

    from raygen.engine import sweep as sw

    url, _ = s3
    monkeypatch.setenv(sw.STUDY_CACHE_ENV, str(tmp_path / "a"))
    assert sw.fetch_study(url, "mirror") == "new"
    storage = sw.MirroredStudy(url, "mirror")
    study = optuna.create_study(study_name="mirror", storage=storage)
    study.tell(study.ask(), 1.0)
    storage.push()
    local_a = sw.study_copy_path(url, "mirror")
    assert local_a.parent.parent == tmp_path / "a" and store.exists(f"{url}/sweeps/mirror.optuna.db")
    study.ask()  # a change whose upload has not happened (or failed): the working copy is ahead
    assert sw.fetch_study(url, "mirror") == "kept" and _study_trials(local_a) == 2

    monkeypatch.setenv(sw.STUDY_CACHE_ENV, str(tmp_path / "b"))  # another machine: an empty cache
    moved = pickle.loads(pickle.dumps(storage))  # what Tune's restore does with the pickled searcher
    assert moved.local == sw.study_copy_path(url, "mirror") and moved.local.parent.parent == tmp_path / "b"
    monkeypatch.setenv(sw.STUDY_CACHE_ENV, str(tmp_path / "c"))
    assert sw.fetch_study(url, "mirror") == "fetched"
    assert _study_trials(sw.study_copy_path(url, "mirror")) == 1  # the uploaded study, not machine a's copy
    on_c = sw.MirroredStudy(url, "mirror")
    other = optuna.create_study(study_name="mirror", storage=on_c, load_if_exists=True)
    other.tell(other.ask(), 2.0)
    on_c.push()  # the store moves on from machine c

    monkeypatch.setenv(sw.STUDY_CACHE_ENV, str(tmp_path / "a"))  # back on a: its copy is stale now
    assert sw.fetch_study(url, "mirror") == "fetched" and _study_trials(local_a) == 2
    assert [t.value for t in optuna.load_study(study_name="mirror", storage=f"sqlite:///{local_a}").trials] == [1, 2]
    store.delete_file(f"{url}/sweeps/mirror.optuna.db")  # the sweep was deleted from the store
    assert sw.fetch_study(url, "mirror") == "new" and not local_a.exists()


TINY_SWEEP = {
    "name": "s3sweep",
    "algorithm": "walkback",
    "dataset": "toy2d:circle",
    "fixed": {"train.steps": 30, "train.batch_size": 50, "train.log_every": 10, "train.eval_every": 30,
              "train.checkpoint_every": 30, "train.eval_examples": 50, "train.progress": False,
              "data.toy_samples": 300, "algo.walkback_steps": 2, "algo.net.hidden": [16], "algo.k_mode": "fixed",
              "algo.reversibility_steps": 0, "eval.test_examples": 50, "eval.train_examples": 20, "eval.repeats": 1,
              "eval.likelihood_samples": 2, "eval.parzen": False},
    "metric": {"name": "valid/lower_bound", "goal": "maximize"},
    "method": "tpe",
    "seed": 0,
    "run_cap": 2,
    "max_concurrent": 2,
    "resources": {"cpu": 1},
    "parameters": {"train.lr": {"min": 1.0e-4, "max": 3.0e-3, "log": True}},
}


@pytest.mark.ray
def test_sweep_on_s3_reports_and_continues_from_the_store(s3, tmp_path, monkeypatch):
    """A sweep with `--results s3://...` (the CLI's `Path` of the URL): trials, Tune's experiment and the Optuna
    study all land in the S3 store, nothing in a local folder named after the URL; `raygen report` reads the
    sweep back; the same sweep run again by a driver with an empty study cache (another machine) restores
    Tune's experiment and the study from the store, runs no finished trial again, and `--more 1` continues
    the study, which knows both earlier trials. One private Ray on 127.0.0.1 for both drivers."""
    import optuna
    import ray

    from raygen.engine.ray_train import ensure_ray
    from raygen.engine.sweep import run_sweep
    from raygen.engine.sweep_spec import resolve

    url, env = s3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = resolve(TINY_SWEEP)
    ensure_ray(num_cpus=2, log_to_driver=False)
    try:
        monkeypatch.setenv("RAYGEN_STUDY_CACHE", str(tmp_path / "driver-1"))
        first = run_sweep(spec, Path(url))
        assert first.results == url and first.statuses == {"completed": 2}
        runs = read_runs(url)
        assert sorted(runs["status"]) == ["completed", "completed"] and set(runs["sweep_id"]) == {"s3sweep"}
        ended = runs.set_index("run_id")["ended_at"]
        fs, base = store.remote(url)
        assert fs.get_file_info(f"{base}/tune/s3sweep/tuner.pkl").type == pafs.FileType.File  # Tune's state
        assert store.exists(f"{url}/sweeps/s3sweep.json") and store.exists(f"{url}/sweeps/s3sweep.optuna.db")

        monkeypatch.setenv("RAYGEN_STUDY_CACHE", str(tmp_path / "driver-2"))
        again = run_sweep(spec, Path(url), more=1)
    finally:
        ray.shutdown()
    assert any("continuing the Optuna study of s3sweep (2 trials so far) with 1 more" in n for n in again.notes)
    runs = read_runs(url)
    assert len(runs) == 3 and runs["run_id"].is_unique and (runs["status"] == "completed").all()
    assert (runs.set_index("run_id").loc[ended.index, "ended_at"] == ended).all()  # not run again
    assert not read_metrics(url).duplicated(["run_id", "step", "split", "metric"]).any()
    # The study in the store: the two trials the first driver told, and the third, drawn by a sampler that knew
    # them (the second driver's working copy came from the store: its own cache started empty).
    copy = tmp_path / "study.db"
    copy.write_bytes(store.read_bytes(f"{url}/sweeps/s3sweep.optuna.db"))
    study = optuna.load_study(study_name="s3sweep", storage=f"sqlite:///{copy}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(t.params["train.lr"] for t in study.trials) == pytest.approx(sorted(runs["config.train.lr"]))

    report = subprocess.run([sys.executable, "-m", "raygen.cli", "report", "--results", url, "--out",
                             str(tmp_path / "report")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    index = (tmp_path / "report" / "README.md").read_text()
    assert "3 runs (walkback completed: 3); 1 sweep(s)" in index, index
    tables = "".join(p.read_text() for p in (tmp_path / "report").rglob("*s3sweep*.csv"))
    assert all(run_id in tables for run_id in runs["run_id"]), tables  # the sweep's trials, read back
    assert not (tmp_path / "s3:").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_run_on_s3(s3, tmp_path):
    """`--workers 2`: rank 0 writes the store and Ray Train its checkpoints through the same S3 client, so no
    node needs a shared folder; nothing lands in a local folder named after the URL."""
    url, env = s3
    out = subprocess.run([sys.executable, "-m", "raygen.cli", "train", "walkback", "--dataset", "toy2d:circle",
                          "--steps", "20", "--workers", "2", "--results", url, "eval.final=false",
                          "data.toy_samples=300", "train.batch_size=50"],
                         cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = read_runs(url)
    assert list(runs["status"]) == ["completed"] and list(runs["workers"]) == [2]
    metrics = read_metrics(url)
    assert not metrics.empty and not metrics.duplicated(["run_id", "step", "split", "metric"]).any()
    run_id = runs["run_id"].iloc[0]
    assert any(p.endswith("checkpoint.pt") for p in _listing(url, f"ray/train-{run_id}/checkpoint-0000000020")[1])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_s3_driver_killed_then_resumed_by_drivers_with_empty_study_caches(s3, tmp_path):
    """tests/test_sweep_kill.py on an S3 store, where every driver starts with an empty study cache (each one
    could be on another machine): the driver is SIGKILLed right after a trial completes, starts, or writes a
    checkpoint, and the store is checked after each kill (no key twice, a completed trial never run again); a
    last driver then finishes the sweep: every trial completed once, and the study in the store has no trial
    left RUNNING and one COMPLETE per trial (the study was never behind Tune's restored state)."""
    import optuna
    import ray
    import yaml
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from tests.test_sweep_kill import SPEC, _check, _free_port, _runs, _trigger, _wait

    url, env = s3
    spec = {**SPEC, "name": "s3kill", "run_cap": 4}
    spec_file = tmp_path / "s3kill.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    work = tmp_path / "work"
    work.mkdir()
    if ray.is_initialized():
        ray.shutdown()
    # Started after the fixture pointed the environment at the S3 server: trial processes inherit it.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})

    def driver(name):
        out = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - the child holds it
        return subprocess.Popen(
            [sys.executable, "-m", "raygen.cli", "sweep", str(spec_file), "--results", url, "--address",
             cluster.address], cwd=work, stdout=out, stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RAYGEN_STUDY_CACHE": str(tmp_path / name)})

    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        snapshots: dict[str, object] = {}
        kills = 0
        for i, kind in enumerate(["complete", "start", "checkpoint", "complete"]):
            proc = driver(f"driver-{i}")
            fired = _trigger(kind, url, proc)
            if proc.poll() is not None:
                assert proc.returncode == 0, (tmp_path / f"driver-{i}.log").read_text()[-3000:]
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1 if fired else 0
            _wait(lambda: not list_actors(filters=[("state", "=", "ALIVE")]), timeout=300, every=0.5)
            _check(url, snapshots)
        assert kills >= 2, f"only {kills} drivers were killed before the sweep finished"
        final = driver("driver-final")
        final.wait(timeout=900)
        assert final.returncode == 0, (tmp_path / "driver-final.log").read_text()[-3000:]
    finally:
        ray.shutdown()
        cluster.shutdown()
    _check(url, snapshots)
    runs = _runs(url)
    assert not (runs["status"] == "running").any(), runs[["run_id", "status", "error"]]
    done = runs[~runs["error"].fillna("").str.startswith("abandoned")]
    assert (done["status"] == "completed").sum() == 4 and (done["steps"] == 60).all(), runs.to_string()
    copy = tmp_path / "study.db"
    copy.write_bytes(store.read_bytes(f"{url}/sweeps/s3kill.optuna.db"))
    study = optuna.load_study(study_name="s3kill", storage=f"sqlite:///{copy}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states, states
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
    assert list(work.iterdir()) == []
