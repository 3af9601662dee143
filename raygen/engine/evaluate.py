"""The evaluation suite run after training and by `raygen evaluate`.

Algorithm-specific numbers (lower bound, importance sampling, reversibility, BPC) come from
`Algorithm.evaluate(full=True)`; the evaluators shared by the generative models (Parzen windows, the
nearest-training-neighbour copy check) live here so no algorithm repeats them.
"""

from __future__ import annotations

import logging

import torch

from raygen.algorithms import Algorithm, Artifact
from raygen.config import RunConfig
from raygen.data import Dataset

log = logging.getLogger(__name__)


def _subset(x: torch.Tensor, n: int | None) -> torch.Tensor:
    return x if n is None else x[:n]


def parzen_metrics(algo: Algorithm, dataset: Dataset, config: RunConfig, split: str) -> dict[str, float]:
    """Parzen-window log-likelihood of `split` under samples of the model; σ chosen on the validation split."""
    from raygen.metrics import parzen_evaluate

    ec = config.eval
    samples = algo.sample(ec.parzen_samples).reshape(ec.parzen_samples, -1).cpu()
    valid = dataset.splits["valid"][: ec.parzen_valid_examples].reshape(-1, dataset.dim).float()
    target = _subset(dataset.splits[split], ec.test_examples).reshape(-1, dataset.dim).float()
    result = parzen_evaluate(samples, valid, target, list(ec.parzen_sigmas), batch_size=ec.parzen_batch)
    return {k: float(v) for k, v in result.items()}


def nearest_neighbour_artifact(algo: Algorithm, dataset: Dataset, n: int = 16) -> Artifact | None:
    """Samples next to their nearest training example (Infusion Fig 3.5): the copy check."""
    if dataset.image_shape is None:
        return None
    from raygen.metrics import nearest_neighbours
    from raygen.plots import image_grid_png

    samples = algo.sample(n).reshape(n, -1).cpu().float()
    train = dataset.splits["train"].reshape(len(dataset.splits["train"]), -1).float()
    index, _ = nearest_neighbours(samples, train)
    pairs = torch.stack([samples, train[index]], 1).reshape(2 * n, *dataset.image_shape)
    return Artifact("nearest.png", "image", image_grid_png(pairs, nrow=8, group=2, title="sample | nearest training example"))


def _split_label(split: str) -> str:
    """The name a split's full-evaluation numbers are stored under. The training split's become `train_eval`:
    `train/…` already holds the running averages of the training metrics, and one name must mean one thing."""
    return "train_eval" if split == "train" else split


def evaluation_suite(
    algo: Algorithm, dataset: Dataset, config: RunConfig, generator: torch.Generator, *, pictures: bool = True
) -> tuple[dict[str, float], list[Artifact]]:
    """Every metric the run's config asks for on `config.eval.splits`, plus the picture artifacts. Keys are
    `split/metric`, with the training split's full evaluation under `train_eval/` (see `_split_label`)."""
    ec = config.eval
    metrics: dict[str, float] = {}
    algo.eval()
    device = algo.device
    with torch.no_grad():
        for split in ec.splits:
            n = ec.train_examples if split == "train" else ec.test_examples
            data = _subset(dataset.splits[split], n).to(device)
            # One line per stage: on a CPU the full evaluation can take as long as the training did.
            log.info("final evaluation: %s split, %d examples, %d repeat(s) of %d samples each", split, len(data),
                     ec.repeats, ec.likelihood_samples)
            values = algo.evaluate(data, split, full=True, generator=generator)
            if "importance" in values:
                # The IS estimate grows with k (VW 3.4.2 asks for "a large number of destructive paths"; no paper
                # table states its k), so every IS number is stored beside the k that produced it.
                values["importance_k"] = float(ec.likelihood_samples)
            label = _split_label(split)
            metrics.update({f"{label}/{k}": float(v) for k, v in values.items()})
            # Parzen is a test-set number in every table that reports it (Infusion FIG 3.4).
            if ec.parzen and dataset.kind in ("image", "points") and split == "test":
                log.info("Parzen window estimate on %s (%d samples)", split, ec.parzen_samples)
                metrics.update({f"{label}/{k}": v for k, v in parzen_metrics(algo, dataset, config, split).items()})
        artifacts: list[Artifact] = []
        if pictures:
            log.info("final evaluation: pictures (samples, chains)")
            artifacts = list(algo.artifacts(dataset, generator=generator))
            if dataset.kind == "image":
                nearest = nearest_neighbour_artifact(algo, dataset)
                if nearest is not None:
                    artifacts.append(nearest)
    return metrics, artifacts
