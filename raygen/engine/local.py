"""In-process runner (`raygen train` without --workers): no Ray at all."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from raygen.algorithms import Algorithm
from raygen.config import RunConfig
from raygen.data import Dataset
from raygen.engine.loop import build, resolve_device, train
from raygen.engine.report import CHECKPOINT_NAME, StoreReporter
from raygen.results import RunRecorder, find_run

log = logging.getLogger(__name__)


def run_recorded(config: RunConfig, recorder: RunRecorder, body) -> None:
    """Mark the run running, execute `body()`, and record how it ended (completed, stopped or failed)."""
    recorder.write_run("running")
    try:
        body()
    except KeyboardInterrupt:
        recorder.flush()
        recorder.write_run("stopped", error="interrupted by the user")
        raise
    except BaseException as err:
        recorder.flush()
        recorder.write_run("failed", error=f"{type(err).__name__}: {err}")
        raise
    recorder.flush()
    recorder.write_run("completed")


def run_local(
    config: RunConfig,
    results: str | Path,
    *,
    run_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> str:
    """Train in this process, writing the run into the results store. Returns the run id."""
    device = resolve_device(config.device)
    recorder = RunRecorder(results, config, run_id=run_id, extra={"device": str(device), **(extra or {})})
    show = config.train.progress if progress is None else progress
    bar = tqdm(total=config.train.steps, desc=recorder.run_id, unit="upd", disable=not show or not sys.stderr.isatty())

    def on_progress(step: int, total: int, metrics: dict[str, float]) -> None:
        bar.update(step - bar.n)
        shown = {k.split("/", 1)[-1]: f"{v:.4g}" for k, v in metrics.items() if k.startswith(("train/", "valid/"))}
        if shown:
            bar.set_postfix(dict(list(shown.items())[:4]), refresh=False)

    try:
        run_recorded(config, recorder, lambda: train(config, StoreReporter(recorder), progress=on_progress))
    finally:
        bar.close()
    log.info("run %s written to %s", recorder.run_id, results)
    return recorder.run_id


def checkpoint_path(results: str | Path, run: str) -> Path:
    run_id = find_run(results, run)
    path = Path(results) / "files" / run_id / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"run {run_id} has no checkpoint at {path}")
    return path


def restore(
    results: str | Path, run: str, *, overrides: Mapping[str, Any] | None = None, device: str | None = None
) -> tuple[Algorithm, Dataset, RunConfig, str]:
    """Rebuild a trained algorithm from its checkpoint (the config travels inside the checkpoint)."""
    path = checkpoint_path(results, run)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file: say which one
        raise RuntimeError(f"cannot read checkpoint {path}: {err}") from None
    config = RunConfig.model_validate(payload["config"])
    if device is not None:
        overrides = {**(overrides or {}), "device": device}
    if overrides:
        config = config.with_overrides(overrides)
    algo, dataset = build(config)
    algo.load_state(payload["algorithm"])
    return algo, dataset, config, path.parent.name
