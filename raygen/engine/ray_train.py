"""Data-parallel training on Ray Train (`raygen train ... --workers N`), running the one loop unchanged.

Each Ray Train worker calls `raygen.engine.loop.train` with a `TorchDistributed` context (an explicit bucketed
gradient all-reduce before every optimizer step; raygen/distributed.py says why not DDP). The process group is
gloo on CPU and nccl on GPU. Reports from the loop go two ways:

* rank 0 writes the Parquet store through `StoreReporter` (the same files as a local run), and
* every rank calls `ray.train.report` the same number of times (Train V2 makes it a barrier) for the reports
  that carry a checkpoint or an evaluation; rank 0 attaches a `ray.train.Checkpoint` holding the loop's
  checkpoint payload at every `train.checkpoint_every` updates.

After a worker or node failure, Ray Train restarts the worker group (up to `max_failures` times) and every
worker resumes from the latest *registered* checkpoint: its payload goes into the loop's `resume=` argument.
Rank 0 then rewinds the run's rows in the store to that checkpoint's step, so no step is stored twice.

The same function runs inside a Ray Tune trial when a sweep asks for `workers > 1` (see engine/sweep.py);
there the caller adds `TuneReportCallback` so rank 0's metrics reach Tune.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from raygen.algorithms import Artifact
from raygen.config import RunConfig
from raygen.engine.local import RunSetupError, check_heartbeat, check_writable, prepare, read_checkpoint
from raygen.engine.report import CHECKPOINT_NAME, StoreReporter, checkpoint_bytes

# The run-row helpers live in raygen.lifecycle (no torch or Ray); drivers (sweep.py) import them from here.
from raygen.lifecycle import (  # noqa: F401
    error_text,
    mark_run,
    recorded,
    reopen_run,
    rewind_to_checkpoint,
    run_status,
)
from raygen.results import RunRecorder
from raygen.results.store import new_run_id

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------- Ray session


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True) -> bool:
    """Connect to the Ray cluster at `address` (or $RAY_ADDRESS), or start a private local one. True if this
    call connected or started Ray.

    Trial and worker processes must not change directory into Ray's trial directories (relative data paths
    would break, and the store path is absolute anyway): Tune and Train read RAY_CHDIR_TO_TRIAL_DIR in the
    driver and pass it on to the processes they start.
    """
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # "auto": the cluster `ray start` made on this machine
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        # A private local cluster, never someone else's (`ray.init()` alone would join any cluster started on
        # this machine). The dashboard stays on: its State API frees the placement groups of trials stopped
        # early; it listens on the loopback interface only.
        _init_loopback(num_cpus, log_to_driver)
    return True


def _init_loopback(num_cpus: int | None, log_to_driver: bool = True) -> None:
    """Start a private cluster whose every socket (GCS, raylet, object manager, workers, agents, dashboard)
    listens on 127.0.0.1 only.

    Ray binds its servers to all interfaces unless the node's IP is 127.0.0.1, and `ray.init` turns a
    `_node_ip_address` of 127.0.0.1 into the machine's routable IP unless Ray clusters are disabled
    (`ray_constants.ENABLE_RAY_CLUSTER`, read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray is imported:
    too late to set here). So the flag is lowered for the duration of `ray.init` only; the node IP it then
    passes to the processes it starts is the loopback address. tests/test_lifecycle_ray.py lists the
    listening sockets of the started processes.
    """
    import ray
    from ray._private import ray_constants

    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 log_to_driver=log_to_driver, _node_ip_address="127.0.0.1")
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
    # A driver killed outright (SIGKILL, OOM) would leave the raylet's agents hanging: a watchdog reaps them.
    from raygen.engine import ray_watchdog

    node = ray._private.worker._global_node
    for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, ()):
        ray_watchdog.watch(info.process.pid, node.get_logs_dir_path())


# Rank 0's log lines as the worker formats them (`_worker_logging`); without --verbose the driver prints only
# these of everything Ray's processes write (its controller's retries and tracebacks, TrainingReport dumps,
# the "multiple active Ray instances" warnings of its helper actors).
_RAYGEN_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR|CRITICAL) raygen[.:]")
_RAY_LOGGERS = ("ray", "ray.train", "ray.tune", "ray._private")


def _print_raygen_lines(data: dict[str, Any]) -> None:
    for line in data.get("lines", ()):
        if _RAYGEN_LINE.match(line):
            sys.stderr.write(line + "\n")  # another process's log line, already formatted
            sys.stderr.flush()


@contextlib.contextmanager
def quiet_ray(quiet: bool) -> Iterator[None]:
    """While a Ray Train run started here runs: Ray's own driver logs at ERROR only, and of the worker and
    actor output that Ray forwards, only raygen's log lines (progress, warnings, errors), without Ray's
    `(RayTrainWorker pid=...)` prefix. Nothing changes when `quiet` is false (`--verbose`)."""
    if not quiet:
        yield
        return
    levels = {n: logging.getLogger(n).level for n in _RAY_LOGGERS}
    for n in _RAY_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _filter_forwarded_output() -> None:
    """Swap Ray's printer of forwarded worker output for `_print_raygen_lines` (Ray's dispatcher is internal:
    if it moved, forwarding is switched off instead, which loses rank 0's progress but prints no noise)."""
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("raygen_lines", _print_raygen_lines)
    except (ImportError, AttributeError, KeyError) as err:
        log.debug("cannot filter Ray's forwarded output (%s); worker output is not shown", err)
        import ray._private.worker as ray_worker

        ray_worker._worker_logs_enabled = False


def _worker_logging() -> None:
    """Rank 0 of a Ray Train run logs raygen's records to its stderr in the CLI's format (Ray forwards the
    stderr to the driver); a Ray worker process configures no logging of its own for them."""
    logger = logging.getLogger("raygen")
    if any(getattr(h, "raygen_worker", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.raygen_worker = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# ---------------------------------------------------------------------------------------------- store helpers


def load_payload(directory: str | Path) -> dict[str, Any]:
    """The checkpoint payload in a Ray checkpoint directory (read without running code: `read_checkpoint`)."""
    return read_checkpoint(Path(directory) / CHECKPOINT_NAME)


def resume_step(payload: dict[str, Any] | None) -> int:
    return int(payload["algorithm"]["updates"]) if payload else 0


class LatestMetrics:
    """Every metric's latest value. Reports to Ray carry all of them, so the objective of a sweep is in every
    report once it has been measured, whatever the cadence that produced it (and in the last report always)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def update(self, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        self.values.update({k: float(v) for k, v in metrics.items()})
        return {**self.values, "step": int(step)}


def non_finite(values: Mapping[str, float], names: Sequence[str]) -> list[str]:
    return [n for n in names if n in values and not math.isfinite(values[n])]


# ---------------------------------------------------------------------------------------------- the worker


class _WorkerReporter:
    """The loop's `report` inside a Ray Train worker (see the module docstring).

    `ray.train.report` is a barrier: every rank must call it equally often. The loop's in-training reports
    happen at the same updates on every rank, but its final evaluation reports on rank 0 only, after the last
    update. Those post-training reports (a report at the final step after one has already been made there) are
    held back until `finish()`, where the ranks agree on a count and the others pad with empty reports.
    """

    def __init__(self, recorder: RunRecorder | None, steps: int, start: int = 0) -> None:
        self.recorder = recorder
        self.store = StoreReporter(recorder) if recorder is not None else None
        self.steps = steps
        self.latest = LatestMetrics()
        self.reports = 0
        self.reached_end = start >= steps  # resumed from the final checkpoint: only post-training reports remain
        self.held: list[tuple[dict[str, Any], bytes | None, int]] = []
        self.heartbeat = None  # rank 0: the run's Heartbeat (raygen.lifecycle), told the latest update

    def __call__(
        self,
        step: int,
        metrics: dict[str, float],
        *,
        checkpoint: dict[str, Any] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None:
        data = None
        if self.heartbeat is not None:
            self.heartbeat.beat(step)
        if self.store is not None:
            self.store(step, metrics, artifacts=artifacts)
            if checkpoint is not None:
                data = checkpoint_bytes(checkpoint)
                self.recorder.save_file(step, CHECKPOINT_NAME, "checkpoint", data)
        payload = self.latest.update(step, metrics)
        if self.reached_end and step >= self.steps:
            self.held.append((payload, data, step))
            return
        self.reached_end = step >= self.steps
        # Ray gets checkpoints, evaluations and the last update; the running training means stay in the store
        # (and ride along in `payload`). A worker holds one unconsumed report at a time and the controller
        # takes it at each poll, so frequent reports would throttle training. The rule depends only on the
        # step and the metric names, which are the same on every rank.
        if checkpoint is not None or self.reached_end or any(not k.startswith("train/") for k in metrics):
            self._send(payload, data, step)

    def _send(self, payload: dict[str, Any], data: bytes | None, step: int) -> None:
        import ray.train

        ray_checkpoint, tmp = None, None
        if data is not None:  # only rank 0 has checkpoint bytes; Train registers the checkpoint of any rank
            tmp = Path(tempfile.mkdtemp(prefix="raygen-ckpt-"))
            (tmp / CHECKPOINT_NAME).write_bytes(data)
            ray_checkpoint = ray.train.Checkpoint.from_directory(str(tmp))
        try:
            ray.train.report(
                payload,
                checkpoint=ray_checkpoint,
                checkpoint_dir_name=f"checkpoint-{step:010d}" if ray_checkpoint is not None else None,
            )
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.reports += 1

    def finish(self) -> None:
        """Send the held reports, padding so that every rank has made the same number of reports."""
        import torch.distributed as dist

        count = torch.tensor([self.reports + len(self.held)], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            count = count.cuda()
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        for payload, data, step in self.held:
            self._send(payload, data, step)
        self.held = []
        while self.reports < int(count.item()):
            self._send({**self.latest.values, "step": self.steps}, None, self.steps)


def train_worker(job: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the TorchTrainer: one rank of a data-parallel run."""
    import ray.train

    from raygen.distributed import TorchDistributed
    from raygen.engine.loop import train

    ctx = TorchDistributed()
    config = RunConfig.model_validate(job["config"])
    checkpoint = ray.train.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_payload(directory)
        log.info("rank %d resumes from the checkpoint at update %d", ctx.rank, resume_step(resume))
    recorder = None
    if ctx.rank == 0:
        extra = {**job["extra"], "workers": ctx.world_size, "device": job["device"]}
        recorder = RunRecorder(job["results"], config, run_id=job["run_id"], extra=extra)
        rewind_to_checkpoint(recorder, resume_step(resume))
    reporter = _WorkerReporter(recorder, config.train.steps, resume_step(resume))
    progress = None
    if recorder is not None:
        reporter.latest.values.update(recorder.final)  # a resumed run carries what it measured before
        if job.get("progress", True):  # the progress lines a local run prints when stderr is not a terminal
            from raygen.engine.loggers import Progress

            _worker_logging()
            progress = Progress(config, job["run_id"], initial=resume_step(resume),
                                mode="lines" if config.train.progress else "off")
    # Rank 0 records the run: `running` with a heartbeat while it trains, then how it ended.
    ok = False
    try:
        with recorded(recorder) if recorder is not None else contextlib.nullcontext() as beat, \
                progress if progress is not None else contextlib.nullcontext():
            reporter.heartbeat = beat
            train(config, reporter, ctx=ctx, resume=resume,
                  progress=(lambda step, total, metrics: progress.update(step, metrics)) if progress else None)
            reporter.finish()
        ok = True
    finally:  # rank 0's MLflow / W&B runs end as the run did (a restarted worker reopens them by run id)
        if reporter.store is not None:
            reporter.store.close(ok)


# ---------------------------------------------------------------------------------------------- the driver


def root_cause(err: BaseException) -> str:
    """The most telling worker error of a failed Train run (a non-finite loss beats the collective errors it
    causes on the other ranks)."""
    failures = getattr(err, "worker_failures", None) or {}
    texts = [error_text(e) for _, e in sorted(failures.items())]
    for text in texts:
        if "NonFiniteLossError" in text:
            return text
    return texts[0] if texts else error_text(err)


def run_distributed(
    config: RunConfig,
    results: str | Path,
    *,
    workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    max_failures: int = 2,
    run_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    storage: str | None = None,
    name: str | None = None,
    callbacks: Sequence[Any] = (),
    address: str | None = None,
    verbose: bool = True,
) -> str:
    """Train `config` data-parallel on `workers` Ray Train workers; returns the run id.

    Checkpoints go to Ray storage (`storage`, default RESULTS/ray) under the run name (default
    `train-<run_id>`): Train V2 resumes a run with the same storage and name, so a retried sweep trial passes
    its own deterministic `name`. On a multi-node cluster `results` and `storage` must be shared (NFS/EFS
    mount or, for `storage`, s3://...). `verbose=False` (the CLI without --verbose): rank 0's progress lines
    and raygen's warnings only, nothing of Ray's own output (`quiet_ray`), when this call starts Ray.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if workers < 1:
        raise RunSetupError(f"--workers must be at least 1 (got {workers})")
    from raygen.results.store import is_remote, remote

    # an object store (s3://...) is the same URL on every node; a local path is made absolute for the workers
    results = Path(results) if is_remote(results) else Path(results).expanduser().resolve()
    run_id = run_id or new_run_id(config.algorithm)
    if use_gpu and config.device != "cuda":
        config = config.with_overrides({"device": "cuda"})
    if not use_gpu and config.device == "cuda":
        raise RunSetupError("device 'cuda' needs --gpu with --workers (each worker then gets one GPU)")
    if config.device == "auto":
        config = config.with_overrides({"device": "cpu"})
    # Bad inputs fail here, in the driver, before any worker starts or any run row exists (engine/local.py).
    check_heartbeat()
    check_writable(results)
    prepare(config, workers=workers, build_model=not use_gpu)
    # The controller collects each worker's pending report when it polls (every 2 s by default) and a worker
    # blocks on its next report until then; poll more often so that checkpoint reports do not stall training.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    with quiet_ray(not verbose):  # "Started a local Ray instance", token and usage notices
        if ensure_ray(address) and not verbose:
            _filter_forwarded_output()
    if not callbacks:  # (a sweep checked its trials' requests, drivers included, before starting them)
        from raygen.engine.resources import ResourceError, preflight, train_bundles

        try:  # Train would otherwise wait for the workers forever
            preflight(train_bundles(workers, cpus_per_worker, (gpus_per_worker or 1.0) if use_gpu else 0.0),
                      what=f"--workers {workers}")
        except ResourceError as err:
            raise RunSetupError(str(err)) from None
    device = "cuda" if use_gpu else "cpu"
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker if gpus_per_worker is not None else 1.0
    run_extra = {**(extra or {}), "workers": workers, "device": device}
    run_extra.setdefault("resources", {"cpu": cpus_per_worker, "gpu": resources.get("GPU", 0.0),
                                       "workers": workers})
    job = {"config": config.to_dict(), "results": str(results), "run_id": run_id, "extra": run_extra,
           "device": device}
    storage_path = storage or str(results / "ray")
    storage_fs = None
    if storage is None and is_remote(results):  # Ray's checkpoints go to the same object store, via its client
        storage_fs, storage_path = remote(storage_path)
    elif "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=job,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name or f"train-{run_id}",
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks) or None,
        ),
    )
    log.info("training %s on %d Ray Train worker(s) (%s)", run_id, workers, "nccl" if use_gpu else "gloo")
    try:
        with quiet_ray(not verbose):
            trainer.fit()
    except KeyboardInterrupt:
        mark_run(results, run_id, "stopped", error="interrupted by the user", only_if=("running",))
        raise
    except Exception as err:
        # Rank 0 may have died with its node; the driver records how the run ended.
        if not mark_run(results, run_id, "failed", error=root_cause(err)):
            log.error("run %s failed before rank 0 wrote its row: %s", run_id, root_cause(err))
        raise
    if run_status(results, run_id)[0] != "completed":  # e.g. rank 0 never reached the end (should not happen)
        mark_run(results, run_id, "completed")
    log.info("run %s written to %s", run_id, results)
    return run_id
