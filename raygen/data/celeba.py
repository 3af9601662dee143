"""The `celeba` dataset: CelebA's aligned and cropped faces (Liu et al. 2015), 64×64 RGB in [0, 1].

Looked for in `<data root>/celeba/` (the layout torchvision's `CelebA(root)` also uses): the extracted
img_align_celeba/ folder of 178×218 JPEGs (000001.jpg …) and, when present, the official partition file
list_eval_partition.txt ("000001.jpg 0" per line: 0 train, 1 valid, 2 test; 162 770 / 19 867 / 19 962 images).
Without the partition file the images present are split 80/10/10 by a fixed permutation of `data.split_seed`
(with a warning: numbers are then not comparable with the official split).

Preprocessing, as the VW paper states it ("the aligned and cropped version of CelebA was scaled from 218 x 178
pixels to 78 x 64 pixels and center-cropped at 64 x 64"): the shorter side (width 178) is resized to 64 with
Lanczos, so the height becomes round(218·64/178) = 78, and the central 64×64 square is kept (rows 7..70 of
the 78). This is `folder:`'s `data.image_size=64` applied to each image (`folder._read`); `data.image_size`
overrides the 64 and `data.center_crop` (a square cut before resizing, not part of the VW recipe) may be
added. Pixels are divided by 255 (Infusion: "the only preprocessing"). Nothing is downloaded and the
release publishes no per-file checksums: images must be readable JPEG/PNG, and the partition file must be
lines of "<file> <0|1|2>" naming images that are in the folder; every problem is a `DataError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.folder import _is_image, _stack
from raygen.data.registry import data_root
from raygen.data.transforms import SPLITS, split_indices, to_unit_float

log = logging.getLogger(__name__)

CELEBA_IMAGES = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_SIZE = 64  # VW: scaled to 78 x 64, center-cropped at 64 x 64
PARTITION_SPLITS = {"0": "train", "1": "valid", "2": "test"}


def celeba_dir(config: DataConfig) -> Path:
    return data_root(config) / "celeba"


def celeba_files(name: str, config: DataConfig) -> list[Path]:
    """For `raygen datasets`: the image folder (the partition file is optional)."""
    return [celeba_dir(config) / CELEBA_IMAGES]


def read_partition(path: Path) -> dict[str, str]:
    """file name -> split, from the official list_eval_partition.txt."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the partition file ({err})") from None
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in PARTITION_SPLITS:
            raise DataError(
                f"{path}: line {number} is {line!r}; each line must be '<image file> <0|1|2>' "
                "(0 train, 1 valid, 2 test)"
            )
        if fields[0] in out:
            raise DataError(f"{path}: line {number} lists {fields[0]} a second time")
        out[fields[0]] = PARTITION_SPLITS[fields[1]]
    if not out:
        raise DataError(f"{path}: the partition file lists no images")
    return out


def load_celeba(name: str, config: DataConfig) -> Dataset:
    directory = celeba_dir(config)
    images_dir = directory / CELEBA_IMAGES
    if not images_dir.is_dir():
        raise DataError(
            f"CelebA not found: {images_dir} is not a directory. Extract the aligned-and-cropped images "
            f"(img_align_celeba.zip) there, and put {CELEBA_PARTITION} in {directory} for the official "
            "train/valid/test split; raygen does not download CelebA"
        )
    files = sorted(p for p in images_dir.iterdir() if _is_image(p))
    if not files:
        raise DataError(f"{images_dir}: holds no .jpg/.png images")
    size = config.image_size if config.image_size is not None else CELEBA_SIZE
    read_config = config.model_copy(update={"image_size": size})
    partition_path = directory / CELEBA_PARTITION
    if partition_path.exists():
        partition = read_partition(partition_path)
        present = {p.name: p for p in files}
        missing = [f for f in partition if f not in present]
        if missing:
            raise DataError(
                f"{partition_path}: lists {len(missing)} image(s) not in {images_dir} (first: {missing[0]}); "
                f"extract the whole img_align_celeba.zip, or move {CELEBA_PARTITION} away to split the "
                f"{len(files)} images present 80/10/10"
            )
        unlisted = len(present) - len(partition)
        if unlisted:
            log.warning("celeba: %d image(s) in %s are not in %s; not used", unlisted, images_dir, partition_path)
        chosen = {s: [present[f] for f in sorted(partition) if partition[f] == s] for s in SPLITS}
        empty = [s for s, v in chosen.items() if not v]
        if empty:
            raise DataError(f"{partition_path}: assigns no image to the {', '.join(empty)} split")
        split_rule = f"official {CELEBA_PARTITION}"
    else:
        log.warning("celeba: no %s in %s; splitting the %d images 80/10/10 by a fixed permutation (not the "
                    "official split)", CELEBA_PARTITION, directory, len(files))
        idx = split_indices(len(files), (0.8, 0.1, 0.1), config.split_seed)
        chosen = {s: [files[i] for i in sorted(idx[s])] for s in SPLITS}
        if any(not v for v in chosen.values()):
            raise DataError(f"{images_dir}: {len(files)} image(s) are too few for train/valid/test splits")
        split_rule = f"fixed permutation 80/10/10 (split_seed {config.split_seed}; no {CELEBA_PARTITION})"
    capped = config.max_train is not None and len(chosen["train"]) > config.max_train
    if capped:  # before decoding: a quick run on 1 000 faces must not read and resize all 162 770 first
        chosen["train"] = chosen["train"][: config.max_train]  # the first ones, as the common cap keeps
    log.info("celeba: reading %d images", sum(len(v) for v in chosen.values()))
    splits = {}
    for s, paths in chosen.items():
        pixels = _stack(paths, read_config, images_dir).transpose(0, 3, 1, 2)  # (N, 3, S, S) uint8
        splits[s] = torch.from_numpy(np.ascontiguousarray(to_unit_float(pixels, f"celeba {s}", "/255")))
    return Dataset(
        name=name,
        kind="image",
        shape=(3, size, size),
        splits=splits,
        meta={
            "source": "CelebA aligned and cropped (img_align_celeba)",
            "directory": str(directory),
            "preprocessing": f"shorter side resized to {size} (Lanczos; 178x218 -> {size}x"
            f"{round(218 * size / 178)}), central {size}x{size} kept (VW)"
            + (f", after a central {config.center_crop} square crop" if config.center_crop else ""),
            "scale": "pixel/255",
            "split": split_rule,
            **({"max_train": config.max_train} if capped else {}),
        },
    )
