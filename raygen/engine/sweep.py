"""Hyperparameter sweeps: Ray Tune drives trials, Optuna proposes them, every trial lands in the Parquet store.

`raygen.sweep("sweeps/x.yaml", results="results")` (or `run_sweep(load_spec(...), "results")`) is what
`raygen sweep` does:

* Before anything starts, each trial's request (its bundle, plus its Train workers' bundles) is compared with the
  cluster (engine/resources.py): a request no node can hold is refused with one line. A trial that still waits
  for resources longer than `pending_timeout_s` while none of the sweep's trials runs is recorded `failed` and
  the sweep stops (nothing of the sweep would ever free them).
* The search space is the spec's define-by-run function (`OptunaSearch(space=...)`), so conditional
  parameters work with every sampler; `param_space` holds only constants (the job description below). The
  Optuna study lives in RESULTS/optuna.db (SQLite; or the spec's `optuna_storage` URL), so optuna-dashboard
  opens any sweep, and a finished sweep can be continued with more trials (`more=`): a new Tune experiment
  `<sweep_id>.<k>` asks the same study (Optuna's load_if_exists), which knows every earlier trial.
* On an object store (`results="s3://bucket/prefix"`) Tune keeps its experiment under RESULTS/tune through the
  store's own S3 client, and the study, which SQLite cannot keep there, is a working copy on the driver
  (`MirroredStudy`) uploaded whole to RESULTS/sweeps/<sweep_id>.optuna.db after every change the driver makes
  to it (each new trial, each trial's end) and before Tune can snapshot a searcher state that refers to that
  change; a driver on another machine starts from the uploaded copy.
* Each trial is `trial_main`, a module-level function (Tuner.restore needs the same one back) around
  `run_trial`, which builds the trial's RunConfig, runs the one training loop with a reporter that writes the
  store and reports to Tune (with a checkpoint every `train.checkpoint_every` updates), and records how it
  ended. With `resources.workers > 1` it drives a nested TorchTrainer (engine/ray_train.py) whose rank 0 writes
  the store and whose metrics reach Tune through `TuneReportCallback`.
* The run id of a trial is `<sweep_id>-<trial_id>`. Kill-safety (the driver may be killed at any instant, then
  resumed): a trial whose run row is `completed` is never run again (a restarted one reports its stored values);
  a resumed trial rewinds its rows after the checkpoint it resumes from before writing new ones; and the report
  that carries the final checkpoint is sent only after the final evaluation is in the store, so a trial resumed
  from that checkpoint has nothing left to do but say `completed`, and one resumed from an earlier checkpoint
  rewinds the final evaluation's rows. No (run, step, split, metric) key is ever written twice.
* Truthful states: a trial that reached its budget (`budget_reached` in its last report) is never stopped by
  ASHA, even when max_t is a rung; it evaluates and is `completed`, and Optuna is told COMPLETE with its final
  values. A trial ASHA stopped is `stopped` (stopped_early) and Optuna is told PRUNED. A numerical divergence
  (NaN/inf loss or objective, invalid distribution parameters) is one error kind, `DivergenceError`, recorded
  `failed` and never retried (the trial ends itself instead of raising, so Tune has nothing to retry); Optuna is
  told FAIL. An objective that a trial's first evaluation does not report stops the whole sweep.
* RESULTS/sweeps/<sweep_id>.json holds the resolved spec (objectives with goals, parameters with bounds, log
  scales and conditions) for the analysis and dashboard code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune import Callback, Stopper
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from raygen.algorithms import Artifact
from raygen.config import RunConfig
from raygen.engine.evaluate import final_split_label
from raygen.engine.ray_train import LatestMetrics, ensure_ray, load_payload, resume_step, run_distributed
from raygen.engine.report import CHECKPOINT_NAME, StoreReporter, checkpoint_bytes
from raygen.engine.resources import ResourceError, preflight
from raygen.engine.sweep_spec import (
    ResolvedSweep,
    SpecError,
    load_spec,
    rankable,
    reported_metrics,
    resolve,
    trial_config,
)
from raygen.lifecycle import Heartbeat, error_text, mark_run, reopen_run, rewind_to_checkpoint, run_status
from raygen.results import RunRecorder, read_runs
from raygen.results.store import atomic_write_bytes, delete_file, exists, is_remote, label, read_bytes, remote

log = logging.getLogger(__name__)
progress_log = logging.getLogger("raygen.sweep.progress")  # the live table; the CLI prints it bare

JOB_KEY = "_raygen"  # the constant part of every trial's Tune config
BUDGET_KEY = "budget_reached"  # in a trial's reports once it has made every update of its budget
INTERRUPTED = "stopped with the sweep"  # the error text of a trial left unfinished by an interrupted sweep
TUNE_TRIAL_ATTR = "tune_trial_id"  # user attribute of each Optuna trial: the Tune trial it was drawn for
FAILED_KEY = "raygen_failed"  # a trial that ended itself after a failure Tune must not retry: its kind
DIVERGENCE, METRIC = "divergence", "metric"

# Messages of numerical divergence raised as other types: raygen's own distribution checks ("std must be > 0")
# and torch.distributions' argument validation ("... to satisfy the constraint ... but found invalid values").
_DIVERGENCE_TEXT = re.compile(
    r"NonFiniteLossError|NonFiniteMetricError|DivergenceError|must be > 0|to satisfy the constraint|"
    r"found invalid values|non-finite|not finite|(nan|inf) (loss|value)", re.IGNORECASE)


class DivergenceError(FloatingPointError):
    """The one error kind of numerical divergence: a NaN/inf loss or objective, or distribution parameters that
    left their domain (a noise scale that underflowed to 0). Never retried: replaying it diverges again."""


class NonFiniteMetricError(DivergenceError):
    """An objective metric of a finished trial is NaN or infinite (Optuna cannot be told such a value)."""


class MetricNameError(ValueError):
    """An objective the trial's reports do not contain: every trial would fail the same way, so the sweep stops."""


def is_divergence(err: BaseException | str | None) -> bool:
    if err is None:
        return False
    if isinstance(err, FloatingPointError):  # NonFiniteLossError, DivergenceError
        return True
    text = err if isinstance(err, str) else error_text(err)
    return bool(_DIVERGENCE_TEXT.search(text))


def run_id_for(sweep_id: str, trial_id: str) -> str:
    return f"{sweep_id}-{trial_id}"


def results_root(results: str | Path) -> str | Path:
    """The store as the sweep passes it around: a URL (`s3://bucket/prefix`, also when a `Path` made it
    `s3:/bucket/prefix`) for an object store, else an absolute path."""
    if not is_remote(results):
        return Path(results).expanduser().resolve()
    return label(results).rstrip("/")


def experiment_root(spec: ResolvedSweep, results: str | Path) -> str:
    if spec.storage:
        storage = spec.storage
    elif is_remote(results):
        storage = f"{results_root(results)}/tune"
    else:
        storage = str(Path(results) / "tune")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return storage.rstrip("/")


def tune_location(spec: ResolvedSweep, results: str | Path, path: str) -> tuple[str, Any]:
    """(path, filesystem) to give Tune for a path of the sweep's experiment. Under an object-store results root
    Tune uses the store's own client (the same endpoint and credentials as the store; Tune otherwise builds its
    own from the URL); a spec's `storage` is left to Tune, as it always was."""
    if spec.storage is None and is_remote(results):
        fs, inner = remote(path)
        return inner, fs
    return path, None


def experiment_path(spec: ResolvedSweep, results: str | Path, part: int = 0) -> str:
    """Tune experiment of the sweep (part 0), or of its k-th continuation with more trials."""
    return f"{experiment_root(spec, results)}/{spec.sweep_id}" + (f".{part}" if part else "")


def spec_path(results: str | Path, sweep_id: str) -> Path:
    return Path(results) / "sweeps" / f"{sweep_id}.json"


def optuna_url(spec: ResolvedSweep, results: str | Path) -> str:
    """The study's storage: the spec's URL, else RESULTS/optuna.db (one SQLite file, one study per sweep id);
    on an object store, the driver's working copy of the study (see MirroredStudy)."""
    if spec.optuna_storage:
        return spec.optuna_storage
    if is_remote(results):
        return f"sqlite:///{study_copy_path(results, spec.sweep_id)}"
    return f"sqlite:///{Path(results).expanduser().resolve() / 'optuna.db'}"


STUDY_CACHE_ENV = "RAYGEN_STUDY_CACHE"


def study_copy_path(results: str | Path, sweep_id: str) -> Path:
    """The driver's working copy of a sweep's study on an object store: $RAYGEN_STUDY_CACHE (default
    ~/.cache/raygen/studies) / <hash of the store URL> / <sweep_id>.db."""
    base = Path(os.environ.get(STUDY_CACHE_ENV) or Path.home() / ".cache" / "raygen" / "studies").expanduser()
    key = hashlib.sha256(str(results_root(results)).encode()).hexdigest()[:16]
    return base / key / f"{sweep_id}.db"


def study_store_path(results: str | Path, sweep_id: str) -> Path:
    """Where the store keeps a sweep's study when the store is an object store."""
    return Path(results) / "sweeps" / f"{sweep_id}.optuna.db"


class MirroredStudy(optuna.storages.RDBStorage):
    """A sweep's Optuna study for a store on object storage (SQLite needs a file system): a SQLite working copy
    on the driver (`study_copy_path`), uploaded whole to the store (`study_store_path`, one PUT: readers see
    the old or the new copy) by `push()`.

    The searcher pushes after every change the driver makes to the study (a trial asked for, a trial told)
    and before it returns to Tune, so the uploaded copy is never older than a searcher state Tune has
    snapshotted: a driver that resumes from the store never meets a Tune trial its study lacks. (Intermediate
    values ride along with the next push.) Pickled, it is only (store, sweep id): Tune pickles the searcher
    into its experiment, and a driver on another machine, or with another cache folder, opens its own working
    copy, which `fetch_study` prepared before the experiment was restored."""

    def __init__(self, results: str, sweep_id: str) -> None:
        self.results, self.sweep_id = str(results_root(results)), sweep_id
        self.local = study_copy_path(self.results, sweep_id)
        self.local.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(f"sqlite:///{self.local}")

    def __getstate__(self) -> dict[str, Any]:
        return {"results": self.results, "sweep_id": self.sweep_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["results"], state["sweep_id"])  # type: ignore[misc]

    def push(self) -> None:
        """Upload a consistent snapshot of the working copy (SQLite's backup API, not the raw file). A failed
        upload is logged and the sweep goes on: the working copy keeps the change, the next push carries it,
        and `fetch_study` keeps a working copy that is ahead of the store's."""
        push_study(self.results, self.sweep_id)


def _marker(local: Path) -> Path:
    return local.with_name(local.name + ".pushed")  # sha256 of the copy last uploaded from here


def push_study(results: str | Path, sweep_id: str) -> None:
    import sqlite3

    local = study_copy_path(results, sweep_id)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.push")
    try:
        source, target = sqlite3.connect(local), sqlite3.connect(tmp)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        data = tmp.read_bytes()
        atomic_write_bytes(study_store_path(results, sweep_id), data)
        atomic_write_bytes(_marker(local), hashlib.sha256(data).hexdigest().encode())
    except Exception:  # see MirroredStudy.push: the working copy keeps the change
        log.warning("could not upload the Optuna study of %s to %s (the next change retries)", sweep_id,
                    study_store_path(results, sweep_id), exc_info=True)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_study(results: str | Path, sweep_id: str) -> str:
    """Prepare the driver's working copy of a sweep's study before anything opens it; returns what was done.
    The working copy is kept when it descends from the store's copy (its last upload is what the store holds:
    it is equal or ahead, e.g. a change whose upload failed); otherwise the store's copy replaces it (a new
    machine, or a stale copy of an earlier sweep of the same name). No copy in the store: a new study."""
    local = study_copy_path(results, sweep_id)
    stored = study_store_path(results, sweep_id)
    data = read_bytes(stored) if exists(stored) else None
    pushed = _marker(local).read_text().strip() if _marker(local).is_file() else None
    if data is not None and local.is_file() and pushed == hashlib.sha256(data).hexdigest():
        return "kept"
    for stale in (local, _marker(local), local.with_name(local.name + "-journal")):
        stale.unlink(missing_ok=True)
    if data is None:
        return "new"
    atomic_write_bytes(local, data)
    atomic_write_bytes(_marker(local), hashlib.sha256(data).hexdigest().encode())
    return "fetched"


def study_storage(spec: ResolvedSweep, results: str | Path) -> Any:
    """The Optuna storage the searcher writes: MirroredStudy on an object store, else RDB at `optuna_url`."""
    if is_remote(results) and not spec.optuna_storage:
        return MirroredStudy(str(results), spec.sweep_id)
    return optuna.storages.RDBStorage(optuna_url(spec, results))


# ---------------------------------------------------------------------------------------------- trial side


def _trial_steps(config: Mapping[str, Any]) -> int:
    job = config[JOB_KEY]
    return int(config.get("train.steps", job["steps"]))


def budget_reached(result: Mapping[str, Any] | None) -> bool:
    """Whether a Tune result comes from a trial that made every update of its budget. Single-process trials say
    so (BUDGET_KEY); nested Train trials are judged by their step against the trial's train.steps."""
    if not result:
        return False
    if BUDGET_KEY in result:
        return bool(result[BUDGET_KEY])
    config = result.get("config")
    if isinstance(config, Mapping) and JOB_KEY in config and "step" in result:
        return int(result["step"]) >= _trial_steps(config)
    return False


class _TrialReporter:
    """The loop's `report` inside a trial: the store first, then Tune (through `send`).

    Tune gets checkpoints and evaluations; the running training means stay in the store. Once the budget is
    reached nothing more is sent until `finish()`: the last report (every value, the final checkpoint,
    BUDGET_KEY) follows the final evaluation, so a registered final checkpoint implies a stored evaluation.
    The first report of each evaluation split is checked for the sweep's objectives (`watch`).
    """

    def __init__(self, recorder: RunRecorder, config: RunConfig, send: Callable[[dict, bytes | None], None],
                 watch: Sequence[str]) -> None:
        self.recorder = recorder
        self.store = StoreReporter(recorder)
        self.steps = config.train.steps
        self.send = send
        self.latest = LatestMetrics()
        self.final_checkpoint: bytes | None = None
        self.last_step = 0
        self.declared = reported_metrics(config)
        # Splits the final evaluation writes may gain names only then; the others are complete at first sight.
        self.final_splits = {final_split_label(s) for s in config.eval.splits} | {"train"}
        self.watch = [w for w in watch if w.partition("/")[0] not in self.final_splits]
        self.seen: set[str] = set()

    def _check(self, metrics: Mapping[str, float]) -> None:
        from raygen.engine.sweep_spec import metric_known

        splits = {k.partition("/")[0] for k in metrics} - self.seen
        self.seen |= splits
        for name in self.watch:
            split = name.partition("/")[0]
            if split in splits and name not in metrics and not metric_known(name, self.declared):
                have = ", ".join(sorted(k for k in metrics if k.startswith(split + "/")))
                raise MetricNameError(f"objective {name} is not reported; the first {split} evaluation has: {have}")

    def __call__(
        self,
        step: int,
        metrics: dict[str, float],
        *,
        checkpoint: dict[str, Any] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None:
        self.store(step, metrics, artifacts=artifacts)
        self.last_step = max(self.last_step, step)
        self._check(metrics)
        payload = self.latest.update(step, metrics)
        data = None
        if checkpoint is not None:
            data = checkpoint_bytes(checkpoint)
            self.recorder.save_file(step, CHECKPOINT_NAME, "checkpoint", data)
        if step >= self.steps:
            self.final_checkpoint = data or self.final_checkpoint
            return
        if data is None and all(k.startswith("train/") for k in metrics):
            return
        self.send(payload, data)

    def finish(self) -> None:
        # BUDGET_KEY also after an early stop on patience (train.patience): the trial ended itself, by its rule.
        self.send({**self.latest.values, "step": self.last_step, BUDGET_KEY: True}, self.final_checkpoint)


def _tune_send(payload: dict[str, Any], data: bytes | None) -> None:
    tune_checkpoint, tmp = None, None
    if data is not None:
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
        raise MetricNameError(
            f"objective metric(s) {', '.join(missing)} never reported; reported: {', '.join(sorted(values))}"
        )
    bad = [f"{n}={values[n]}" for n in objectives if not math.isfinite(values[n])]
    if bad:
        raise NonFiniteMetricError(f"objective metric(s) not finite at the end of training: {', '.join(bad)}")


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's sampled parameters. An inactive conditional parameter is absent; a chosen null is None."""
    return {name: config[name] for name in config[JOB_KEY]["param_names"] if name in config}


def run_trial(config: dict[str, Any], trial_id: str, *, send: Callable[[dict, bytes | None], None],
              checkpoint_dir: str | None = None) -> None:
    """One trial, outside of Tune's API (tests call it directly): `send(payload, checkpoint_bytes)` reports."""
    opened: list[_TrialReporter] = []
    try:
        _run_trial(config, trial_id, send=send, checkpoint_dir=checkpoint_dir, opened=opened)
    finally:  # the trial's MLflow / W&B runs end however it ends: FINISHED only if its row says completed
        for reporter in opened:
            rec = reporter.recorder
            reporter.store.close(ok=run_status(rec.root, rec.run_id)[0] == "completed")


def _run_trial(config: dict[str, Any], trial_id: str, *, send: Callable[[dict, bytes | None], None],
               checkpoint_dir: str | None, opened: list[_TrialReporter]) -> None:
    from raygen.engine.loop import train

    if JOB_KEY not in config:
        raise RuntimeError("a trial without raygen's job settings: Tune restored an experiment without its state")
    job = config[JOB_KEY]
    run_id = run_id_for(job["sweep_id"], trial_id)
    params = trial_params(config)
    fixed = dict(job["fixed"])
    if job["gpu"] > 0 and job["workers"] == 1:
        fixed["device"] = "cuda"
    cfg = trial_config(job["algorithm"], job["dataset"], fixed, job["paths"], params)
    extra = {
        "sweep_id": job["sweep_id"],
        "trial_id": trial_id,
        "params": params,
        "resources": {**job["resources"], **_placement()},
        "workers": job["workers"],
    }
    if job.get("smoke"):
        extra["smoke"] = True
    results = job["results"]

    status, error = run_status(results, run_id)
    if status == "completed":
        # It finished before the driver died, unrecorded by Tune: never train it twice, just say how it ended.
        previous = reopen_run(results, run_id)
        send({**(previous.final if previous else {}), "step": cfg.train.steps, BUDGET_KEY: True}, None)
        return
    if status == "failed" and is_divergence(error):
        send({FAILED_KEY: DIVERGENCE, "error": error}, None)  # a resumed diverged trial diverges again
        return

    if job["workers"] > 1:
        _nested_trial(cfg, job, run_id, extra)
        return

    resume = load_payload(checkpoint_dir) if checkpoint_dir is not None else None
    recorder = RunRecorder(results, cfg, run_id=run_id, extra={**extra, "device": cfg.device})
    reporter = _TrialReporter(recorder, cfg, send, job["objectives"] + job["watch"])
    opened.append(reporter)
    if resume_step(resume) >= cfg.train.steps:
        # The final checkpoint is registered only after the final evaluation was stored: nothing is left to do
        # (and the evaluation's rows, written after that checkpoint's file, stay).
        recorder.rewind(resume_step(resume))
        reporter.latest.values.update(recorder.final)
        reporter.last_step = recorder.steps
        recorder.write_run("completed")
        reporter.finish()
        return
    # Rows after the checkpoint, and rows at its step written after it (an interrupted final evaluation), go
    # before new ones come.
    rewind_to_checkpoint(recorder, resume_step(resume))
    reporter.latest.values.update(recorder.final)  # a resumed trial carries what it measured before
    recorder.write_run("running")
    Heartbeat(recorder).start()  # a live trial never looks lost; it stops once the row says how the trial ended
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
        kind = DIVERGENCE if is_divergence(err) else METRIC if isinstance(err, MetricNameError) else None
        if kind is None:
            recorder.write_run("failed", error=error_text(err))
            raise  # Tune retries it (max_failures): a node loss or an out-of-memory may not happen again
        text = error_text(err)
        if kind == DIVERGENCE and not isinstance(err, DivergenceError):
            text = f"DivergenceError: {text}"
        recorder.write_run("failed", error=text)
        send({FAILED_KEY: kind, "error": text}, None)  # ends the trial without an exception: no retry
        return
    recorder.flush()
    try:
        reporter.finish()
    finally:  # also when the sweep is being stopped while this trial made its last report
        recorder.write_run("completed")


def trial_main(config: dict[str, Any]) -> None:
    """One Tune trial (module level: `Tuner.restore` must receive this same function)."""
    checkpoint = tune.get_checkpoint()
    trial_id = tune.get_context().get_trial_id()
    if checkpoint is None:
        run_trial(config, trial_id, send=_tune_send)
        return
    with checkpoint.as_directory() as directory:
        run_trial(config, trial_id, send=_tune_send, checkpoint_dir=directory)


def _nested_trial(cfg: RunConfig, job: dict[str, Any], run_id: str, extra: dict[str, Any]) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    # The inner run's name is deterministic, so a retried trial resumes its Train run from its checkpoint.
    try:
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
        # The run trained its budget and evaluated: say so (the workers' reports carry no BUDGET_KEY).
        done = reopen_run(job["results"], run_id)
        tune.report({**(done.final if done else {}), "step": cfg.train.steps, BUDGET_KEY: True})
    except Exception as err:
        _, error = run_status(job["results"], run_id)
        if not is_divergence(error or err):
            raise
        text = error if error and error.startswith("DivergenceError") else f"DivergenceError: {error or error_text(err)}"
        mark_run(job["results"], run_id, "failed", error=text)
        tune.report({FAILED_KEY: DIVERGENCE, "error": text})


# ---------------------------------------------------------------------------------------------- driver side


class RaygenOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study the truth: COMPLETE only for a trial that trained its whole budget (with
    its final values), PRUNED for one the scheduler stopped, FAIL for errors and non-finite values (never a NaN:
    `study.tell` raises on it and the sampler loses the trial). Reports made before the objective was first
    measured are skipped."""

    def _told(self, trial_id: str) -> bool:
        """Whether the study already holds this trial's end: the searcher restored after a killed driver is older
        than the study, which the driver had told before it died (telling it again raises)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or self._ot_study is None:
            return False
        try:
            finished = self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()
        except Exception:  # noqa: BLE001 - unknown: let OptunaSearch decide
            return False
        if finished:
            self._completed_trials.add(trial_id)
        return finished

    def _push(self) -> None:
        if isinstance(self._storage, MirroredStudy):
            self._storage.push()

    def suggest(self, trial_id: str) -> dict | None:
        try:
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if config is not None and ot_trial is not None:  # lets the driver match study and Tune trials
                ot_trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
            return config
        finally:
            self._push()  # before Tune snapshots a searcher state that knows this trial

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or FAILED_KEY in result or self._told(trial_id):
            return
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._told(trial_id):
            return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics] if result else []
        finite = bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if error or not result or FAILED_KEY in result or (budget_reached(result) and not finite):
            result, error = None, True  # FAIL
        elif not budget_reached(result):
            result, error = None, False  # PRUNED (OptunaSearch's state for no value and no error)
        super().on_trial_complete(trial_id, result=result, error=error)
        self._push()


def _sampler(spec: ResolvedSweep, part: int = 0):
    """The sampler of experiment part `part` (0: the sweep, k: its k-th `--more` continuation). Each part seeds its
    own stream: a continuation seeded like the sweep redrew the sweep's first random points (TPE's and the
    random sampler's draws before the history counts), re-running trials already in the study."""
    import optuna

    seed = spec.seed if spec.seed is None or part == 0 else spec.seed + 1_000_003 * part
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


def _searcher(spec: ResolvedSweep, storage: Any, *, points: bool = True, part: int = 0) -> RaygenOptunaSearch:
    metric: str | list[str]
    mode: str | list[str]
    if spec.multi_objective:
        metric, mode = [o.name for o in spec.objectives], [o.mode for o in spec.objectives]
    else:
        metric, mode = spec.objectives[0].name, spec.objectives[0].mode
    searcher = RaygenOptunaSearch(
        space=spec.space(), metric=metric, mode=mode, sampler=_sampler(spec, part), storage=storage,
        study_name=spec.sweep_id,
        points_to_evaluate=[dict(p) for p in spec.points] if spec.points is not None and points else None,
    )
    searcher._push()  # the study as created (and its enqueued grid points)
    return searcher


class BudgetASHA(ASHAScheduler):
    """ASHA that never stops a trial which has made its whole budget: when max_t is a rung (grace x factor^k =
    max_t) plain ASHA would stop it at its last training report, before its final evaluation."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if budget_reached(result) or FAILED_KEY in result:
            return self.CONTINUE
        config = getattr(trial, "config", None) or {}
        if JOB_KEY in config and int(result.get("step", 0)) >= _trial_steps(config):
            return self.CONTINUE  # a nested Train trial's last training report, before its final evaluation
        return super().on_trial_result(tune_controller, trial, result)


def _scheduler(spec: ResolvedSweep) -> BudgetASHA | None:
    if spec.early_terminate is None:
        return None
    e = spec.early_terminate
    # stop_last_trials=False: a trial reaching max_t ends by itself, after its final evaluation.
    return BudgetASHA(time_attr=e.time_attr, metric=e.metric, mode=e.mode, max_t=e.max_t,
                      grace_period=e.grace_period, reduction_factor=e.reduction_factor, brackets=e.brackets,
                      stop_last_trials=False)


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default repeats the whole config, including the job constants)."""
    return f"trial_{trial.trial_id}"


def _job(spec: ResolvedSweep, results: str | Path, storage: str | None) -> dict[str, Any]:
    r = spec.resources
    if spec.storage is None and is_remote(results):
        storage = None  # nested Train runs keep checkpoints in RESULTS/ray, through the store's client
    return {
        "sweep_id": spec.sweep_id,
        "results": str(results),
        "algorithm": spec.algorithm,
        "dataset": spec.dataset,
        "fixed": spec.fixed,
        "param_names": spec.param_names,
        "paths": spec.paths,
        "objectives": [o.name for o in spec.objectives],
        "watch": [spec.early_terminate.metric] if spec.early_terminate else [],
        "steps": spec.base_config.train.steps,
        "resources": r.to_json(),
        "workers": r.workers,
        "cpu": r.cpu,
        "gpu": r.gpu,
        "storage": storage,
        "train_max_failures": spec.train_max_failures,
        "smoke": spec.smoke,
    }


class SweepStop(Stopper):
    """Stops the whole experiment once a callback has set `reason` (checked by Tune at every step)."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reason is not None


class StoreCallback(Callback):
    """Runs in the driver: records what trials could not record themselves, stops the sweep when it cannot
    succeed, and logs the compact live table."""

    def __init__(self, results: str, spec: ResolvedSweep, stop: SweepStop, *, table_every_s: float = 30.0) -> None:
        self.results = results
        self.sweep_id = spec.sweep_id
        self.objectives = [o.name for o in spec.objectives]
        self.param_names = spec.param_names
        self.pending_timeout_s = spec.pending_timeout_s
        self.bundles = spec.resources.ray_bundles()
        self.stop = stop
        self.table_every_s = table_every_s
        self._pending_since: dict[str, float] = {}
        self._last_table = 0.0
        self._changed = False

    def __getstate__(self) -> dict[str, Any]:  # pickled with the experiment; clocks restart on resume
        return {**self.__dict__, "_pending_since": {}, "_last_table": 0.0}

    # -- trial ends
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A trial that finished by itself has written `completed`; one still `running` was stopped by ASHA.
        try:
            mark_run(self.results, run_id_for(self.sweep_id, trial.trial_id), "stopped",
                     error="stopped early by the scheduler", stopped_early=True, only_if=("running",))
        except Exception:  # Tune would count an exception here as the trial's error
            log.exception("could not record how trial %s ended", trial.trial_id)
        self._line(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = run_id_for(self.sweep_id, trial.trial_id)
        try:
            status, _ = run_status(self.results, run_id)
            if status in ("running", "stopped", None):  # e.g. its process or node died with it
                text = tune_error_text(trial)
                if status is None:
                    log.error("trial %s failed before it wrote its run row: %s", trial.trial_id, text)
                else:
                    mark_run(self.results, run_id, "failed", error=text)
        except Exception:
            log.exception("could not record the error of trial %s", trial.trial_id)
        self._line(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._changed = True
        if result.get(FAILED_KEY) == METRIC and self.stop.reason is None:
            self.stop.reason = f"{result.get('error')} (trial {trial.trial_id}; every trial would fail alike)"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._changed = True
        self._pending_since.pop(trial.trial_id, None)

    # -- waiting and the live table
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if any(t.status == "RUNNING" for t in trials):
            self._pending_since.clear()  # waiting behind the sweep's own trials is normal
        else:
            for t in trials:
                if t.status != "PENDING":
                    continue
                since = self._pending_since.setdefault(t.trial_id, now)
                if now - since > self.pending_timeout_s and self.stop.reason is None:
                    self._fail_pending(t, now - since)
        if self._changed and now - self._last_table >= self.table_every_s:
            self._last_table, self._changed = now, False
            for line in trial_table(trials, self.param_names, self.objectives):
                progress_log.info(line)

    def _fail_pending(self, trial: Any, waited: float) -> None:
        from raygen.engine.resources import cluster_shape

        try:
            have = cluster_shape().totals()
        except Exception:  # noqa: BLE001
            have = {}
        text = (f"ResourceError: waited {waited:.0f} s for {self.bundles} while no trial of the sweep ran "
                f"(cluster: {have}); pending_timeout_s is {self.pending_timeout_s:g}")
        self.stop.reason = f"trial {trial.trial_id}: {text}"
        try:
            job = trial.config[JOB_KEY]
            cfg = trial_config(job["algorithm"], job["dataset"], job["fixed"], job["paths"], trial_params(trial.config))
            RunRecorder(self.results, cfg, run_id=run_id_for(self.sweep_id, trial.trial_id),
                        extra={"sweep_id": self.sweep_id, "trial_id": trial.trial_id,
                               "params": trial_params(trial.config), "resources": job["resources"],
                               **({"smoke": True} if job.get("smoke") else {})}).write_run("failed", error=text)
        except Exception:
            log.exception("could not record pending trial %s", trial.trial_id)

    def _line(self, trial: Any) -> None:
        try:  # the table is a courtesy: never let it fail a trial or the sweep
            status, error = run_status(self.results, run_id_for(self.sweep_id, trial.trial_id))
        except Exception:  # noqa: BLE001
            status, error = None, None
        values = trial.last_result or {}
        objective = "  ".join(_fmt_value(values.get(o)) for o in self.objectives)
        text = f"trial {trial.trial_id} {status or trial.status.lower()}: {objective}"
        if status == "failed" and error:
            text += f"  ({error.strip().splitlines()[0][:160]})"  # one line: the store keeps the whole text
        progress_log.info(text)


def tune_error_text(trial: Any) -> str:
    """The real cause of a trial's error (ActorDiedError, node lost, out of memory, the exception it raised), not
    Tune's wrapper. Read from the trial's local error files first: when on_trial_error runs they may not have
    reached the experiment's storage yet (where Trial.get_error looks)."""
    import cloudpickle

    error: Any = None
    for load in (lambda: cloudpickle.loads(Path(trial.pickled_error_file).read_bytes()), trial.get_pickled_error):
        if error is None:
            with contextlib.suppress(Exception):
                error = load()
    if error is None:
        text = None
        for read in (lambda: Path(trial.error_file).read_text(), trial.get_error):
            if not text:
                with contextlib.suppress(Exception):
                    text = read()
        lines = [line for line in str(text or "").splitlines() if line.strip()]
        return lines[-1][:4000] if lines else "trial errored; Tune recorded no cause (see the trial's directory)"
    for _ in range(5):  # RayTaskError wraps the exception the trial raised in `.cause`
        inner = getattr(error, "cause", None)
        if not isinstance(inner, BaseException) or inner is error:
            break
        error = inner
    return error_text(error)


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def fmt_params(params: Mapping[str, Any], names: Sequence[str]) -> str:
    """name=value for each parameter; null is shown as null, an inactive parameter as '-'."""
    out = []
    for name in names:
        if name not in params:
            out.append(f"{name}=-")
        else:
            value = params[name]
            out.append(f"{name}={'null' if value is None else _fmt_value(value)}")
    return "  ".join(out)


def trial_table(trials: Sequence[Any], param_names: Sequence[str], objectives: Sequence[str]) -> list[str]:
    """The compact live table: trial, status, progress (steps), objective(s), parameters."""
    head = ["trial", "status", "step", *objectives, "parameters"]
    rows = []
    for t in trials:
        result = t.last_result or {}
        config = t.config or {}
        steps = _trial_steps(config) if JOB_KEY in config else None
        progress = f"{result.get('step', 0)}/{steps}" if steps else str(result.get("step", ""))
        params = {n: config[n] for n in param_names if n in config}
        rows.append([t.trial_id, t.status.lower(), progress, *(_fmt_value(result.get(o)) for o in objectives),
                     fmt_params(params, param_names)])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in [head, *rows]]


# ---------------------------------------------------------------------------------------------- outcome


@dataclass
class SweepResult:
    """What a sweep produced: the trials table (one row per trial, from the store), the best trial(s), Tune's
    ResultGrid of the last experiment part run here, and where everything is."""

    sweep_id: str
    results: Path | str  # a URL for an object store
    experiment: str
    optuna_storage: str
    trials: Any  # pandas.DataFrame
    best: list[dict[str, Any]] = field(default_factory=list)  # one per objective
    result_grid: Any = None
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stopped_because: str | None = None

    @property
    def best_trial(self) -> dict[str, Any] | None:
        return self.best[0] if self.best else None

    def summary(self) -> list[str]:
        """The lines `raygen sweep` ends with."""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "none"
        lines = [*self.notes, f"sweep {self.sweep_id}: {len(self.trials)} trials ({counts})"]
        if self.stopped_because:
            lines.append(f"stopped: {self.stopped_because}")
        if not self.best:
            lines.append("best: none (no trial completed its budget with a finite objective)")
        for b in self.best:
            lines.append(f"best {b['objective']} ({b['goal']}): {_fmt_value(b['value'])}  trial {b['trial_id']}"
                         f"  run {b['run_id']}")
            lines.append(f"  {fmt_params(b['params'], b['param_names'])}")
        lines += [
            f"store: {self.results}",
            f"optuna study '{self.sweep_id}': {self.optuna_storage}",
            *([f"  (the driver's working copy of {self.results}/sweeps/{self.sweep_id}.optuna.db)"]
              if is_remote(self.results) and self.optuna_storage.startswith("sqlite:") else []),
            "next:",
            f"  raygen report {self.results} --sweep {self.sweep_id}",
            f"  raygen dashboard {self.results}",
            f"  optuna-dashboard {self.optuna_storage}",
        ]
        return lines


def sweep_trials(results: Path, spec: ResolvedSweep) -> Any:
    """One row per trial of the sweep from the store: ids, status, steps, each parameter, each objective's final
    value. A parameter column holds None where the trial chose null and NaN where the parameter was inactive
    (conditional, not drawn); such a column is of dtype object so that pandas keeps the two apart. `params` holds
    the drawn values as a dict (an inactive parameter absent)."""
    import pandas as pd

    runs = read_runs(results)
    cols = ["trial_id", "run_id", "status", "stopped_early", "steps", "error", "params", *spec.param_names,
            *(o.name for o in spec.objectives)]
    if runs.empty or "sweep_id" not in runs.columns:
        return pd.DataFrame(columns=cols)
    mine = runs[runs["sweep_id"] == spec.sweep_id].sort_values("started_at").reset_index(drop=True)
    rows = []
    for row in mine.to_dict("records"):
        params = json.loads(row["params_json"]) if isinstance(row.get("params_json"), str) else {}
        out = {k: row.get(k) for k in ("trial_id", "run_id", "status", "stopped_early", "steps", "error")}
        out["params"] = params
        for name in spec.param_names:
            out[name] = params.get(name, math.nan)
        for o in spec.objectives:
            out[o.name] = row.get(f"final.{o.name}", math.nan)
        rows.append(out)
    frame = pd.DataFrame(rows, columns=cols)
    for name in spec.param_names:  # pandas would turn a chosen None into NaN, the mark of an inactive parameter
        if any(name in r["params"] and r["params"][name] is None for r in rows):
            frame[name] = pd.Series([r[name] for r in rows], dtype=object)
    return frame


def best_trials(trials: Any, spec: ResolvedSweep) -> list[dict[str, Any]]:
    """The best trial for each objective among the rankable ones (`sweep_spec.rankable`: completed, finite)."""
    out = []
    ok = trials[rankable(trials, [o.name for o in spec.objectives])] if len(trials) else trials
    for o in spec.objectives:
        if ok.empty:
            continue
        values = ok[o.name].astype(float)
        row = ok.loc[values.idxmin() if o.goal == "minimize" else values.idxmax()]
        out.append({"objective": o.name, "goal": o.goal, "value": float(row[o.name]), "trial_id": row["trial_id"],
                    "run_id": row["run_id"], "params": dict(row["params"]), "param_names": spec.param_names})
    return out


# ---------------------------------------------------------------------------------------------- running


def write_spec(spec: ResolvedSweep, results: str | Path, *, resume: bool, planned: int | None = None) -> int:
    """RESULTS/sweeps/<sweep_id>.json; a resumed sweep must have the same resolved spec. `planned` (the trials
    of every experiment part started so far) is kept in it; returns the previous value (0 for a new sweep)."""
    path = spec_path(results, spec.sweep_id)
    document = {**spec.to_json(), "fingerprint": spec.fingerprint()}
    before = 0
    if resume and exists(path):
        previous = json.loads(read_bytes(path))
        before = int(previous.get("planned", previous.get("num_samples") or 0))
        if previous.get("fingerprint") != document["fingerprint"]:
            raise SpecError(
                f"sweep '{spec.sweep_id}' already exists in {results} with a different spec (Tune cannot change a "
                f"search space on resume): give the spec a new name, or delete {path.parent / path.name} and "
                "the sweep's Tune directory"
            )
    document["planned"] = planned if planned is not None else before
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode())
    return before


def _exists(path: str, filesystem: Any = None) -> bool:
    """Whether Tune can restore the experiment: its tuner.pkl (all `Tuner.can_restore` checks) and, locally, a
    snapshot of its state (without one Tune "restores" an empty experiment whose trials have no config)."""
    if filesystem is not None:  # the store's object store: the same checks, through its client
        import pyarrow.fs as pafs

        if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
            return False
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return any(_SNAPSHOT.match(i.base_name) and i.base_name.startswith("experiment_state-") for i in infos)
    if "://" in path:
        return tune.Tuner.can_restore(path)
    return Path(path).is_dir() and tune.Tuner.can_restore(path) and any(Path(path).glob("experiment_state-*.json"))


_SNAPSHOT = re.compile(r"^(experiment_state|search_gen_state|searcher-state)-(.+)\.(json|pkl)$")


def _snapshot_ok(path: Path) -> bool:
    import cloudpickle

    try:
        data = path.read_bytes()
    except OSError:
        return False
    for load in (json.loads, cloudpickle.loads):  # search_gen_state-*.json is a pickle, despite its name
        try:
            load(data)
            return bool(data)
        except Exception:  # noqa: BLE001, S112 - empty, truncated or otherwise unreadable: try the other format
            continue
    return False


def repair_snapshots(path: str) -> list[str]:
    """Tune rewrites its experiment snapshot (experiment_state-, search_gen_state-, searcher-state-<session>) in
    place, and restores from the newest session's files without checking them: a driver killed while they were
    written leaves them empty or truncated, and Tune then starts the experiment over with trials that have no
    config. Keep the newest session whose three files are all readable; move the newer ones aside
    (`broken-<name>`), so Tune restores from the last complete snapshot. Local storage only."""
    if "://" in path or not Path(path).is_dir():
        return []
    sessions: dict[str, list[Path]] = {}
    for f in Path(path).iterdir():
        match = _SNAPSHOT.match(f.name)
        if match:
            sessions.setdefault(match.group(2), []).append(f)
    good = [k for k, files in sessions.items() if len(files) == 3 and all(_snapshot_ok(f) for f in files)]
    keep = max(good, default="")
    moved = []
    for session, files in sessions.items():
        if session > keep or session not in good:
            for f in files:
                f.rename(f.with_name(f"broken-{f.name}"))
                moved.append(f.name)
    if moved:
        log.warning("moved aside unreadable Tune snapshot files of a killed driver: %s", ", ".join(sorted(moved)))
    return moved


def _parts(spec: ResolvedSweep, results: str | Path) -> list[str]:
    """The sweep's existing Tune experiments: the first, then each continuation."""
    out = []
    while True:
        path = experiment_path(spec, results, len(out))
        repair_snapshots(path)
        if not _exists(*tune_location(spec, results, path)):
            return out
        out.append(path)


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Without --verbose, Ray's and Tune's own console output (status tables, per-trial config dumps, worker
    logs) is kept out; raygen's live table replaces it."""
    if verbose:
        yield
        return
    import warnings

    import optuna

    names = ("ray", "ray.tune", "ray.train", "ray.data", "ray._private")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    # A failed trial is one raygen line with its cause (StoreCallback); Tune's own ERROR lines about it are a
    # ~25-line traceback ("Trial task failed for trial ...") and "Trials did not complete". An error of the
    # experiment itself is raised, not logged.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..."
    try:
        with warnings.catch_warnings():
            # A resumed trial reports its iterations again; Optuna keeps the first value and says so each time.
            warnings.filterwarnings("ignore", message="The reported value is ignored", category=UserWarning)
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        optuna.logging.set_verbosity(verbosity)


def _reconcile(results: str | Path, spec: ResolvedSweep, known: set[str], storage_url: str, *,
               resumable: bool = True) -> list[str]:
    """After the experiment: no row of this sweep stays `running`. A trial the experiment still holds unfinished
    (the sweep was interrupted; also one still pending) is stored `stopped` and stays RUNNING in the Optuna study,
    because rerunning the sweep resumes it and then tells its real end (a FAIL cannot be changed); not so when the sweep
    stopped itself (`resumable=False`: a misnamed objective, a trial pending too long). A row Tune never recorded
    (the driver died right after its trial wrote it) is marked failed as abandoned, and so is every other
    RUNNING Optuna trial."""
    notes = []
    interrupted: set[str] = set()
    runs = read_runs(results)
    if not runs.empty and "sweep_id" in runs.columns:
        for row in runs[(runs["sweep_id"] == spec.sweep_id) & (runs["status"] == "running")].to_dict("records"):
            if row["trial_id"] in known:
                mark_run(results, row["run_id"], "stopped", error=INTERRUPTED, only_if=("running",))
                interrupted.add(row["trial_id"])
            else:
                mark_run(results, row["run_id"], "failed", only_if=("running",),
                         error="abandoned: the sweep driver was killed before Tune recorded this trial; the search "
                               "drew another in its place")
                notes.append(f"trial {row['trial_id']} was abandoned by a killed driver (marked failed)")
    try:
        import optuna

        study = optuna.load_study(study_name=spec.sweep_id, storage=storage_url)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if not resumable or t.user_attrs.get(TUNE_TRIAL_ATTR) not in known:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    except Exception:
        log.debug("optuna study %s not reconciled", spec.sweep_id, exc_info=True)
    if interrupted and resumable:
        notes.append("interrupted: unfinished trials are stored as stopped (in the Optuna study: still running); "
                     "run the same command again to resume them")
    return notes


def _check_study_kept(spec: ResolvedSweep, results: str | Path, storage_url: str) -> None:
    """A resumed or continued sweep needs its Optuna study: a sampler without its history draws again what was
    tried. A study file lost or emptied (SQLite reads
    a 0-byte file as an empty database, and the study would silently start over) is refused in one line."""
    import optuna

    done = sweep_trials(results, spec)
    if done.empty:
        return
    try:
        optuna.load_study(study_name=spec.sweep_id, storage=storage_url)
    except KeyError:
        raise SpecError(f"the Optuna study '{spec.sweep_id}' is not in {storage_url}, yet the store holds "
                        f"{len(done)} trials of the sweep: its study file was lost or emptied; put it back (without "
                        "its history the sampler would repeat what was tried) or run the spec under a new name") from None


def run_sweep(
    spec: ResolvedSweep,
    results: str | Path,
    *,
    resume: bool | None = None,
    more: int = 0,
    address: str | None = None,
    verbose: bool = False,
    table_every_s: float = 30.0,
) -> SweepResult:
    """Run, resume or continue a sweep.

    `resume=None` resumes automatically when the sweep exists; `resume=True` requires it; `resume=False` refuses
    to touch an existing one. `more=N` adds N trials to the sweep's Optuna study once every earlier trial has
    ended (a finished sweep otherwise has nothing left to do, and says so)."""
    results = results_root(results)
    # a missing bucket or credentials, a file or a read-only folder as the store, an unusable
    # $RAYGEN_HEARTBEAT_S (each trial's heartbeat reads it), a data file that does not load (every trial would
    # leave a `failed` row): one line, before Ray starts. The data is checked with the fixed settings unless
    # the search space holds data.* settings, which only the trials know.
    from raygen.data import DataError
    from raygen.engine.local import RunSetupError, check_data, check_heartbeat, check_writable

    try:
        check_heartbeat()
        check_writable(results)
        if not any(spec.paths.get(name, name).startswith("data.") for name in spec.param_names):
            check_data(spec.base_config)
    except (RunSetupError, DataError) as err:  # it names the store as typed (`raygen.results.store.label`)
        raise SpecError(str(err)) from None
    mirrored = is_remote(results) and not spec.optuna_storage
    if mirrored:  # before anything (Tune's restore included) opens the study
        log.info("Optuna study of %s: %s working copy %s", spec.sweep_id, fetch_study(results, spec.sweep_id),
                 study_copy_path(results, spec.sweep_id))
    parts = _parts(spec, results)
    if resume is True and not parts:
        raise SpecError(f"--resume: no sweep to resume at {experiment_path(spec, results)}")
    if resume is False and parts:
        raise SpecError(f"sweep '{spec.sweep_id}' already exists at {parts[0]}; resume it or rename the spec")
    if more and spec.method == "grid":
        raise SpecError("--more: a grid sweep has a fixed set of points; raise run_cap or list more values")
    if more < 0:
        raise SpecError(f"--more must be positive (got {more})")
    planned = write_spec(spec, results, resume=bool(parts))
    # New trials: all of run_cap for a new sweep; for an existing one, --more and any rise of run_cap.
    add = more + max(0, spec.num_samples - planned) if parts else spec.num_samples + more
    storage_url = optuna_url(spec, results)
    if parts:
        _check_study_kept(spec, results, storage_url)

    # Reports made before the objective is first measured lack it; Tune would reject them (strict metric
    # checking is read in the driver). RaygenOptunaSearch and ASHA skip such reports; a misspelt objective is
    # refused by validation or, at the latest, by the trial's first evaluation.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Snapshot the experiment at least every second, so a killed driver loses as little as possible.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with _quiet(verbose):
        ensure_ray(address, log_to_driver=verbose)
        try:
            preflight(spec.resources.ray_bundles(), what=f"each trial of {spec.sweep_id}")
        except ResourceError as err:
            if not parts:  # nothing ran: a refused sweep leaves no spec behind (the dashboard listed it, empty)
                with contextlib.suppress(OSError):
                    delete_file(spec_path(results, spec.sweep_id))
            hint = "" if spec.smoke or spec.resources.gpu == 0 else " (try --smoke: CPU only, tiny trials)"
            raise SpecError(f"resources: {err}{hint}") from None
        trainable = tune.with_resources(trial_main, spec.resources.trial_bundle())
        notes: list[str] = []
        grid = None
        stop = SweepStop()
        known: set[str] = set()
        before = _trial_states(sweep_trials(results, spec))
        if parts:
            log.info("resuming sweep %s from %s", spec.sweep_id, parts[-1])
            path, filesystem = tune_location(spec, results, parts[-1])
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
            grid = tuner.fit()
            known |= _grid_trials(grid)
            stop = _stopper_of(tuner) or stop
        after = _trial_states(sweep_trials(results, spec))
        have, resumed = len(after), sum(state != before.get(run) for run, state in after.items())
        if parts and not add and resumed == 0:
            cap = f"run_cap {spec.num_samples}" + (f" and {planned - spec.num_samples} added with --more"
                                                   if planned > spec.num_samples else "")
            notes.append(f"sweep {spec.sweep_id} had already run its {have} trials ({cap});"
                         f" add trials with --more N")
        elif parts and not add:
            notes.append(f"resumed sweep {spec.sweep_id} ({resumed} trials ended now)")
        if add and stop.reason is None:
            part = len(parts)
            if part:
                notes.append(f"continuing the Optuna study of {spec.sweep_id} ({have} trials so far) with "
                             f"{add} more (experiment part {part})")
            write_spec(spec, results, resume=bool(parts), planned=planned + add)
            grid, new_stop, new_known = _fit_new(spec, results, part, add, trainable, storage_url, verbose,
                                                 table_every_s)
            stop, known = new_stop, known | new_known
        notes += _reconcile(results, spec, known, storage_url, resumable=stop.reason is None)
        if mirrored:
            push_study(results, spec.sweep_id)  # what _reconcile told, and the intermediate values
    trials = sweep_trials(results, spec)
    out = SweepResult(spec.sweep_id, results, experiment_path(spec, results), storage_url, trials,
                      best=best_trials(trials, spec), result_grid=grid, notes=notes, stopped_because=stop.reason,
                      statuses={str(k): int(v) for k, v in trials["status"].value_counts().items()})
    log.info("sweep %s: %s", spec.sweep_id, out.statuses)
    return out


def _trial_states(trials: Any) -> dict[str, tuple[str, str | None]]:
    """run id -> (status, error) of each trial row: what a resume changed."""
    import pandas as pd

    return {r.run_id: (r.status, None if pd.isna(r.error) else r.error) for r in trials.itertuples()}


def _stopper_of(tuner: Any) -> SweepStop | None:
    with contextlib.suppress(Exception):
        stop = tuner._local_tuner.get_run_config().stop
        if isinstance(stop, SweepStop):
            return stop
    return None


def _grid_trials(grid: Any) -> set[str]:
    """The trial ids of a ResultGrid (from each trial's directory name, which trial_dirname makes)."""
    out = set()
    for result in grid:
        with contextlib.suppress(Exception):
            out.add(Path(result.path).name.removeprefix("trial_"))
    return out


def _fit_new(spec: ResolvedSweep, results: str | Path, part: int, count: int, trainable: Any, storage_url: str,
             verbose: bool, table_every_s: float) -> tuple[Any, SweepStop, set[str]]:
    log.info("starting sweep %s: %d trials, %d at a time, in %s", spec.sweep_id, count, spec.max_concurrent,
             experiment_path(spec, results, part))
    stop = SweepStop()
    root = experiment_root(spec, results)
    storage_path, storage_filesystem = tune_location(spec, results, root)
    tuner = tune.Tuner(
        trainable,
        param_space={JOB_KEY: _job(spec, results, root)},
        tune_config=tune.TuneConfig(
            search_alg=_searcher(spec, study_storage(spec, results), points=part == 0, part=part),
            scheduler=_scheduler(spec),
            num_samples=count,
            max_concurrent_trials=spec.max_concurrent,
            # A finished trial's process takes the next trial: no new Python, torch and raygen imports
            # per trial (seconds each, a large share of short trials). The loop reseeds every run.
            reuse_actors=True,
            trial_name_creator=trial_dirname,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment_path(spec, results, part).rsplit("/", 1)[1],
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[StoreCallback(str(results), spec, stop, table_every_s=table_every_s)],
            verbose=2 if verbose else 0,
        ),
    )
    grid = tuner.fit()
    return grid, stop, _grid_trials(grid)


def sweep(
    spec: ResolvedSweep | Mapping[str, Any] | str | Path,
    results: str | Path = "results",
    *,
    smoke: bool = False,
    resume: bool | None = None,
    more: int = 0,
    address: str | None = None,
    verbose: bool = False,
) -> SweepResult:
    """Run a sweep from Python: a spec file path, a spec mapping (the YAML's content as a dict) or a resolved
    spec. Returns a SweepResult: `.trials` (DataFrame, one row per trial), `.best_trial`, `.result_grid`
    (Tune's ResultGrid), `.summary()`.

        import raygen
        out = raygen.sweep({"name": "lr", "algorithm": "walkback", "dataset": "digits",
                            "metric": {"name": "valid/lower_bound", "goal": "maximize"}, "run_cap": 4,
                            "parameters": {"train.lr": {"min": 1.0e-4, "max": 1.0e-2, "log": True}}},
                           results="results", smoke=True)
        print(out.best_trial)
    """
    if isinstance(spec, (str, Path)):
        resolved = load_spec(spec, smoke=smoke)
    elif isinstance(spec, Mapping):
        resolved = resolve(spec, smoke=smoke)
    else:
        resolved = spec
    return run_sweep(resolved, results, resume=resume, more=more, address=address, verbose=verbose)
