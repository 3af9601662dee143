"""The contract between the training loop and an algorithm.

An algorithm receives its networks' configs and the dataset description, owns its objective, its
optimizers' updates, its sampling procedures and its paper-specific evaluation. The loop owns the
budget (counted in optimizer updates, `self.updates`), seeding, devices, cadence, checkpoints and I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from raygen.config import AlgoConfig, RunConfig
from raygen.data.base import Dataset
from raygen.distributed import LocalContext


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss becomes NaN/inf, so the run (or sweep trial) fails with the reason."""


@dataclass(frozen=True)
class Artifact:
    """A file a run produces: `kind` is image (PNG bytes), text (UTF-8) or json."""

    name: str  # file name, e.g. "samples.png"
    kind: str
    data: bytes


class Algorithm(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[AlgoConfig]]
    # The validation objective the loop selects the evaluated model by: (valid/ metric name, "max" | "min").
    # None: the loop takes lower_bound (max), nll (min) or loss (min), whichever the quick evaluation reports.
    selection: ClassVar[tuple[str, str] | None] = None
    # Metric names (glob patterns) the algorithm reports, so a sweep spec's metric is checked before any trial
    # runs: "train" = train_step's keys (the train/ split), "quick" = evaluate(full=False) (valid/ during
    # training), "full" = evaluate(full=True) (the final evaluation of every eval.splits). {} = undeclared.
    metric_names: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        """Paper settings that depend on the kind of data (nested RunConfig overrides)."""
        return {}

    @classmethod
    def dataset_presets(cls, dataset: str) -> dict[str, Any]:
        """Settings for one named dataset, applied over `presets` (e.g. sizes fitted to the small digits)."""
        return {}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__()
        self.run_config = config
        self.cfg = config.algo
        self.data_kind = dataset.kind
        self.shape = dataset.shape
        self.updates = 0
        self.ctx: LocalContext = LocalContext()

    # ------------------------------------------------------------------ hooks every algorithm implements
    def setup(self, train: torch.Tensor) -> None:
        """Fit data-dependent quantities (priors, p*) on the training split before training."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One minibatch of training; performs its optimizer updates through `self.update`."""
        raise NotImplementedError

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        """Algorithm-specific metrics on `data`. `full=False` is the cheap in-training check."""
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples shaped like the data, (n, *shape)."""
        raise NotImplementedError

    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        """Pictures (or text) of samples and chains."""
        return []

    # ------------------------------------------------------------------ shared machinery
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def update(
        self,
        optimizer: torch.optim.Optimizer,
        loss: torch.Tensor,
        *,
        params: Iterable[nn.Parameter] | None = None,
        counts: bool = True,
        retain_graph: bool = False,
    ) -> None:
        """zero_grad → backward → gradient all-reduce → clip → step. `counts` adds to the update budget.
        Given `params`, the backward pass fills only their gradients (a graph shared with another
        optimizer's parameters is left to that optimizer's own update, kept alive by `retain_graph`)."""
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(f"{self.name}: loss became {loss.item()} at update {self.updates}")
        restricted = params is not None
        params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params if restricted else None, retain_graph=retain_graph)
        self.ctx.sync_gradients(params)
        clip = self.run_config.train.grad_clip
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if counts:
            self.updates += 1

    def adam(self, params: Iterable[nn.Parameter], lr: float | None = None, betas=None) -> torch.optim.Adam:
        train = self.run_config.train
        return torch.optim.Adam(
            params,
            lr=lr if lr is not None else train.lr,
            betas=betas if betas is not None else train.betas,
            weight_decay=train.weight_decay,
        )

    def state(self) -> dict[str, Any]:
        return {
            "model": self.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "updates": self.updates,
        }

    def load_model(self, model_state: dict[str, Any]) -> None:
        """Load parameters and buffers (a checkpoint, or the best-on-validation state before the final
        evaluation). Algorithms with caches derived from the weights clear them here."""
        self.load_state_dict(model_state)

    def load_state(self, state: dict[str, Any]) -> None:
        self.load_model(state["model"])
        for key, opt in self.optimizers().items():
            if key in state.get("optimizers", {}):
                opt.load_state_dict(state["optimizers"][key])
        self.updates = int(state.get("updates", 0))
