"""The `svhn` and `svhn+extra` datasets, from the official cropped-digits files (Netzer et al. 2011,
"format 2": train_32x32.mat, test_32x32.mat, extra_32x32.mat, MATLAB files).

Each file holds `X`, uint8 of shape (32, 32, 3, N) (row, column, channel, image), and `y`, shape (N, 1), labels
1..10 where 10 stands for the digit 0. Looked for in `<data root>/svhn/`. The release defines only train, test
and extra; raygen validates on the last 5 000 training images (`svhn+extra` trains on train without them plus
all of extra). The site publishes no checksums, so each file is checked for its structure (names, shapes,
dtype, labels 1..10); nothing is downloaded. Every problem raises `DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.registry import data_root

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_SHAPE = (3, 32, 32)
SVHN_VALID = 5_000  # last training images used as the validation split (module-level so tests can shrink it)


def svhn_dir(config: DataConfig) -> Path:
    return data_root(config) / "svhn"


def _parts(name: str) -> tuple[str, ...]:
    return ("train", "test", "extra") if name == "svhn+extra" else ("train", "test")


def svhn_files(name: str, config: DataConfig) -> list[Path]:
    return [svhn_dir(config) / SVHN_FILES[p] for p in _parts(name)]


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official .mat file -> (images uint8 (N, 3, 32, 32), labels int64 (N,) with 10 mapped to 0)."""
    import scipy.io

    if not path.is_file():
        raise DataError(
            f"SVHN file not found: {path}. Put the official cropped-digits file {path.name} (format 2, from "
            f"{SVHN_URL}) in {path.parent}; raygen does not download it"
        )
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as err:
        raise DataError(f"{path}: not a readable MATLAB file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: lacks the arrays X and y of the SVHN format 2 files (has {sorted(k for k in mat if not k.startswith('__'))})")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must be 1..10 (10 = digit 0), got {int(y.min())}..{int(y.max())}")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (N, 3, 32, 32)
    return images, (y % 10).astype(np.int64)


def load_svhn(name: str, config: DataConfig) -> Dataset:
    """SVHN images (3, 32, 32), float32 pixel/255 in [0, 1], int64 labels 0..9."""
    directory = svhn_dir(config)
    parts = {p: read_svhn_mat(directory / SVHN_FILES[p]) for p in _parts(name)}
    train_x, train_y = parts["train"]
    if len(train_x) <= SVHN_VALID:
        raise DataError(f"{directory / SVHN_FILES['train']}: {len(train_x)} images, need more than the "
                        f"{SVHN_VALID} kept for validation")
    n = len(train_x) - SVHN_VALID
    images = {"train": train_x[:n], "valid": train_x[n:], "test": parts["test"][0]}
    labels = {"train": train_y[:n], "valid": train_y[n:], "test": parts["test"][1]}
    if "extra" in parts:
        images["train"] = np.concatenate([images["train"], parts["extra"][0]])
        labels["train"] = np.concatenate([labels["train"], parts["extra"][1]])
    return Dataset(
        name=name,
        kind="image",
        shape=SVHN_SHAPE,
        splits={k: torch.from_numpy(v.astype(np.float32) / np.float32(255.0)) for k, v in images.items()},
        labels={k: torch.from_numpy(v) for k, v in labels.items()},
        meta={
            "source": "SVHN cropped digits (format 2)",
            "directory": str(directory),
            "files": [str(directory / SVHN_FILES[p]) for p in parts],
            "scale": "pixel/255",
            "split": f"first {n} of train{' + extra' if 'extra' in parts else ''} / last {SVHN_VALID} of train "
            f"as valid (not part of the release) / {len(images['test'])} test",
        },
    )
