"""The results store on object storage: a real S3 API (moto's server, on 127.0.0.1 only) through pyarrow's S3
client, the client path a cluster uses (`--results s3://bucket/prefix`)."""

import os
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


def test_sweep_refuses_object_storage(tmp_path):
    """A sweep's Optuna study is SQLite beside the store: on S3 it is refused at once with a message, and
    nothing lands in a local folder named after the URL."""
    spec = Path(__file__).resolve().parents[1] / "sweeps" / "vw-annealing.yaml"
    out = subprocess.run([sys.executable, "-m", "raygen.cli", "sweep", str(spec), "--smoke", "--results",
                          "s3://bkt/results"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "needs a file system" in out.stderr
    assert list(tmp_path.iterdir()) == []


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
