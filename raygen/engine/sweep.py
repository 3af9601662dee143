"""Hyperparameter sweeps: Ray Tune drives trials, Optuna proposes them, every trial lands in the Parquet store.

`run_sweep(load_spec("sweeps/x.yaml"), "results")` is what `raygen sweep` does:

* The search space is the spec's define-by-run function (`OptunaSearch(space=...)`), so conditional
  parameters work with every sampler; `param_space` holds only constants (the job description below).
* Each trial is `trial_main`, a module-level function (Tuner.restore needs the same one back). It builds the
  trial's RunConfig, runs the one training loop with a reporter that writes the store and calls
  `tune.report` (with a `tune.Checkpoint` every `train.checkpoint_every` updates), and records how it ended.
  With `resources.workers > 1` it instead drives a nested TorchTrainer (engine/ray_train.py) whose rank 0
  writes the store and whose metrics reach Tune through `TuneReportCallback` (notes/ray.md: a TorchTrainer
  cannot be a Tune trainable under Train V2).
* The run id of a trial is `<sweep_id>-<trial_id>`: a retried, restored or resumed trial rewrites its own run
  row and rewinds its own metric rows to the checkpoint it resumes from, so the store never holds a trial twice.
* A trial stopped by ASHA is killed by Tune before it can say so; `StoreCallback` (in the driver) marks such
  rows `stopped` with `stopped_early`. Errors (a NaN loss raises NonFiniteLossError) mark the trial `failed`
  with the error text and the sweep goes on.
* RESULTS/sweeps/<sweep_id>.json holds the resolved spec (objectives with goals, parameters with bounds, log
  scales and conditions) for the analysis and dashboard code.
* Resume: when the Tune experiment directory exists, the sweep is restored (`Tuner.restore`) with its Optuna
  state, and only the missing trials run. The resolved spec must not have changed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from raygen.algorithms import Artifact
from raygen.algorithms.base import NonFiniteLossError
from raygen.config import RunConfig
from raygen.engine.ray_train import (
    LatestMetrics,
    ensure_ray,
    error_text,
    load_payload,
    mark_run,
    resume_step,
    run_distributed,
    run_status,
)
from raygen.engine.report import CHECKPOINT_NAME, StoreReporter, checkpoint_bytes
from raygen.engine.sweep_spec import ResolvedSweep, SpecError, trial_config
from raygen.results import RunRecorder, read_runs
from raygen.results.store import atomic_write_bytes

log = logging.getLogger(__name__)

JOB_KEY = "_raygen"  # the constant part of every trial's Tune config


class NonFiniteMetricError(FloatingPointError):
    """An objective metric of a finished trial is NaN or infinite (Optuna cannot be told such a value)."""


def run_id_for(sweep_id: str, trial_id: str) -> str:
    return f"{sweep_id}-{trial_id}"


def experiment_path(spec: ResolvedSweep, results: str | Path) -> str:
    storage = spec.storage or str(Path(results) / "tune")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return storage.rstrip("/") + "/" + spec.sweep_id


def spec_path(results: str | Path, sweep_id: str) -> Path:
    return Path(results) / "sweeps" / f"{sweep_id}.json"


# ---------------------------------------------------------------------------------------------- trial side


class _TrialReporter:
    """The loop's `report` inside a Tune trial: the store, then `tune.report` with every latest metric."""

    def __init__(self, recorder: RunRecorder, steps: int) -> None:
        self.recorder = recorder
        self.store = StoreReporter(recorder)
        self.steps = steps
        self.latest = LatestMetrics()

    def __call__(
        self,
        step: int,
        metrics: dict[str, float],
        *,
        checkpoint: dict[str, Any] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None:
        self.store(step, metrics, artifacts=artifacts)
        payload = self.latest.update(step, metrics)
        # Tune gets checkpoints, evaluations and the end of training; the running training means stay in the
        # store (and ride along in the payload), since each tune.report is a round trip to the driver.
        if checkpoint is None and step < self.steps and all(k.startswith("train/") for k in metrics):
            return
        tune_checkpoint, tmp = None, None
        if checkpoint is not None:
            data = checkpoint_bytes(checkpoint)
            self.recorder.save_file(step, CHECKPOINT_NAME, "checkpoint", data)
            tmp = Path(tempfile.mkdtemp(prefix="raygen-ckpt-"))
            (tmp / CHECKPOINT_NAME).write_bytes(data)
            tune_checkpoint = tune.Checkpoint.from_directory(str(tmp))
        try:
            tune.report(payload, checkpoint=tune_checkpoint)  # copies the checkpoint to the trial's storage
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _placement() -> dict[str, Any]:
    import ray

    try:
        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    except Exception:  # noqa: BLE001 - not inside Ray (unit tests call trial helpers directly)
        return {}


def _check_objectives(values: Mapping[str, float], objectives: Sequence[str]) -> None:
    missing = [n for n in objectives if n not in values]
    if missing:
        raise NonFiniteMetricError(
            f"objective metric(s) {', '.join(missing)} never reported; reported: {', '.join(sorted(values))}"
        )
    bad = [f"{n}={values[n]}" for n in objectives if not math.isfinite(values[n])]
    if bad:
        raise NonFiniteMetricError(f"objective metric(s) not finite at the end of training: {', '.join(bad)}")


def trial_main(config: dict[str, Any]) -> None:
    """One Tune trial (module level: `Tuner.restore` must receive this same function)."""
    from raygen.engine.loop import train

    job = config[JOB_KEY]
    trial_id = tune.get_context().get_trial_id()
    run_id = run_id_for(job["sweep_id"], trial_id)
    params = {name: config[name] for name in job["param_names"] if name in config}
    fixed = dict(job["fixed"])
    if job["gpu"] > 0 and job["workers"] == 1:
        fixed["device"] = "cuda"
    cfg = trial_config(job["algorithm"], job["dataset"], fixed, job["paths"], params)
    extra = {
        "sweep_id": job["sweep_id"],
        "trial_id": trial_id,
        "params": {name: params.get(name) for name in job["param_names"]},  # inactive conditionals: null
        "resources": {**job["resources"], **_placement()},
        "workers": job["workers"],
    }
    results = job["results"]

    status, error = run_status(results, run_id)
    if status == "failed" and error and error.startswith(("NonFiniteLossError", "NonFiniteMetricError")):
        # A retried or resumed trial that diverged: replaying it from its checkpoint diverges again.
        raise NonFiniteLossError(f"not retried: {error}")

    if job["workers"] > 1:
        _nested_trial(cfg, job, run_id, extra)
        return

    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_payload(directory)
    recorder = RunRecorder(results, cfg, run_id=run_id, extra={**extra, "device": cfg.device})
    recorder.rewind(resume_step(resume))
    reporter = _TrialReporter(recorder, cfg.train.steps)
    reporter.latest.values.update(recorder.final)  # a resumed trial carries what it measured before
    recorder.write_run("running")
    try:
        train(cfg, reporter, resume=resume)
        _check_objectives(reporter.latest.values, job["objectives"])
    except SystemExit:  # Tune stops a trial (ASHA) by exiting its thread from inside tune.report
        recorder.flush()
        recorder.extra["stopped_early"] = True
        recorder.write_run("stopped", error="stopped early by the scheduler")
        raise
    except BaseException as err:
        recorder.flush()
        recorder.write_run("failed", error=error_text(err))
        raise
    recorder.flush()
    recorder.write_run("completed")


def _nested_trial(cfg: RunConfig, job: dict[str, Any], run_id: str, extra: dict[str, Any]) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    # The inner run's name is deterministic, so a retried trial resumes its Train run from its checkpoint.
    run_distributed(
        cfg,
        job["results"],
        workers=job["workers"],
        use_gpu=job["gpu"] > 0,
        cpus_per_worker=job["cpu"],
        gpus_per_worker=job["gpu"] or None,
        max_failures=job["train_max_failures"],
        run_id=run_id,
        extra=extra,
        storage=job["storage"],
        name=f"{job['sweep_id']}-train-{extra['trial_id']}",
        callbacks=[TuneReportCallback()],
    )


# ---------------------------------------------------------------------------------------------- driver side


class RaygenOptunaSearch(OptunaSearch):
    """OptunaSearch that tolerates reports made before the objective was first measured, and tells Optuna FAIL
    for errored trials (never a NaN value: `study.tell` raises on it and the sampler loses the trial)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list):
            return
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics] if result else []
        if error or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


def _sampler(spec: ResolvedSweep):
    import optuna

    seed = spec.seed
    if spec.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if spec.method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.method == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.method == "grid":  # the points are enqueued (see _searcher); nothing is left to sample
        return optuna.samplers.RandomSampler(seed=seed)
    raise NotImplementedError(spec.method)


def _searcher(spec: ResolvedSweep) -> RaygenOptunaSearch:
    storage = None
    if spec.optuna_storage:
        import optuna

        storage = optuna.storages.RDBStorage(spec.optuna_storage)
    metric: str | list[str]
    mode: str | list[str]
    if spec.multi_objective:
        metric, mode = [o.name for o in spec.objectives], [o.mode for o in spec.objectives]
    else:
        metric, mode = spec.objectives[0].name, spec.objectives[0].mode
    return RaygenOptunaSearch(
        space=spec.space(), metric=metric, mode=mode, sampler=_sampler(spec), storage=storage,
        study_name=spec.sweep_id if storage is not None else None,
        points_to_evaluate=[dict(p) for p in spec.points] if spec.points is not None else None,
    )


def _scheduler(spec: ResolvedSweep):
    if spec.early_terminate is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    e = spec.early_terminate
    # stop_last_trials=False: a trial reaching max_t ends by itself, after its final evaluation; ASHA would
    # otherwise stop it at its last training report and the final metrics would never be written.
    return ASHAScheduler(time_attr=e.time_attr, metric=e.metric, mode=e.mode, max_t=e.max_t,
                         grace_period=e.grace_period, reduction_factor=e.reduction_factor, brackets=e.brackets,
                         stop_last_trials=False)


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default repeats the whole config, including the job constants)."""
    return f"trial_{trial.trial_id}"


def _job(spec: ResolvedSweep, results: Path, storage: str) -> dict[str, Any]:
    r = spec.resources
    return {
        "sweep_id": spec.sweep_id,
        "results": str(results),
        "algorithm": spec.algorithm,
        "dataset": spec.dataset,
        "fixed": spec.fixed,
        "param_names": spec.param_names,
        "paths": spec.paths,
        "objectives": [o.name for o in spec.objectives],
        "resources": r.to_json(),
        "workers": r.workers,
        "cpu": r.cpu,
        "gpu": r.gpu,
        "storage": storage,
        "train_max_failures": spec.train_max_failures,
    }


class StoreCallback(Callback):
    """Runs in the driver: fixes the status of trials that could not record their own end."""

    def __init__(self, results: str, sweep_id: str) -> None:
        self.results = results
        self.sweep_id = sweep_id

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A trial that finished by itself has written `completed`; one still `running` was stopped by ASHA.
        try:
            mark_run(self.results, run_id_for(self.sweep_id, trial.trial_id), "stopped",
                     error="stopped early by the scheduler", stopped_early=True, only_if=("running",))
        except Exception:  # Tune would count an exception here as the trial's error
            log.exception("could not record how trial %s ended", trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = run_id_for(self.sweep_id, trial.trial_id)
        try:
            status, _ = run_status(self.results, run_id)
            if status in ("running", "stopped"):  # e.g. its node died with it
                error = trial.get_error()
                mark_run(self.results, run_id, "failed",
                         error=error_text(error) if error else "trial errored (no error text)")
        except Exception:
            log.exception("could not record the error of trial %s", trial.trial_id)


@dataclass
class SweepOutcome:
    sweep_id: str
    experiment: str
    trials: int
    statuses: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    resumed: bool = False


def write_spec(spec: ResolvedSweep, results: Path, *, resume: bool) -> None:
    """RESULTS/sweeps/<sweep_id>.json; a resumed sweep must have the same resolved spec."""
    path = spec_path(results, spec.sweep_id)
    document = {**spec.to_json(), "fingerprint": spec.fingerprint()}
    if path.is_file() and resume:
        previous = json.loads(path.read_text())
        if previous.get("fingerprint") != document["fingerprint"]:
            raise SpecError(
                f"sweep '{spec.sweep_id}' already exists in {results} with a different spec (Tune cannot change a "
                f"search space on resume): give the spec a new name, or delete {path.parent / path.name} and "
                "the sweep's Tune directory"
            )
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode())


def run_sweep(
    spec: ResolvedSweep,
    results: str | Path,
    *,
    resume: bool | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> SweepOutcome:
    """Run (or resume) a sweep. `resume=None` resumes automatically when the sweep directory exists;
    `resume=True` requires it; `resume=False` refuses to touch an existing one."""
    results = Path(results).expanduser().resolve()
    path = experiment_path(spec, results)
    storage_root = path.rsplit("/", 1)[0]
    exists = tune.Tuner.can_restore(path) if "://" in path or Path(path).exists() else False
    if resume is True and not exists:
        raise SpecError(f"--resume: no sweep to resume at {path}")
    if resume is False and exists:
        raise SpecError(f"sweep '{spec.sweep_id}' already exists at {path}; resume it or rename the spec")
    write_spec(spec, results, resume=exists)

    # Reports made before the objective is first measured lack it; Tune would reject them (strict metric
    # checking is read in the driver). RaygenOptunaSearch and ASHA skip such reports.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Keeping few checkpoints forces an experiment snapshot after each one; that is wanted (resume), not a
    # bottleneck worth a warning at raygen's checkpoint cadence.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ensure_ray(address)
    trainable = tune.with_resources(trial_main, spec.resources.trial_bundle())
    if exists:
        log.info("resuming sweep %s from %s", spec.sweep_id, path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        log.info("starting sweep %s: %d trials, %d at a time, in %s", spec.sweep_id, spec.num_samples,
                 spec.max_concurrent, path)
        tuner = tune.Tuner(
            trainable,
            param_space={JOB_KEY: _job(spec, results, storage_root)},
            tune_config=tune.TuneConfig(
                search_alg=_searcher(spec),
                scheduler=_scheduler(spec),
                num_samples=spec.num_samples,
                max_concurrent_trials=spec.max_concurrent,
                # A finished trial's process takes the next trial: no new Python, torch and raygen imports
                # per trial (seconds each, a large share of short trials). The loop reseeds every run.
                reuse_actors=True,
                trial_name_creator=trial_dirname,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=spec.sweep_id,
                storage_path=storage_root,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[StoreCallback(str(results), spec.sweep_id)],
                verbose=verbose,
            ),
        )
    grid = tuner.fit()
    outcome = SweepOutcome(spec.sweep_id, path, len(grid), resumed=exists)
    runs = read_runs(results)
    if not runs.empty:
        mine = runs[runs["sweep_id"] == spec.sweep_id]
        outcome.statuses = {str(k): int(v) for k, v in mine["status"].value_counts().items()}
        outcome.best = _best(mine, spec)
    log.info("sweep %s: %s", spec.sweep_id, outcome.statuses)
    return outcome


def _best(runs, spec: ResolvedSweep) -> dict[str, Any] | None:
    if spec.multi_objective:
        return None
    objective = spec.objectives[0]
    column = f"final.{objective.name}"
    done = runs[runs["status"] == "completed"]
    if column not in done or done[column].dropna().empty:
        return None
    row = done.loc[done[column].idxmin() if objective.goal == "minimize" else done[column].idxmax()]
    return {"run_id": row["run_id"], objective.name: float(row[column]),
            "params": json.loads(row["params_json"]) if row.get("params_json") else {}}
