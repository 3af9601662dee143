"""`npz:PATH`: images stored as numpy arrays, in the layouts such files really come in.

Which arrays are the images (array names compared case-insensitively; the file is opened with
allow_pickle=False):

1. Split arrays: `train`, `valid` (or `val`, `validation`), `test` — or Keras-style `x_train`, `x_valid` (or
   `x_val`, `x_validation`), `x_test`, with optional labels `y_train`, `y_valid`, `y_test`. Train and test
   are used as stored; without a valid array, a fixed 10% of train (at least one image, chosen by a
   permutation of `data.split_seed`) becomes the validation split. A train (or test) array alone is split
   like a single array (rule 2; its y_ labels alongside), with a warning.
2. One image array: the only array with at least two dimensions, or else the only one named `x`, `images`,
   `image`, `data` or `arr_0` (what `np.savez(path, images)` writes). Labels, optional, are a 1-D integer
   array (or one-hot rows) named `y`, `labels`, `label`, `targets`, `target` or `arr_1`. The images are
   split 80/10/10 by a fixed permutation of `data.split_seed` (same seed, same split), labels alongside.

Anything else — two candidate image arrays, both `train` and `x_train`, `valid` without `train` — is
refused with the arrays found and the names to give them. Other arrays are ignored (logged).

Shapes (see `transforms.as_images`): (N, H, W); (N, H, W, C) or (N, C, H, W) with the channel axis the one
of axis 1 and axis 3 whose size is 1-4 (`data.channels=first|last` decides when both or neither are);
(N, D) with D a perfect square. Values (see `transforms.pixel_scale`, one decision for the whole file):
integers (uint8 or other) that are all 0/1 are binary and kept as 0/1; integers in 0..255 are divided by
255; floats must lie in [0, 1]; bool is binary.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset, path_from_name
from raygen.data.transforms import SPLITS, as_images, pixel_scale, split_indices, to_unit_float

log = logging.getLogger(__name__)

SPLIT_NAMES = {
    "plain": {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)},
    "keras": {"train": ("x_train",), "valid": ("x_valid", "x_val", "x_validation"), "test": ("x_test",)},
}
IMAGE_NAMES = ("x", "images", "image", "data", "arr_0")
LABEL_NAMES = ("y", "labels", "label", "targets", "target", "arr_1")
SINGLE_FRACTIONS = (0.8, 0.1, 0.1)
VALID_FRACTION = 0.1  # of train, when the file has train and test but no valid


def _describe(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {a.dtype}{tuple(a.shape)}" for k, a in arrays.items()) or "no arrays"


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """int64 (n,) from integer labels, or from one-hot rows (argmax)."""
    if y.ndim == 2 and len(y) == n and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all():
        return y.argmax(1).astype(np.int64)  # one-hot rows (Keras to_categorical)
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
    )
    if y.shape != (n,) or not integral:
        raise DataError(
            f"{where}: labels must be {n} integers (shape ({n},)) or {n} one-hot rows, got {y.dtype} {y.shape}"
        )
    return y.astype(np.int64)


def _find_splits(arrays: dict[str, np.ndarray], path: Path) -> dict[str, str] | None:
    """{split: array name} for rule 1, None when the file holds no split-named array."""
    lower = {k.lower(): k for k in arrays}
    found: dict[str, dict[str, str]] = {}
    for style, names in SPLIT_NAMES.items():
        for split, aliases in names.items():
            hits = [lower[a] for a in aliases if a in lower]
            if len(hits) > 1:
                raise DataError(
                    f"{path}: holds {' and '.join(hits)}, both naming the {split} split ({_describe(arrays)}); "
                    "keep one of them"
                )
            if hits:
                found.setdefault(style, {})[split] = hits[0]
    if not found:
        return None
    if len(found) > 1:
        names = sorted(n for f in found.values() for n in f.values())
        raise DataError(
            f"{path}: mixes plain and Keras-style split names ({', '.join(names)}); use either train/valid/test "
            "or x_train/x_valid/x_test"
        )
    (style, splits), = found.items()
    if "train" not in splits and "valid" in splits:
        raise DataError(
            f"{path}: has a {splits['valid']} array but no training array ({_describe(arrays)}); name the training "
            f"images {SPLIT_NAMES[style]['train'][0]}"
        )
    return splits


def _single_image_key(arrays: dict[str, np.ndarray], path: Path) -> str:
    candidates = [k for k, a in arrays.items() if a.ndim >= 2 and k.lower() not in LABEL_NAMES]
    named = [k for k in candidates if k.lower() in IMAGE_NAMES]
    if len(candidates) == 1:
        return candidates[0]
    if len(named) == 1:
        return named[0]
    problem = "no array with two or more dimensions" if not candidates else "several candidate image arrays"
    raise DataError(
        f"{path}: {problem} ({_describe(arrays)}); name the images 'images' (split 80/10/10, labels 'labels'), "
        "or the splits train/valid/test or x_train/x_test (labels y_train/y_test)"
    )


def _label_key(arrays: dict[str, np.ndarray], image_key: str, path: Path) -> str | None:
    names = [k for k in arrays if k.lower() in LABEL_NAMES and k != image_key]
    if image_key.lower() != "arr_0":
        names = [k for k in names if k.lower() != "arr_1"]  # arr_1 is a label array only beside arr_0
    if len(names) > 1:
        raise DataError(f"{path}: several label arrays ({', '.join(names)}); keep one, named 'labels'")
    return names[0] if names else None


def load_npz(name: str, config: DataConfig) -> Dataset:
    path = path_from_name(name, ".npz file", "/data/images.npz", Path.is_file)
    # np.load picks the format from the first bytes: a .npy file gives an ndarray (not an archive) and any other
    # non-zip file falls through to its pickle branch, whose error invites allow_pickle. Refuse both by the magic.
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{path}: a .npy file (one array), not an .npz archive; write it with np.savez(path, images)")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path}: not a readable .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz archive ({err})") from None
    except MemoryError as err:  # numpy allocates what an array's header declares before reading its data
        raise DataError(f"{path}: an array is larger than the free memory ({err})") from None

    splits_found = _find_splits(arrays, path)
    meta: dict = {}
    if splits_found is not None and "train" in splits_found and "test" in splits_found:
        raw_splits = {s: as_images(arrays[k], f"{path}[{k}]", config.channels) for s, k in splits_found.items()}
        lower = {k.lower(): k for k in arrays}
        y_names = {s: "y_" + k.lower().removeprefix("x_") for s, k in splits_found.items()}  # x_val -> y_val
        raw_labels = {
            s: _labels(arrays[lower[y]], len(raw_splits[s]), f"{path}[{lower[y]}]")
            for s, y in y_names.items() if y in lower
        }
        used = set(splits_found.values()) | {lower[y] for y in y_names.values() if y in lower}
        if "valid" not in raw_splits:
            perm = np.random.default_rng(config.split_seed % 2**63).permutation(len(raw_splits["train"]))
            n_valid = max(1, round(VALID_FRACTION * len(perm)))
            keep = {"valid": np.sort(perm[:n_valid]), "train": np.sort(perm[n_valid:])}
            train = raw_splits.pop("train")
            raw_splits.update({s: train[i] for s, i in keep.items()})
            if "train" in raw_labels:
                y = raw_labels.pop("train")
                raw_labels.update({s: y[i] for s, i in keep.items()})
            meta = {"split": f"train/test as stored; valid = a fixed {VALID_FRACTION:.0%} of train",
                    "split_seed": config.split_seed}
        else:
            meta = {"split": "as stored (train/valid/test arrays)"}
        labels = raw_labels if set(raw_labels) == set(SPLITS) else None
        if raw_labels and labels is None:
            log.warning("%s: labels for only %s; labels ignored", path, sorted(raw_labels))
    else:
        if splits_found is not None:  # one split-named array alone: use it as the single array
            if len(splits_found) > 1:
                raise DataError(
                    f"{path}: has {' and '.join(splits_found.values())} but no test array ({_describe(arrays)}); "
                    "name the test images test (or x_test)"
                )
            key = next(iter(splits_found.values()))
            log.warning("%s: only %s is stored; splitting it 80/10/10 into train/valid/test", path, key)
        else:
            key = _single_image_key(arrays, path)
        images = as_images(arrays[key], f"{path}[{key}]", config.channels)
        if splits_found is not None:  # x_train alone: its labels are y_train
            lower = {k.lower(): k for k in arrays}
            label_key = lower.get("y_" + key.lower().removeprefix("x_"))
        else:
            label_key = _label_key(arrays, key, path)
        idx = split_indices(len(images), SINGLE_FRACTIONS, config.split_seed)
        raw_splits = {s: images[i] for s, i in idx.items()}
        labels = None
        if label_key is not None:
            y = _labels(arrays[label_key], len(images), f"{path}[{label_key}]")
            labels = {s: y[i] for s, i in idx.items()}
        used = {key} | ({label_key} if label_key else set())
        meta = {"split": f"fixed permutation 80/10/10 of {key}", "split_seed": config.split_seed}
    ignored = sorted(set(arrays) - used)
    if ignored:
        log.info("%s: arrays not used: %s", path, ", ".join(ignored))

    shapes = {s: v.shape[1:] for s, v in raw_splits.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different example shapes {shapes}")
    scale = pixel_scale(raw_splits, str(path))
    splits = {s: torch.from_numpy(to_unit_float(v, f"{path}[{s}]", scale)) for s, v in raw_splits.items()}
    return Dataset(
        name=name,
        kind="image",
        shape=tuple(int(d) for d in splits["train"].shape[1:]),
        splits=splits,
        binary=scale == "binary",
        labels={s: torch.from_numpy(v) for s, v in labels.items()} if labels is not None else None,
        meta={"source": "npz", "files": [str(path)], "scale": scale, **meta},
    )
