"""The one training loop. It runs in-process, inside every Ray Train worker and inside every Tune trial.

It knows nothing about its runner: metrics, checkpoints and artifacts leave through `report`, which the
runner supplies (local: Parquet + progress bar; Ray: the same writer on rank 0 plus ray.train.report).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from raygen.algorithms import Algorithm, Artifact, algorithm_class
from raygen.config import RunConfig
from raygen.data import Dataset, load_dataset
from raygen.distributed import LocalContext
from raygen.engine.evaluate import evaluation_suite

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def __call__(
        self,
        step: int,
        metrics: dict[str, float],
        *,
        checkpoint: dict[str, Any] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available (use --device cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Batches:
    """Endless shuffled minibatches of one worker's shard; its position is part of the checkpoint."""

    data: torch.Tensor
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    epoch: int = 0
    position: int = 0
    _order: torch.Tensor | None = field(default=None, repr=False)

    def _shuffle(self) -> None:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.data), generator=g)
        self._order = order[self.rank :: self.world_size]  # same permutation everywhere, disjoint shards

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self._order is None:
            self._shuffle()
        assert self._order is not None
        if self.position + self.batch_size > len(self._order):
            if len(self._order) < self.batch_size:
                raise ValueError(
                    f"train.batch_size={self.batch_size} exceeds the {len(self._order)} training examples "
                    "of this worker"
                )
            self.epoch += 1
            self.position = 0
            self._shuffle()
        idx = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.data[idx]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._order = state["epoch"], state["position"], None


def build(config: RunConfig, dataset: Dataset | None = None, device: torch.device | None = None) -> tuple[Algorithm, Dataset]:
    """Dataset + algorithm on its device, with data-dependent quantities fitted (seeded: identical on all ranks)."""
    dataset = dataset or load_dataset(config.dataset, config.data)
    device = device or resolve_device(config.device)
    seed_everything(config.seed)
    algo = algorithm_class(config.algorithm)(config, dataset).to(device)
    algo.setup(dataset.splits["train"].to(device))
    return algo, dataset


def checkpoint_payload(
    algo: Algorithm, config: RunConfig, batches: Batches | None = None, selection: Selection | None = None
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "algorithm": algo.state(),
        "batches": batches.state() if batches else None,
        "torch_rng": torch.get_rng_state(),
        "selection": selection.state() if selection is not None else None,
    }


_FALLBACK_SELECTION = (("lower_bound", "max"), ("nll", "min"), ("loss", "min"))


class Selection:
    """Model selection and early stopping on the quick validation evaluation.

    VW Algorithm 1 trains "until convergence monitoring L on a validation set and doing early stopping", and
    Infusion TAB A.1 reports "the models that obtained the best lower bound value on the validation set": the
    best state seen at a validation evaluation is kept (in memory and in checkpoints) and is the one the final
    evaluation scores. The value compared is the mean over data-parallel workers, so every worker takes the
    same decision (each draws its own evaluation noise).
    """

    def __init__(self, config: RunConfig, algo: Algorithm) -> None:
        tc = config.train
        self.metric, self.mode = tc.select_metric, tc.select_mode
        if self.metric is None and algo.selection is not None:
            self.metric, default_mode = algo.selection
            self.mode = self.mode or default_mode
        self.patience = tc.patience
        self.keep = tc.select_best
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_model: dict[str, torch.Tensor] | None = None
        self.stale = 0  # evaluations since the last improvement
        self.disabled = False  # no metric to select by: the last state is evaluated, no early stop

    def _resolve(self, evaluation: dict[str, float]) -> bool:
        """Fix the metric on the first evaluation; False when there is nothing to select by."""
        if self.disabled:
            return False
        if self.metric is None:
            for name, mode in _FALLBACK_SELECTION:
                if name in evaluation:
                    self.metric, self.mode = name, self.mode or mode
                    break
            else:
                log.warning("no validation metric to select the model by (none of %s among %s): the last update "
                            "is evaluated; set train.select_metric", [n for n, _ in _FALLBACK_SELECTION],
                            sorted(evaluation))
                self.disabled = True
                return False
        if self.metric not in evaluation:
            raise ValueError(
                f"train.select_metric='{self.metric}' is not a validation metric of this algorithm; it reports "
                f"{sorted(evaluation)}"
            )
        if self.mode is None:
            raise ValueError(f"train.select_mode is needed to select on '{self.metric}' (max or min)")
        return True

    def observe(self, step: int, evaluation: dict[str, float], algo: Algorithm) -> bool:
        """Record one validation evaluation; True when patience has run out (stop training)."""
        if not self._resolve(evaluation):
            return False
        value = float(algo.ctx.all_reduce_mean(torch.tensor([evaluation[self.metric]], device=algo.device))[0])
        # A non-finite value (a diverged evaluation) never counts as an improvement.
        better = math.isfinite(value) and (
            self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value))
        if better:
            self.best_value, self.best_step, self.stale = value, step, 0
            if self.keep:
                self.best_model = {k: v.detach().clone() for k, v in algo.state_dict().items()}
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore_best(self, algo: Algorithm) -> dict[str, float]:
        """Load the selected state into `algo` (if it is not the current one); the `selection/` metric rows."""
        if self.best_step is None:
            return {}
        if self.keep and self.best_model is not None and self.best_step != algo.updates:
            log.info("evaluating the update selected on valid/%s: %d (of %d)", self.metric, self.best_step,
                     algo.updates)
            algo.load_model(self.best_model)
        step = self.best_step if self.keep else algo.updates
        out = {"selection/step": float(step)}
        if self.keep:
            out[f"selection/{self.metric}"] = float(self.best_value)
        return out

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "best_value": self.best_value, "best_step": self.best_step,
                "best_model": self.best_model, "stale": self.stale}

    def load(self, state: dict[str, Any] | None) -> None:
        if state:
            self.metric, self.mode = state["metric"], state["mode"]
            self.best_value, self.best_step = state["best_value"], state["best_step"]
            self.best_model, self.stale = state["best_model"], state["stale"]


class _Mean:
    """Running means of the training metrics between two reports."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        out = {f"train/{k}": s / self.counts[k] for k, s in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out


def _crossed(before: int, after: int, every: int) -> bool:
    return after // every > before // every


def train(
    config: RunConfig,
    report: Reporter,
    *,
    ctx: LocalContext | None = None,
    resume: dict[str, Any] | None = None,
    dataset: Dataset | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Algorithm:
    """Train `config` until `config.train.steps` optimizer updates, reporting through `report`."""
    ctx = ctx or LocalContext()
    tc = config.train
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    if config.device == "cpu" and tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    algo, dataset = build(config, dataset)
    algo.ctx = ctx
    device = algo.device
    batches = Batches(dataset.splits["train"], tc.batch_size, config.seed, ctx.rank, ctx.world_size)
    if resume is not None:
        algo.load_state(resume["algorithm"])
        if resume.get("batches"):
            batches.load(resume["batches"])
        log.info("resumed at update %d", algo.updates)
    # Model init is identical on every rank (seeded above); the noise each worker draws must differ.
    torch.manual_seed(config.seed * 1_000_003 + ctx.rank + 7919 * algo.updates)
    generator = torch.Generator(device="cpu").manual_seed(config.seed + 17 * ctx.rank)
    valid = dataset.splits["valid"][: tc.eval_examples].to(device)
    means = _Mean()
    selection = Selection(config, algo)
    if resume is not None:
        selection.load(resume.get("selection"))
    stop = False

    while algo.updates < tc.steps and not stop:
        batch = dataset.prepare_batch(next(batches), generator).to(device)
        algo.train()
        before = algo.updates
        step_metrics = algo.train_step(batch)
        if algo.updates == before:
            raise RuntimeError(f"{config.algorithm}.train_step made no optimizer update; the budget cannot advance")
        means.add(step_metrics)
        step = algo.updates
        metrics: dict[str, float] = {}
        if _crossed(before, step, tc.log_every) or step >= tc.steps:
            metrics.update(means.pop())
        if _crossed(before, step, tc.eval_every) or step >= tc.steps:
            algo.eval()
            with torch.no_grad():
                evaluation = algo.evaluate(valid, "valid", full=False, generator=generator)
            metrics.update({f"valid/{k}": v for k, v in evaluation.items()})
            stop = selection.observe(step, evaluation, algo)
            if stop:
                log.info("early stop at update %d: valid/%s has not improved for %d evaluations (best: update %d)",
                         step, selection.metric, selection.stale, selection.best_step)
        checkpoint = None
        if _crossed(before, step, tc.checkpoint_every) or step >= tc.steps or stop:
            checkpoint = checkpoint_payload(algo, config, batches, selection)
        if metrics or checkpoint is not None:
            report(step, metrics, checkpoint=checkpoint)
        if progress is not None:
            progress(step, tc.steps, metrics)
    if config.eval.final and ctx.rank == 0:
        step = algo.updates
        chosen = selection.restore_best(algo)
        metrics, artifacts = evaluation_suite(algo, dataset, config, generator)
        report(step, {**metrics, **chosen}, artifacts=artifacts)
    return algo
