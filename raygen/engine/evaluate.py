"""The evaluation suite run after training and by `raygen evaluate`.

Algorithm-specific numbers (lower bound, importance sampling, reversibility, BPC) come from
`Algorithm.evaluate(full=True)`; the evaluators shared by the generative models (Parzen windows, Inception
score / FID and their classifier stand-in, the nearest-training-neighbour copy check) live here so no algorithm
repeats them.
"""

from __future__ import annotations

import logging
import os

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


def _image_samples(algo: Algorithm, dataset: Dataset, n: int, chunk: int = 1000) -> torch.Tensor:
    """n model samples as images (n, C, H, W) on the CPU, clamped to [0, 1] (the feature networks' input
    range; a Gaussian operator's samples may leave the pixel box slightly), drawn in chunks to bound memory."""
    assert dataset.image_shape is not None
    parts = [algo.sample(min(chunk, n - lo)).reshape(-1, *dataset.image_shape).float().cpu()
             for lo in range(0, n, chunk)]
    return torch.cat(parts).clamp(0.0, 1.0)


def sample_score_metrics(algo: Algorithm, dataset: Dataset, config: RunConfig) -> dict[str, float]:
    """Inception score and FID on the network at eval.inception_path, and the classifier stand-in
    (eval.classifier_score), of eval.inception_samples model samples; FIDs against the test split (at most
    as many images). Empty unless asked for; images only."""
    from raygen.metrics.inception import (
        extract,
        frechet_distance_features,
        inception_score,
        load_feature_extractor,
        train_classifier,
    )

    ec = config.eval
    if not (ec.inception_path or ec.classifier_score):
        return {}
    if dataset.kind != "image" or dataset.image_shape is None or dataset.image_shape[0] not in (1, 3):
        log.warning("eval.inception_path / eval.classifier_score score grey or RGB images; dataset '%s' has none: "
                    "not reported", dataset.name)
        return {}
    n = ec.inception_samples
    splits = min(ec.inception_splits, n)
    real = dataset.splits["test"][:n].float()
    samples = _image_samples(algo, dataset, n)
    out: dict[str, float] = {}
    if ec.inception_path:
        log.info("final evaluation: Inception score and FID of %d samples (%s)", n, ec.inception_path)
        net = load_feature_extractor(os.path.expanduser(ec.inception_path))
        probs, feats = extract(net, samples)
        out["inception_score"], out["inception_score_std"] = inception_score(probs, splits)
        out["fid"] = frechet_distance_features(feats, extract(net, real)[1])
    if ec.classifier_score:
        if dataset.labels is None:
            raise ValueError(f"eval.classifier_score needs class labels; dataset '{dataset.name}' has none")
        log.info("final evaluation: classifier score and classifier FID of %d samples (%d classifier updates)", n,
                 ec.classifier_steps)
        with torch.enable_grad():  # the suite runs under no_grad; the stand-in classifier is trained here
            net = train_classifier(dataset.splits["train"], dataset.labels["train"], steps=ec.classifier_steps,
                                   seed=config.seed)
        probs, feats = extract(net, samples)
        out["classifier_score"], out["classifier_score_std"] = inception_score(probs, splits)
        out["classifier_fid"] = frechet_distance_features(feats, extract(net, real)[1])
    return out


def final_split_label(split: str) -> str:
    """The name a split's full-evaluation numbers are stored under. The training split's become `train_eval`
    (`train/…` already holds the running averages of the training metrics) and the validation split's
    `valid_eval` (`valid/…` holds the quick evaluations during training, one of them at the last update): one
    name must mean one protocol, and a (step, split, metric) key is never written twice with different values."""
    return {"train": "train_eval", "valid": "valid_eval"}.get(split, split)


def evaluation_suite(
    algo: Algorithm, dataset: Dataset, config: RunConfig, generator: torch.Generator, *, pictures: bool = True
) -> tuple[dict[str, float], list[Artifact]]:
    """Every metric the run's config asks for on `config.eval.splits`, plus the picture artifacts. Keys are
    `split/metric`, with the training and validation splits' full evaluations under `train_eval/` and `valid_eval/`
    (see `final_split_label`)."""
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
            label = final_split_label(split)
            metrics.update({f"{label}/{k}": float(v) for k, v in values.items()})
            # Parzen is a test-set number in every table that reports it (Infusion FIG 3.4).
            if ec.parzen and dataset.kind in ("image", "points") and split == "test":
                log.info("Parzen window estimate on %s (%d samples)", split, ec.parzen_samples)
                metrics.update({f"{label}/{k}": v for k, v in parzen_metrics(algo, dataset, config, split).items()})
            if split == "test":  # IS/FID and the classifier stand-in (when asked for): sample quality, test set
                metrics.update({f"{label}/{k}": v for k, v in sample_score_metrics(algo, dataset, config).items()})
        artifacts: list[Artifact] = []
        if pictures:
            log.info("final evaluation: pictures (samples, chains)")
            artifacts = list(algo.artifacts(dataset, generator=generator))
            if dataset.kind == "image":
                nearest = nearest_neighbour_artifact(algo, dataset)
                if nearest is not None:
                    artifacts.append(nearest)
    return metrics, artifacts
