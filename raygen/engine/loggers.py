"""Where a run's numbers go besides the results store: the progress shown while it trains, and the TensorBoard,
MLflow and Weights & Biases adapters switched on by the config section `log`.

The store stays the source of truth. The adapters sit on the report path (`StoreReporter` calls them after
the store has the values), so they mirror every metric and image a run writes, from every runner (local,
Ray Train rank 0, sweep trials, `raygen evaluate`). An adapter that fails mid-run is switched off with a
warning rather than failing the run: its values are all in the store anyway.

Progress: a bar in a terminal (tqdm) or a notebook (tqdm.auto's widget); when stderr is neither (a log file,
a batch job) a log line every `train.progress_every` updates with the objective, the rate and an ETA. While a
terminal bar is shown, log records are written through it so the two never share a line.
"""

from __future__ import annotations

import importlib
import io
import logging
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygen.config import ConfigError

if TYPE_CHECKING:
    from raygen.algorithms import Artifact
    from raygen.config import RunConfig

log = logging.getLogger(__name__)

# Which metric names stand for "how the run is doing" when the algorithm declares no selection objective:
# the same fallback order the loop's model selection uses (loop._FALLBACK_SELECTION), then the training loss.
_FALLBACK_OBJECTIVES = ("lower_bound", "nll", "mmd", "loss")


class MissingExtraError(ConfigError):
    """A `log.*` switch is on but its package is not installed; the message names the extra to install."""


# ---------------------------------------------------------------------------------------------- objective


def objective(config: RunConfig) -> str | None:
    """The metric (name without split) that the bar and the progress lines show: the one model selection
    uses, i.e. `train.select_metric`, else the algorithm's declared `selection` (Algorithm.selection).
    None: the algorithm declares none, and the first of lower_bound, nll, mmd, loss it reports is shown."""
    if config.train.select_metric:
        return config.train.select_metric
    from raygen.algorithms import algorithm_class

    selection = algorithm_class(config.algorithm).selection
    return selection[0] if selection else None


def objective_values(metrics: Mapping[str, float], name: str | None) -> dict[str, float]:
    """{'train/<x>': v, 'valid/<y>': v} of a report: per split the objective if that split reports it, else
    the first fallback name it reports (walkback's training split has no lower bound, only its loss)."""
    candidates = ((name,) if name else ()) + _FALLBACK_OBJECTIVES
    out: dict[str, float] = {}
    for split in ("train", "valid"):
        for candidate in candidates:
            key = f"{split}/{candidate}"
            if key in metrics:
                out[key] = float(metrics[key])
                break
    return out


# ---------------------------------------------------------------------------------------------- progress


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython already imported and running a kernel app); never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def display_mode(enabled: bool = True) -> str:
    """'off', 'notebook' (tqdm.auto's widget), 'bar' (a terminal) or 'lines' (log lines)."""
    if not enabled:
        return "off"
    if in_notebook():
        return "notebook"
    stream = sys.stderr
    return "bar" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "lines"


def _is_console(handler: logging.Handler) -> bool:
    """The test tqdm's redirect uses: a StreamHandler writing to stdout or stderr."""
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class Progress:
    """Training progress of one run: `with Progress(...) as p: ... p.update(step, metrics)`.

    `mode` is chosen by `display_mode` unless given. In 'bar' mode the root and `raygen` loggers' console
    handlers write through the bar while it lives (tqdm's logging_redirect_tqdm), so log lines do not collide
    with it.
    """

    def __init__(self, config: RunConfig, label: str, *, initial: int = 0, mode: str | None = None,
                 file: Any = None) -> None:
        self.total = config.train.steps
        self.every = config.train.progress_every or config.train.eval_every
        self.label = label
        self.name = objective(config)
        self.mode = mode or display_mode(config.train.progress)
        self.shown: dict[str, float] = {}  # the objective's latest values, kept between reports
        self.step = self.start = initial
        self.started = time.monotonic()
        self.bar = None
        self._stack = ExitStack()
        self._file = file

    def __enter__(self) -> Progress:  # noqa: PYI034 - Self needs Python 3.11
        if self.mode in ("bar", "notebook"):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, desc=self.label, unit="upd", file=self._file,
                            dynamic_ncols=True)
            if self.mode == "bar":
                from tqdm.contrib.logging import logging_redirect_tqdm

                # Only loggers that have a console handler: tqdm gives the others a bare handler of their own,
                # which would print every record a second time (unformatted) besides the root's.
                consoles = [logger for logger in (logging.getLogger(), logging.getLogger("raygen"))
                            if any(_is_console(h) for h in logger.handlers)]
                if consoles:
                    self._stack.enter_context(logging_redirect_tqdm(consoles, tqdm_class=type(self.bar)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.bar is not None:
            self.bar.close()

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        before, self.step = self.step, step
        values = objective_values(metrics, self.name)
        self.shown.update(values)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if values:
                self.bar.set_postfix({k: _fmt(v) for k, v in self.shown.items()}, refresh=False)
        elif self.mode == "lines" and (step // self.every > before // self.every or step >= self.total):
            log.info("%s", self.line())

    def line(self) -> str:
        """'RUN: update 500/2000 (25%) train/loss=1.2 valid/lower_bound=-3.4 | 12.5 upd/s, 0:40 elapsed, ETA 2:00'."""
        from tqdm import tqdm

        elapsed = time.monotonic() - self.started
        done = self.step - self.start
        rate = done / elapsed if elapsed > 0 else math.inf
        eta = max(self.total - self.step, 0) / rate if done > 0 and rate > 0 else None
        values = " ".join(f"{k}={_fmt(v)}" for k, v in self.shown.items())
        return (f"{self.label}: update {self.step}/{self.total} ({100 * min(self.step, self.total) / self.total:.0f}%)"
                + (f" {values}" if values else "")
                + f" | {rate:.3g} upd/s, {tqdm.format_interval(elapsed)} elapsed, ETA "
                + (tqdm.format_interval(eta) if eta is not None else "?"))


# ---------------------------------------------------------------------------------------------- adapters


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _require(module: str, switch: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"log.{switch}=true needs the {module} package, which is not installed: "
                                f"pip install 'raygen[{extra}]' (or set log.{switch}=false)") from None


def _png_array(data: bytes) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class TensorBoardLogger:
    """Scalars under their store names (`valid/lower_bound`) at the run's update count; images under
    `artifacts/<file name>`. Event files in `<log.tensorboard_dir or <results>/tensorboard>/<run_id>`."""

    name = "tensorboard"

    def __init__(self, config: RunConfig, run_id: str, results: Path) -> None:
        tensorboardx = _require("tensorboardX", "tensorboard", "tensorboard")
        from raygen.results.store import is_remote

        if not config.log.tensorboard_dir and is_remote(results):
            raise ValueError(f"log.tensorboard with results on object storage ({results}): set log.tensorboard_dir "
                             "to a local folder for the event files")
        root = Path(config.log.tensorboard_dir) if config.log.tensorboard_dir else Path(results) / "tensorboard"
        self.directory = root / run_id
        # Each writer (training, a later `raygen evaluate`) adds its own event file, which TensorBoard merges.
        # The default name (time in seconds + host) is not unique: a second writer within the same second
        # would truncate the first one's file, hence a random suffix.
        self.writer = tensorboardx.SummaryWriter(logdir=str(self.directory), filename_suffix=f".{uuid.uuid4().hex[:8]}")

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), global_step=step)

    def image(self, step: int, name: str, data: bytes) -> None:
        self.writer.add_image(f"artifacts/{name}", _png_array(data), global_step=step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()  # each report: a live TensorBoard sees it, a killed run keeps its curves

    def close(self, ok: bool) -> None:
        self.writer.close()


class MlflowLogger:
    """One MLflow run per raygen run (tag `raygen.run_id`, found again by a later `raygen evaluate`), the
    flattened config as params, metrics with their update as step, images as artifacts under `step-<N>/`."""

    name = "mlflow"

    def __init__(self, config: RunConfig, run_id: str, results: Path) -> None:
        _require("mlflow", "mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from raygen.config import flatten

        self.client = MlflowClient(tracking_uri=config.log.mlflow_uri)
        experiment = self.client.get_experiment_by_name(config.log.mlflow_experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(config.log.mlflow_experiment))
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`raygen.run_id` = '{run_id}'",
                                        max_results=1)
        if found:
            self.run_id = found[0].info.run_id
        else:
            run = self.client.create_run(experiment_id, run_name=run_id, tags={
                "raygen.run_id": run_id, "raygen.algorithm": config.algorithm, "raygen.dataset": config.dataset})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config.to_dict()).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=rows[i : i + 1000])

    def image(self, step: int, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="raygen-mlflow-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path), artifact_path=f"step-{step}")

    def flush(self) -> None:
        pass  # MlflowClient calls are synchronous

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


class WandbLogger:
    """One W&B run per raygen run (id derived from the run id, resumed by a later `raygen evaluate`), the
    config as its config, metrics at the run's update count as W&B step, images as wandb.Image."""

    name = "wandb"

    def __init__(self, config: RunConfig, run_id: str, results: Path) -> None:
        self.wandb = _require("wandb", "wandb", "wandb")
        lc = config.log
        self.run = self.wandb.init(
            project=lc.wandb_project, entity=lc.wandb_entity, name=run_id,
            id="".join(c if c.isalnum() or c in "-_" else "-" for c in run_id), resume="allow",
            config=config.to_dict(), mode=lc.wandb_mode,
        )

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({k: float(v) for k, v in metrics.items()}, step=step)

    def image(self, step: int, name: str, data: bytes) -> None:
        from PIL import Image

        self.run.log({f"artifacts/{name}": self.wandb.Image(Image.open(io.BytesIO(data)))}, step=step)

    def flush(self) -> None:
        pass

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


ADAPTERS = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger, "wandb": WandbLogger}
_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


def check_loggers(config: RunConfig) -> None:
    """Before a run starts: every switched-on adapter's package is importable (MissingExtraError otherwise)."""
    for switch, module in _PACKAGES.items():
        if getattr(config.log, switch):
            _require(module, switch, switch)


class Loggers:
    """The switched-on adapters of one writer of one run; called by StoreReporter after each store write."""

    def __init__(self, adapters: Sequence[Any] = (), *, images: bool = True, run_id: str = "") -> None:
        self.adapters = list(adapters)
        self.images = images
        self.run_id = run_id

    def __bool__(self) -> bool:
        return bool(self.adapters)

    def __call__(self, step: int, metrics: Mapping[str, float], artifacts: Sequence[Artifact] = ()) -> None:
        for adapter in list(self.adapters):
            try:
                if metrics:
                    adapter.metrics(step, metrics)
                if self.images:
                    for artifact in artifacts:
                        if artifact.kind == "image":
                            adapter.image(step, artifact.name, artifact.data)
                adapter.flush()
            except Exception as err:  # noqa: BLE001 - a mirror must not fail the run the store already has
                log.warning("run %s: the %s logger failed (%s: %s) and is switched off; the results store has "
                            "every value", self.run_id, adapter.name, type(err).__name__, err)
                self.adapters.remove(adapter)
                self._close(adapter, ok=False)

    def close(self, ok: bool = True) -> None:
        for adapter in self.adapters:
            self._close(adapter, ok)
        self.adapters = []

    @staticmethod
    def _close(adapter: Any, ok: bool) -> None:
        try:
            adapter.close(ok)
        except Exception as err:  # noqa: BLE001
            log.warning("closing the %s logger failed: %s", adapter.name, err)


def open_loggers(config: RunConfig, run_id: str, results: str | Path) -> Loggers:
    """The adapters `config.log` switches on for run `run_id` of the store at `results`."""
    adapters: list[Any] = []
    for switch, cls in ADAPTERS.items():
        if getattr(config.log, switch):
            try:
                adapters.append(cls(config, run_id, Path(results)))
            except MissingExtraError:
                Loggers(adapters).close(ok=False)
                raise
            except Exception as err:  # noqa: BLE001 - an unreachable server or a bad URI: the run goes on
                log.warning("run %s: the %s logger could not start (%s: %s); the run goes on without it, the "
                            "results store has every value", run_id, switch, type(err).__name__, first_line(err))
    for adapter in adapters:
        log.info("run %s: logging to %s%s", run_id, adapter.name,
                 f" ({adapter.directory})" if hasattr(adapter, "directory") else "")
    return Loggers(adapters, images=config.log.send_images, run_id=run_id)
