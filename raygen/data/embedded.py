"""Embedded datasets that need no download: scikit-learn's 8x8 digits and the VW 2-D toy manifolds."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.transforms import split_indices

DIGITS_FRACTIONS = (0.7, 0.15, 0.15)


def digits_files(name: str, config: DataConfig) -> list[Path]:
    """The CSV that ships inside scikit-learn (found without importing sklearn)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return [Path("<scikit-learn is not installed>")]
    return [Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"]


def load_digits(name: str, config: DataConfig) -> Dataset:
    """1797 images (1, 8, 8), pixel counts 0..16 divided by 16, fixed 70/15/15 split by `split_seed`."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # pragma: no cover - sklearn is a dependency
        raise DataError(f"dataset '{name}' needs scikit-learn ({err})") from None

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / np.float32(16.0)  # (1797, 8, 8) in [0, 1]
    targets = bunch.target.astype(np.int64)
    idx = split_indices(len(images), DIGITS_FRACTIONS, config.split_seed)
    splits = {k: torch.from_numpy(images[v][:, None]) for k, v in idx.items()}  # (N, 1, 8, 8)
    return Dataset(
        name=name,
        kind="image",
        shape=(1, 8, 8),
        splits=splits,
        labels={k: torch.from_numpy(targets[v]) for k, v in idx.items()},
        meta={
            "source": "sklearn.datasets.load_digits",
            "scale": "pixel/16",
            "split": "fixed permutation 70/15/15",
            "split_seed": config.split_seed,
        },
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


def load_toy(name: str, config: DataConfig) -> Dataset:
    """Three independent draws of `toy_samples` points (train, valid, test) from one `split_seed` stream."""
    shape = name.split(":", 1)[1]
    rng = np.random.default_rng(config.split_seed % 2**63)
    splits = {
        split: torch.from_numpy(_toy_points(shape, config.toy_samples, config.toy_noise, rng))
        for split in ("train", "valid", "test")
    }
    return Dataset(
        name=name,
        kind="points",
        shape=(2,),
        splits=splits,
        meta={"noise": config.toy_noise, "samples": config.toy_samples, "split_seed": config.split_seed},
    )
