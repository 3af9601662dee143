"""Embedded datasets that need no files: scikit-learn's 8x8 digits and the VW 2-D toy manifolds."""

from __future__ import annotations

import math

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.registry import DatasetSource, register


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """A fixed permutation cut into train/valid/test by fractions (same seed, same split)."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    return {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }


def _load_digits(name: str, config: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    idx = split_indices(len(images), (0.7, 0.15, 0.15), config.split_seed)
    splits = {k: torch.from_numpy(images[v][:, None]) for k, v in idx.items()}  # (N, 1, 8, 8)
    if config.max_train:
        splits["train"] = splits["train"][: config.max_train]
    return Dataset(
        name=name,
        kind="image",
        shape=(1, 8, 8),
        splits=splits,
        meta={"source": "sklearn.datasets.load_digits", "scale": "pixel/16", "split_seed": config.split_seed},
    )


def _toy_points(shape: str, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The 2-D manifolds of the VW toy experiments (Figs 3.8, 3.9, §3.15), scaled to roughly [-1, 1]."""
    if shape == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * rng.random(n))
        pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (4.5 * math.pi)
    elif shape == "circle":
        a = 2 * math.pi * rng.random(n)
        pts = np.stack([np.cos(a), np.sin(a)], 1) * 0.8
    elif shape == "spiral":
        t = 3 * math.pi * rng.random(n) + 0.5
        pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (3 * math.pi + 0.5)
    elif shape == "mog":  # 3x3 grid of Gaussians (the original code's mixture)
        centres = np.array([(x, y) for x in (-0.8, 0.0, 0.8) for y in (-0.8, 0.0, 0.8)])
        pts = centres[rng.integers(0, len(centres), n)]
    else:
        raise DataError(f"unknown toy2d shape '{shape}' (known: {', '.join(TOY_SHAPES)})")
    return (pts + noise * rng.standard_normal(pts.shape)).astype(np.float32)


TOY_SHAPES = ("swissroll", "circle", "mog", "spiral")


def _load_toy(name: str, config: DataConfig) -> Dataset:
    shape = name.split(":", 1)[1]
    rng = np.random.default_rng(config.split_seed)
    splits = {
        split: torch.from_numpy(_toy_points(shape, config.toy_samples, config.toy_noise, rng))
        for split in ("train", "valid", "test")
    }
    return Dataset(
        name=name,
        kind="points",
        shape=(2,),
        splits=splits,
        meta={"noise": config.toy_noise, "samples": config.toy_samples},
    )


register(DatasetSource("digits", "image", "scikit-learn 8x8 digits in [0,1], fixed 70/15/15 split", _load_digits,
                       names=("digits",)))
register(DatasetSource("toy2d:", "points", "VW 2-D toy manifolds", _load_toy,
                       names=tuple(f"toy2d:{s}" for s in TOY_SHAPES)))
