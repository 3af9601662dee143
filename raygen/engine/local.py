"""In-process runner (`raygen train` without --workers): no Ray at all.

A run row is written only after everything that can be checked before training has been checked (`prepare`):
the store is writable, the device exists, the dataset loads and validates, the batch fits the training split,
and the algorithm builds on the dataset. Bad inputs therefore leave no `failed` rows behind (nor a `latest`).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import pickle
import socket
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from raygen.algorithms import Algorithm
from raygen.config import RunConfig
from raygen.data import Dataset, load_dataset
from raygen.engine.loggers import Progress, check_loggers, display_mode
from raygen.engine.loop import Selection, build, train
from raygen.engine.report import CHECKPOINT_NAME, StoreReporter
from raygen.lifecycle import claim, effective_status, heartbeat_interval, recorded, reopen_run, run_row
from raygen.results import RunRecorder, find_run
from raygen.results.store import exists, is_remote, read_bytes

log = logging.getLogger(__name__)


class RunSetupError(ValueError):
    """A run that cannot start: caught before its row is written, reported in one line."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that holds more than tensors and plain data."""


# ---------------------------------------------------------------------------------------------- checks


def check_writable(results: str | Path) -> Path:
    """Create the store's folders and write (then delete) a probe file in each, so that a read-only or full
    store is refused before hours of work are done for nothing. Permission bits alone do not tell (root
    ignores them; a read-only mount does not show in them), hence a real write."""
    root = Path(results)
    from raygen.results.store import atomic_write_bytes, delete_file, label

    if is_remote(root):  # an object store has no folders: one probe object, written and deleted
        probe = root / "runs" / f".probe-{uuid.uuid4().hex}"
        try:
            atomic_write_bytes(probe, b"raygen")
            delete_file(probe)
        except OSError as err:
            # the URL as given: a Path (the CLI's --results) has folded its "//" into "/"
            raise RunSetupError(f"results store {label(results)} is not writable: {describe_os_error(err)}") from None
        return root
    for sub in ("", "runs", "metrics", "artifacts", "files"):
        directory = root / sub
        probe = directory / f".probe-{uuid.uuid4().hex}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(probe, "xb") as f:
                f.write(b"raygen")
        except OSError as err:
            raise RunSetupError(f"results store {root} is not writable: {describe_os_error(err)}") from None
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:  # e.g. the store is a file (NotADirectoryError): the error above says so
                pass
    return root


def check_heartbeat() -> float:
    """$RAYGEN_HEARTBEAT_S, read by every run's heartbeat thread once its row is written: an unusable value is
    refused here, with the other set-up checks, before any work (local runs, --workers, sweeps alike)."""
    try:
        return heartbeat_interval()
    except ValueError as err:
        raise RunSetupError(str(err)) from None


def describe_os_error(err: OSError) -> str:
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system"}.get(err.errno or 0, err.strerror or str(err))
    return f"{reason} ({err.filename})" if err.filename else reason


def check_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise RunSetupError(f"unknown device '{name}' ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunSetupError(f"device '{name}' was requested but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunSetupError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA GPU(s))")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RunSetupError("device 'mps' was requested but is not available (use --device cpu)")
    return device


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def check_data(config: RunConfig) -> Dataset:
    """The dataset loads and validates and has training and validation examples (DataError or RunSetupError
    naming the cause otherwise). Part of `prepare`; a sweep driver calls it before its first trial."""
    dataset = load_dataset(config.dataset, config.data)
    for split in ("train", "valid"):
        if split not in dataset.splits or len(dataset.splits[split]) == 0:
            raise RunSetupError(f"dataset '{config.dataset}' has no {split} examples")
    return dataset


def prepare(config: RunConfig, *, workers: int = 1, build_model: bool = True) -> Dataset:
    """Everything that can fail before training, in the order a person would fix it. Returns the dataset
    (loaded once: the runner passes it on). Raises RunSetupError, DataError or ConfigError."""
    if build_model:
        check_device(config.device)
    check_loggers(config)  # a log.* switch without its package installed
    dataset = check_data(config)
    ec = config.eval
    if ec.final and ec.inception_path and not Path(ec.inception_path).expanduser().is_file():
        raise RunSetupError(f"eval.inception_path: no such file {ec.inception_path} (a TorchScript feature network; "
                            "raygen downloads none)")
    if ec.final and ec.classifier_score and dataset.labels is None:
        raise RunSetupError(f"eval.classifier_score needs class labels; dataset '{config.dataset}' has none")
    per_worker = len(dataset.splits["train"]) // workers  # Batches shards the training split by rank
    if config.train.batch_size > per_worker:
        where = f"of each of {workers} workers" if workers > 1 else "in the training split"
        raise RunSetupError(
            f"train.batch_size={config.train.batch_size} is larger than the {per_worker} examples {where} "
            f"of '{config.dataset}' (lower train.batch_size)"
        )
    if build_model:  # the algorithm accepts the data and its networks fit in memory
        try:
            algo, _ = build(config, dataset)
        except Exception as err:
            if is_out_of_memory(err):
                raise RunSetupError(f"out of memory building {config.algorithm}'s networks on {config.device}: "
                                    f"{first_line(err)} (make the networks smaller)") from None
            raise
        del algo
    return dataset


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ---------------------------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without running code: `weights_only=True` lets the unpickler build only tensors and
    plain containers/numbers/strings, which is all raygen writes (the config travels as a dict, the RNG state
    as a tensor). A file that asks for anything else (a pickled `os.system`, say) is refused unread."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            # a checkpoint on an object store is read whole into memory (torch.load wants a seekable file)
            source = io.BytesIO(read_bytes(path)) if is_remote(path) else path
            payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} refused: it holds objects other than tensors and plain data ({unpickling_reason(err)})"
        ) from None
    except Exception as err:  # noqa: BLE001 - truncated, foreign or unreadable: say which file
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(err)}") from None
    if not isinstance(payload, dict) or not {"config", "algorithm"} <= payload.keys():
        raise CheckpointError(f"checkpoint {path} is not a raygen checkpoint (no config and algorithm state)")
    return payload


def unpickling_reason(err: BaseException) -> str:
    """The one informative line of torch's multi-paragraph 'Weights only load failed' message."""
    for line in str(err).splitlines()[1:]:
        line = line.strip().removeprefix("Please file an issue with the following so that we can make "
                                         "`weights_only=True` compatible with your use case:").strip()
        line = line.removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith("Check the documentation"):
            return line
    return first_line(err)


def checkpoint_config(payload: dict[str, Any], path: Path) -> RunConfig:
    from pydantic import ValidationError

    try:
        return RunConfig.model_validate(payload["config"])
    except ValidationError as err:  # e.g. written by a raygen with other config fields
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CheckpointError(f"checkpoint {path} holds a config this raygen cannot read: {where}: {first['msg']}"
                              + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")) from None


def checkpoint_path(results: str | Path, run: str) -> Path:
    run_id = find_run(results, run)
    path = Path(results) / "files" / run_id / CHECKPOINT_NAME
    if not (exists(path) if is_remote(path) else path.is_file()):
        row = run_row(results, run_id) or {}
        # `latest` may name a run that failed before its first checkpoint: say so, or the user hunts for a file.
        ended = f" (it {row['status']}: {row['error']})" if row.get("status") == "failed" and row.get("error") else ""
        raise FileNotFoundError(f"run {run_id} has no checkpoint at {path}{ended}")
    return path


def restore(
    results: str | Path, run: str, *, overrides: Mapping[str, Any] | None = None, device: str | None = None
) -> tuple[Algorithm, Dataset, RunConfig, str]:
    """Rebuild a trained algorithm from its checkpoint (the config travels inside the checkpoint), holding the
    model its final evaluation scored: the validation-selected state (train.select_best), not the last update."""
    path = checkpoint_path(results, run)
    payload = read_checkpoint(path)
    config = checkpoint_config(payload, path)
    if device is not None:
        overrides = {**(overrides or {}), "device": device}
    if overrides:
        config = config.with_overrides(overrides)
    check_device(config.device)
    algo, dataset = build(config)
    try:
        algo.load_state(payload["algorithm"])
    except RuntimeError as err:  # "size mismatch" / "Missing key(s)": the model built from today's data differs
        if "state_dict" not in str(err):
            raise
        raise RunSetupError(
            f"the checkpoint of run {path.parent.name} does not fit the model built from dataset '{config.dataset}' "
            f"as it is now (examples of shape {tuple(dataset.shape)}): the data changed since the run was trained "
            f"({str(err).strip().splitlines()[-1].strip()})") from None
    # The final checkpoint is written before the loop swaps the selected state in (`Selection.restore_best`):
    # the same swap here, or `raygen evaluate`/`sample` would score a model other than `selection/step` names.
    selection = Selection(config, algo)
    selection.load(payload.get("selection"))
    selection.restore_best(algo)
    return algo, dataset, config, path.parent.name


# ---------------------------------------------------------------------------------------------- running


def _train_recorded(config: RunConfig, recorder: RunRecorder, dataset: Dataset, *, resume: dict[str, Any] | None,
                    progress: bool | None) -> None:
    show = config.train.progress if progress is None else progress
    # A bar in a terminal or notebook (log records written through it), else a log line every
    # train.progress_every updates; both show the algorithm's objective (raygen.engine.loggers).
    bar = Progress(config, recorder.run_id, initial=recorder.steps, mode=display_mode(show))

    def on_progress(step: int, total: int, metrics: dict[str, float]) -> None:
        bar.update(step, metrics)
        beat.beat(step)

    reporter = None
    try:
        with bar, recorded(recorder) as beat:
            reporter = StoreReporter(recorder)
            train(config, reporter, resume=resume, dataset=dataset, progress=on_progress)
    except BaseException as err:
        err.raygen_run_id = recorder.run_id  # type: ignore[attr-defined]  # the CLI names the failed run
        if reporter is not None:
            reporter.close(ok=False)
        raise
    reporter.close()


def run_local(
    config: RunConfig,
    results: str | Path,
    *,
    run_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> str:
    """Train in this process, writing the run into the results store. Returns the run id."""
    check_heartbeat()
    check_writable(results)
    dataset = prepare(config)
    device = check_device(config.device)
    recorder = RunRecorder(results, config, run_id=run_id, extra={"device": str(device), **(extra or {})})
    with claim(results, recorder.run_id):  # held while it trains: no `--resume` of it meanwhile (a new id: ours)
        _train_recorded(config, recorder, dataset, resume=None, progress=progress)
    log.info("run %s written to %s", recorder.run_id, results)
    return recorder.run_id


def resume_local(results: str | Path, run: str, *, progress: bool | None = None) -> str:
    """Continue a lost, failed or stopped local run from its last checkpoint, under the same run id.

    The rows the run wrote after that checkpoint are rewound first (`RunRecorder.rewind`, the same rewind a
    Ray Train restart does), so no (run_id, step, split, metric) key is stored twice.
    """
    run_id = find_run(results, run)
    check_writable(results)
    with claim(results, run_id) as mine:
        if not mine:
            raise RunSetupError(f"run {run_id} is being trained by another process (a resume or the run itself "
                                "holds its claim); wait for it to end")
        # the row is read under the claim: a resume that just ended (released it) is seen as its row says
        return _resume_claimed(results, run_id, progress)


def _resume_claimed(results: str | Path, run_id: str, progress: bool | None) -> str:
    row = run_row(results, run_id)
    assert row is not None
    import pandas as pd

    try:
        status = effective_status(pd.DataFrame([row]))[0]
    except ValueError as err:  # $RAYGEN_LOST_AFTER_S / $RAYGEN_HEARTBEAT_S unusable: one line naming them
        raise RunSetupError(str(err)) from None
    if status == "completed":
        raise RunSetupError(f"run {run_id} is completed; there is nothing to resume")
    # A local run holds its claim while it trains and the kernel drops it when the process dies, so a
    # `running` row of this machine whose claim we now hold was left by a dead process: no need to wait for
    # its heartbeat to go stale. Elsewhere (another node of a shared folder, an object store) only the
    # heartbeat can tell.
    killed_here = not is_remote(results) and row.get("node") == socket.gethostname()
    if status == "running" and not killed_here:
        raise RunSetupError(f"run {run_id} is still running (its heartbeat is recent); stop it first, or wait "
                            "until `raygen runs` shows it lost")
    if int(row.get("workers") or 1) > 1 or row.get("sweep_id"):
        raise RunSetupError(f"run {run_id} ran on Ray (workers or a sweep): Ray resumes it, not --resume")
    path = Path(results) / "files" / run_id / CHECKPOINT_NAME
    if exists(path) if is_remote(path) else path.is_file():
        payload: dict[str, Any] | None = read_checkpoint(path)
        config = checkpoint_config(payload, path)
        step = int(payload["algorithm"]["updates"])
    else:  # died before its first checkpoint: start again from update 0
        payload, config, step = None, RunConfig.model_validate(json.loads(row["config_json"])), 0
    dataset = prepare(config)
    recorder = reopen_run(results, run_id, step=step)
    assert recorder is not None
    log.info("resuming %s from update %d (it was %s)", run_id, step, status)
    _train_recorded(config, recorder, dataset, resume=payload, progress=progress)
    return run_id
