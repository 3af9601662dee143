"""raygen from Python (notebooks, scripts): train a run, open a results store, sample and evaluate runs.

    import raygen

    run = raygen.train("walkback", "toy2d:mog", steps=500, results="results")   # -> Run
    run.final["test/lower_bound"]              # final values (the run row's final.* columns)
    run.curve("valid/lower_bound")             # a metric by update (pandas Series)
    x = run.sample(256, seed=1)                # numpy array (256, *data shape)
    run.evaluate(parzen_samples=1000)          # the evaluation suite again, appended to the store

    store = raygen.open("results")             # -> Store
    store.runs, store.metrics, store.artifacts # DataFrames
    store.run("latest")                        # -> Run (id, unique prefix or "latest")

`raygen sample` and `raygen evaluate` call `sample_run` and `evaluate_run` below: the CLI and this API share
one implementation. Importing this module is cheap; torch, pandas and Ray load on first use.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from raygen.config import RunConfig

log = logging.getLogger(__name__)

__all__ = ["Run", "Samples", "Store", "evaluate_run", "open", "sample_run", "train"]


def _ensure_logging() -> None:
    """In a notebook or a bare script nothing shows INFO records (Python's last-resort handler prints only
    warnings), so a run would be silent for minutes. When no handler is configured at all, give raygen's
    logger one on stderr; a configured application's logging is left alone."""
    raygen_log = logging.getLogger("raygen")
    if logging.getLogger().handlers or raygen_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    raygen_log.addHandler(handler)
    if raygen_log.level == logging.NOTSET:
        raygen_log.setLevel(logging.INFO)


# ---------------------------------------------------------------------------------------------- train


def train(
    algorithm: str,
    dataset: str,
    *,
    results: str | Path = "results",
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    **bare_overrides: Any,
) -> Run:
    """Train `algorithm` on `dataset` into the results store and return the finished Run.

    The config is built as by `raygen train`: class defaults < the algorithm's presets for the dataset <
    `config` (a YAML file, or a mapping of the same shape) < `overrides` (dotted keys, e.g.
    {"train.lr": 1e-3}) < `bare_overrides` (unique bare keys, e.g. lr=1e-3, tensorboard=True) < steps, seed,
    device. `workers`: data-parallel Ray Train workers (None: in this process, no Ray). `progress`: None
    follows `train.progress` (a bar in a terminal or notebook, else a log line every train.progress_every
    updates). Errors are raised as in the CLI: ConfigError, DataError, RunSetupError, ... with a one-line
    message; a run that failed after it started is in the store with its error.
    """
    from raygen.config import build_config

    tree = dict(overrides or {})
    tree.update(bare_overrides)
    for key, value in (("train.steps", steps), ("seed", seed), ("device", device)):
        if value is not None:
            tree[key] = value
    base, file = (config, None) if isinstance(config, Mapping) else (None, config)
    cfg = build_config(base, algorithm=algorithm, dataset=dataset, file=file, overrides=tree)
    _ensure_logging()
    if workers is None:
        from raygen.engine.local import run_local

        run_id = run_local(cfg, results, progress=progress)
    else:
        from raygen.engine.ray_train import run_distributed

        run_id = run_distributed(cfg, results, workers=workers)
    return Run(results, run_id)


# ---------------------------------------------------------------------------------------------- sample, evaluate


@dataclass
class Samples:
    """What `sample_run` drew: `array` (n, *data shape) in the data space the model was trained on (None
    when not asked for) and the picture files written into the run's files (empty when not asked for)."""

    run_id: str
    array: np.ndarray | None = None
    paths: list[Path] = field(default_factory=list)


def sample_run(
    results: str | Path,
    run: str,
    *,
    n: int = 64,
    seed: int = 0,
    chain_steps: int | None = None,
    device: str | None = None,
    array: bool = True,
    pictures: bool = True,
) -> Samples:
    """Draw new samples from a run's checkpoint (`raygen sample` is this with array=False). `pictures`: the
    algorithm's sample and chain pictures of `n` samples, saved as `sample-seed<seed>-<name>` next to the run's
    files and indexed in the store's artifacts; `array`: `n` more samples returned as a numpy array."""
    import torch

    from raygen.engine.local import check_writable, restore
    from raygen.results import RunRecorder, find_run

    overrides: dict[str, Any] = {"eval.sample_count": n}
    if chain_steps is not None:
        overrides["eval.chain_steps"] = chain_steps
    find_run(results, run)  # a store that does not exist is not created by the check below
    if pictures:
        check_writable(results)  # before the work, not after it
    algo, dataset, cfg, run_id = restore(results, run, device=device, overrides=overrides)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    out = Samples(run_id)
    algo.eval()
    with torch.no_grad():
        if pictures:
            recorder = RunRecorder(results, cfg, run_id=run_id)
            for artifact in algo.artifacts(dataset, generator=generator):
                name = f"sample-seed{seed}-{artifact.name}"
                out.paths.append(recorder.save_file(algo.updates, name, artifact.kind, artifact.data))
        if array:
            out.array = algo.sample(n, generator=generator).detach().cpu().numpy()
    return out


def evaluate_run(
    results: str | Path,
    run: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, float]:
    """Run the evaluation suite (`eval.splits`) on a run's checkpoint and append the numbers to the store
    (the run row's final.* follow). `overrides`: eval.* keys only. Returns {"split/metric": value}."""
    import torch

    from raygen.config import ConfigError
    from raygen.engine.evaluate import evaluation_suite
    from raygen.engine.local import check_writable, restore
    from raygen.engine.report import StoreReporter
    from raygen.results import RunRecorder, find_run

    overrides = dict(overrides or {})
    bad = [k for k in overrides if not k.startswith("eval.")]
    if bad:
        raise ConfigError(f"evaluate accepts only eval.* overrides, got {', '.join(bad)}")
    find_run(results, run)  # a store that does not exist is not created by the check below
    check_writable(results)  # before the evaluation, which can take long, not after it
    algo, dataset, cfg, run_id = restore(results, run, device=device, overrides=overrides)
    torch.manual_seed(seed)
    metrics, artifacts = evaluation_suite(algo, dataset, cfg, torch.Generator().manual_seed(seed), pictures=False)
    reporter = StoreReporter(RunRecorder(results, cfg, run_id=run_id))
    try:
        reporter(algo.updates, metrics, artifacts=artifacts)
    finally:
        reporter.close()
    return metrics


# ---------------------------------------------------------------------------------------------- reading


class Run:
    """One run of a results store. Every property reads the store again, so a run in progress shows its
    latest state."""

    def __init__(self, results: str | Path, run_id: str) -> None:
        self.results = Path(results)
        self.id = run_id

    def __repr__(self) -> str:
        row = self.row
        return f"Run('{self.id}', {self.status}, {row.get('steps')} updates, {row.get('dataset')})"

    @property
    def row(self) -> dict[str, Any]:
        """The run row (run_id, algorithm, dataset, status, steps, wall_time_s, config.*, final.*, ...)."""
        from raygen.lifecycle import run_row

        row = run_row(self.results, self.id)
        if row is None:
            raise KeyError(f"run '{self.id}' not found in {self.results}")
        return row

    @property
    def config(self) -> RunConfig:
        """The run's fully resolved config."""
        import json

        from raygen.config import RunConfig

        return RunConfig.model_validate(json.loads(self.row["config_json"]))

    @property
    def status(self) -> str:
        """completed, failed, stopped, running, or lost (running, but its heartbeat stopped)."""
        import pandas as pd

        from raygen.lifecycle import effective_status

        return str(effective_status(pd.DataFrame([self.row]))[0])

    @property
    def metrics(self) -> pd.DataFrame:
        """Long table of every value the run reported: step, split, metric, value, time (sorted by step)."""
        from raygen.results import read_metrics

        frame = read_metrics(self.results, [self.id])
        return frame.sort_values(["step", "time"], kind="stable").reset_index(drop=True)

    @property
    def final(self) -> dict[str, float]:
        """{"split/metric": value}: each metric's latest finite value (the run row's final.* columns)."""
        import math

        return {k[len("final."):]: float(v) for k, v in self.row.items()
                if k.startswith("final.") and v is not None and math.isfinite(v)}

    def curve(self, metric: str) -> pd.Series:
        """One metric ("valid/lower_bound") by update; the latest value where a step was written twice."""
        split, _, name = metric.partition("/")
        frame = self.metrics
        frame = frame[(frame["split"] == split) & (frame["metric"] == name)]
        if frame.empty:
            known = sorted({f"{s}/{m}" for s, m in zip(self.metrics["split"], self.metrics["metric"])})
            raise KeyError(f"run {self.id} has no metric '{metric}' (it has: {', '.join(known)})")
        series = frame.drop_duplicates("step", keep="last").set_index("step")["value"]
        return series.rename(metric)

    @property
    def artifacts(self) -> pd.DataFrame:
        """The run's files (pictures, checkpoint): step, name, kind, path (absolute), time."""
        from raygen.results import read_artifacts

        frame = read_artifacts(self.results)
        frame = frame[frame["run_id"] == self.id].sort_values(["step", "time"], kind="stable").reset_index(drop=True)
        return frame.assign(path=[str(self.results / p) for p in frame["path"]])

    @property
    def files(self) -> Path:
        """The folder of the run's files."""
        return self.results / "files" / self.id

    def sample(self, n: int = 64, *, seed: int = 0, pictures: bool = False, chain_steps: int | None = None,
               device: str | None = None) -> np.ndarray:
        """`n` new samples from the run's checkpoint as a numpy array (n, *data shape), in the data space the
        model was trained on. `pictures=True` also writes the sample and chain pictures, as `raygen sample`."""
        out = sample_run(self.results, self.id, n=n, seed=seed, chain_steps=chain_steps, device=device,
                         pictures=pictures)
        assert out.array is not None
        return out.array

    def evaluate(self, *, seed: int = 0, device: str | None = None, **eval_overrides: Any) -> dict[str, float]:
        """Run the evaluation suite again (`raygen evaluate`): eval.* keys without the prefix, e.g.
        `run.evaluate(parzen_samples=1000, repeats=3)`. The numbers are appended to the store and returned."""
        overrides = {k if k.startswith("eval.") else f"eval.{k}": v for k, v in eval_overrides.items()}
        return evaluate_run(self.results, self.id, overrides, seed=seed, device=device)


class Store:
    """A results store (`raygen.open(path)`). Every property reads the files again (runs in progress included)."""

    def __init__(self, results: str | Path) -> None:
        self.results = Path(results)

    def __repr__(self) -> str:
        return f"Store('{self.results}', {len(self.runs)} runs)"

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run, sorted by start: run_id, algorithm, dataset, status (as `raygen runs` shows it:
        `lost` for a running run whose heartbeat stopped), steps, wall_time_s, config.*, final.*, ..."""
        from raygen.lifecycle import effective_status
        from raygen.results import read_runs

        frame = read_runs(self.results)
        if frame.empty:
            return frame
        frame = frame.assign(status=effective_status(frame).to_numpy())
        return frame.sort_values("started_at", kind="stable").reset_index(drop=True)

    @property
    def metrics(self) -> pd.DataFrame:
        """Every metric row of every run: run_id, step, split, metric, value, time."""
        from raygen.results import read_metrics

        return read_metrics(self.results)

    @property
    def artifacts(self) -> pd.DataFrame:
        """Every file of every run: run_id, step, name, kind, path (relative to the store), time."""
        from raygen.results import read_artifacts

        return read_artifacts(self.results)

    def run(self, run: str = "latest") -> Run:
        """A run by id, unique id prefix, or "latest" (KeyError naming the store when there is none)."""
        from raygen.results import find_run

        return Run(self.results, find_run(self.results, run))


def open(results: str | Path = "results") -> Store:  # raygen.open, as the issue asks (shadows open here)
    """Open a results store for reading (FileNotFoundError when `results` is not one)."""
    from raygen.results.store import exists, is_remote

    root = Path(results)
    if not (exists(root / "runs") if is_remote(root) else (root / "runs").is_dir()):
        raise FileNotFoundError(f"{root} is not a raygen results store (no runs/ folder)")
    return Store(root)
