"""What every source shares: fixed splits, pixel scaling, binarization, and the final contract check.

Binarization (Goodfellow, Bengio & Courville, Deep Learning, §20.14): the three schemes give "wildly
different likelihood numbers", so the scheme is recorded in `Dataset.meta["binarize"]` and train and
evaluation always use the same one.

* threshold: pixel > data.threshold is 1, else 0 (deterministic).
* fixed: one Bernoulli(pixel) draw per split, made once from `data.split_seed` with numpy's PCG64 (a stream
  numpy keeps stable), so every load and every run sees the same binary images — the "binarized once and
  shared" scheme, like the Murray & Salakhutdinov (2009) file PF uses.
* dynamic: the train split keeps the pixel probabilities and `Dataset.prepare_batch` draws a fresh
  Bernoulli sample for every training batch; valid and test hold the same fixed draw as `fixed`, so
  evaluations are comparable between runs (repeat evaluation over several draws, as §20.14 suggests, is
  the evaluator's choice).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """A fixed permutation cut into train/valid/test by fractions (same seed, same split)."""
    order = np.random.default_rng(seed % 2**63).permutation(n)
    n_train = round(fractions[0] * n)
    n_valid = round(fractions[1] * n)
    return {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }


def pixel_scale(arrays: Mapping[str, np.ndarray], what: str) -> str:
    """How the pixel values of one source are read, decided once for all its arrays (splits or files).

    * ``binary``: bool arrays, and integer arrays (uint8 or any other integer dtype) whose values all lie
      in {0, 1}: kept as 0/1 (never divided by 255: a pre-binarized file stays binary whatever its dtype);
    * ``/255``: integer arrays with values in 0..255 (8-bit pixels);
    * ``float``: float arrays, which must already lie in [0, 1].

    One decision for the whole source, so that every split is scaled alike; a source whose arrays disagree
    (one split of 0/1 integers beside another of 0..255 pixels, or integers beside floats) is refused.
    """
    kinds: dict[str, str] = {}
    for key, array in arrays.items():
        where = f"{what}[{key}]" if len(arrays) > 1 else what
        if array.dtype == np.bool_:
            kinds[key] = "binary"
        elif np.issubdtype(array.dtype, np.integer):
            lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{where}: integer pixels range over [{lo}, {hi}]; expected 0/1 (binary) or 0..255 "
                    "(8-bit, divided by 255). Rescale them (16-bit images: divide by 257) or store floats in [0, 1]"
                )
            kinds[key] = "binary" if hi <= 1 else "/255"
        elif np.issubdtype(array.dtype, np.floating):
            if array.size and not np.isfinite(array).all():
                raise DataError(f"{where}: contains NaN or infinite values")
            if array.size and (array.min() < 0 or array.max() > 1):
                raise DataError(
                    f"{where}: float values must lie in [0, 1] but range over [{array.min():g}, "
                    f"{array.max():g}]; rescale them (or store uint8 pixels 0..255, which are divided by 255)"
                )
            kinds[key] = "float"
        else:
            raise DataError(
                f"{where}: dtype {array.dtype} is not supported; images must be uint8 (0..255, divided by "
                "255, or 0/1 kept binary), other integers with those values, bool, or float in [0, 1]"
            )
    found = set(kinds.values())
    if found <= {"binary"}:
        return "binary"
    if found <= {"binary", "/255"}:
        # A split of 0/1 integers that holds a 1 beside a split of 0..255 pixels: binary data and 8-bit
        # data are mixed (an all-zero split is harmless and simply scaled with the rest).
        mixed = [k for k, kind in kinds.items() if kind == "binary" and arrays[k].size and arrays[k].max() == 1]
        if mixed:
            other = next(k for k, kind in kinds.items() if kind == "/255")
            raise DataError(
                f"{what}: {', '.join(mixed)} holds only 0/1 values but {other} holds 8-bit pixels up to "
                f"{int(arrays[other].max())}; store every split on the same scale"
            )
        return "/255"
    if found <= {"binary", "float"}:
        return "float"  # float 0/1 and integer 0/1 are the same binary values
    raise DataError(f"{what}: arrays mix integer pixels and floats ({kinds}); store every split alike")


def to_unit_float(array: np.ndarray, what: str, scale: str | None = None) -> np.ndarray:
    """float32 in [0, 1] by `pixel_scale`'s rule (decided here from `array` alone unless `scale` is given)."""
    scale = scale or pixel_scale({what: array}, what)
    out = array.astype(np.float32)
    if scale == "/255":
        out /= np.float32(255.0)
    return out


CHANNEL_COUNTS = (1, 2, 3, 4)  # grey, grey+alpha, RGB, RGBA


def as_images(array: np.ndarray, where: str, channels: str = "auto") -> np.ndarray:
    """Any usual layout of a batch of images as (N, C, H, W) (values untouched).

    (N, H, W) is one channel; (N, D) with D a perfect square is a flattened square one-channel image;
    (N, A, B, C) is channels-last when only its last axis has a channel count (1-4), channels-first when
    only its second axis has one. When both or neither do, the layout is ambiguous and `channels`
    (data.channels = first | last) decides; with `auto` it is refused, naming the shape.
    """
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise DataError(
                f"{where}: flat examples of length {array.shape[1]} are not square images; "
                "store them as (N, H, W), (N, H, W, C) or (N, C, H, W)"
            )
        return array.reshape(len(array), 1, side, side)
    if array.ndim == 3:
        return array[:, None]
    if array.ndim != 4:
        raise DataError(
            f"{where}: array of shape {array.shape} is not a batch of images; expected (N, H, W), "
            "(N, H, W, C), (N, C, H, W) or (N, H*W)"
        )
    first, last = array.shape[1] in CHANNEL_COUNTS, array.shape[3] in CHANNEL_COUNTS
    if channels == "auto":
        if not first and not last:
            raise DataError(
                f"{where}: shape {array.shape} is not images: neither axis 1 nor axis 3 holds "
                f"{'/'.join(map(str, CHANNEL_COUNTS))} channels"
            )
        if first == last:
            raise DataError(
                f"{where}: cannot tell the channel axis of shape {array.shape} ("
                + ("both" if first else "neither")
                + f" axis 1 and axis 3 could hold {'/'.join(map(str, CHANNEL_COUNTS))} channels); "
                "set data.channels=first (N, C, H, W) or data.channels=last (N, H, W, C)"
            )
        channels = "first" if first else "last"
    if not (first if channels == "first" else last):  # a forced axis must still hold a channel count
        axis = 1 if channels == "first" else 3
        raise DataError(
            f"{where}: data.channels={channels} reads axis {axis} of shape {tuple(array.shape)} as "
            f"{array.shape[axis]} channels; images have {'/'.join(map(str, CHANNEL_COUNTS))}"
        )
    if channels == "last":
        array = array.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------------------- binarization


def fixed_bernoulli(p: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """One Bernoulli(p) draw that depends only on (seed, stream): the same on every load and machine."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, stream]))
    u = rng.random(tuple(p.shape), dtype=np.float64)
    return torch.from_numpy(u < p.double().numpy()).to(torch.float32)


def dynamic_bernoulli(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """binarize=dynamic: a fresh Bernoulli(x) batch each call (module-level so a Dataset pickles for Ray)."""
    return torch.bernoulli(x, generator=generator)


def binarize_splits(
    splits: dict[str, torch.Tensor], scheme: str, threshold: float, seed: int
) -> tuple[dict[str, torch.Tensor], object]:
    """Binarize float [0,1] splits; returns (splits, batch_transform or None). See the module docstring."""
    if scheme == "threshold":
        return {k: (v > threshold).to(torch.float32) for k, v in splits.items()}, None
    if scheme in ("fixed", "dynamic"):
        out = {k: fixed_bernoulli(v, seed, SPLITS.index(k)) for k, v in splits.items()}
        if scheme == "fixed":
            return out, None
        out["train"] = splits["train"]  # probabilities; prepare_batch draws
        return out, dynamic_bernoulli
    raise DataError(f"unknown binarization scheme '{scheme}' (known: none, threshold, fixed, dynamic)")


def effective_binarize(config: DataConfig, kind: str) -> str:
    """`auto` resolved: none for images, threshold for pixel sequences (tokens must be 0/1)."""
    if config.binarize != "auto":
        return config.binarize
    return "threshold" if kind == "sequence" else "none"


def binarize_meta(scheme: str, config: DataConfig) -> dict[str, object]:
    meta: dict[str, object] = {"binarize": scheme}
    if scheme == "threshold":
        meta["threshold"] = config.threshold
    if scheme in ("fixed", "dynamic"):
        meta["binarize_seed"] = config.split_seed
    return meta


# ------------------------------------------------------------------------------------------ finishing


def finish(dataset: Dataset, config: DataConfig) -> Dataset:
    """Apply binarization (images), the max_train cap, and check the contract of `Dataset`."""
    meta = dict(dataset.meta)
    if dataset.kind == "image":
        scheme = effective_binarize(config, "image")
        if scheme != "none":
            splits, transform = binarize_splits(dataset.splits, scheme, config.threshold, config.split_seed)
            dataset = replace(dataset, splits=splits, binary=True, batch_transform=transform)  # type: ignore[arg-type]
        elif not dataset.binary and all(bool(((v == 0) | (v == 1)).all()) for v in dataset.splits.values()):
            dataset = replace(dataset, binary=True)  # already binary data (e.g. a pre-binarized file)
        meta.update(binarize_meta(scheme, config))
    elif config.binarize not in ("auto", "none") and "binarize" not in meta:
        raise DataError(
            f"data.binarize={config.binarize} applies to image data (and pixel sequences), but "
            f"'{dataset.name}' is {dataset.kind} data; leave data.binarize=auto"
        )
    if config.max_train and len(dataset.splits["train"]) > config.max_train:
        splits = dict(dataset.splits)
        splits["train"] = splits["train"][: config.max_train]
        labels = dataset.labels
        if labels is not None:
            labels = {**labels, "train": labels["train"][: config.max_train]}
        dataset = replace(dataset, splits=splits, labels=labels)
        meta["max_train"] = config.max_train
    dataset = replace(dataset, meta=meta)
    check_contract(dataset)
    log.info(
        "dataset %s: %s", dataset.name, ", ".join(f"{k} {tuple(v.shape)}" for k, v in dataset.splits.items())
    )
    return dataset


def check_contract(dataset: Dataset) -> None:
    """Fail loudly (naming the dataset) when a loader breaks the `Dataset` contract."""
    where = f"dataset '{dataset.name}'"
    if set(dataset.splits) != set(SPLITS):
        raise DataError(f"{where} must have splits {SPLITS}, has {tuple(dataset.splits)}")
    want = torch.int64 if dataset.kind == "sequence" else torch.float32
    for split, x in dataset.splits.items():
        if len(x) == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if tuple(x.shape[1:]) != tuple(dataset.shape):
            raise DataError(
                f"{where}: {split} has examples of shape {tuple(x.shape[1:])}, not {dataset.shape}"
            )
        if x.dtype != want:
            raise DataError(f"{where}: {split} has dtype {x.dtype}, expected {want}")
        if dataset.labels is not None and len(dataset.labels[split]) != len(x):
            raise DataError(f"{where}: {split} has {len(x)} examples but {len(dataset.labels[split])} labels")
    if dataset.kind == "sequence":
        if not dataset.vocab:
            raise DataError(f"{where}: sequence data needs a vocabulary")
        for split, x in dataset.splits.items():
            if int(x.min()) < 0 or int(x.max()) >= len(dataset.vocab):
                raise DataError(f"{where}: {split} has token ids outside [0, {len(dataset.vocab)})")
