"""`npz:PATH`: images stored as numpy arrays.

The file holds either arrays `train`, `valid` and `test` (used as given), or one array `x` split 80/10/10
by a fixed permutation of `data.split_seed` (an optional `y` of labels follows the same split). Arrays may
be (N, H, W), (N, C, H, W), (N, H, W, C) with C in {1, 3} (moved to channels-first), or (N, D) with D a
perfect square (read as square one-channel images). uint8 pixels are divided by 255, floats must already
lie in [0, 1]; anything else is a clear error. The file is opened with allow_pickle=False.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.transforms import SPLITS, split_indices, to_unit_float


def _images(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise DataError(
                f"{where}: flat examples of length {array.shape[1]} are not square images; "
                "store them as (N, H, W) or (N, C, H, W)"
            )
        array = array.reshape(len(array), 1, side, side)
    elif array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
            array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    else:
        raise DataError(f"{where}: array of shape {array.shape} is not a batch of images")
    return to_unit_float(np.ascontiguousarray(array), where)


def load_npz(name: str, config: DataConfig) -> Dataset:
    raw = name.split(":", 1)[1]
    if not raw:
        raise DataError("npz: needs a path, e.g. npz:/data/images.npz")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such .npz file (from dataset name '{name}')")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz archive ({err})") from None
    labels = None
    if all(s in arrays for s in SPLITS):
        splits = {s: _images(arrays[s], f"{path}[{s}]") for s in SPLITS}
        meta = {"split": "as stored (train/valid/test arrays)"}
    elif "x" in arrays:
        x = _images(arrays["x"], f"{path}[x]")
        idx = split_indices(len(x), (0.8, 0.1, 0.1), config.split_seed)
        splits = {k: x[v] for k, v in idx.items()}
        meta = {"split": "fixed permutation 80/10/10 of x", "split_seed": config.split_seed}
        if "y" in arrays:
            y = np.asarray(arrays["y"])
            if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{path}[y]: labels must be integers of shape ({len(x)},), got {y.dtype} {y.shape}"
                )
            labels = {k: torch.from_numpy(y[v].astype(np.int64)) for k, v in idx.items()}
    else:
        raise DataError(
            f"{path}: holds arrays {sorted(arrays) or 'none'}; expected train, valid and test, or x (and y)"
        )
    shapes = {s: v.shape[1:] for s, v in splits.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different example shapes {shapes}")
    return Dataset(
        name=name,
        kind="image",
        shape=tuple(int(d) for d in splits["train"].shape[1:]),
        splits={k: torch.from_numpy(v) for k, v in splits.items()},
        labels=labels,
        meta={"source": "npz", "files": [str(path)], "scale": "uint8/255 or float kept", **meta},
    )
