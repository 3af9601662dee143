"""`folder:PATH`: a directory of PNG/JPEG images (files ending .png, .jpg or .jpeg, any case).

Layouts:

1. Split directories: `PATH/train` and `PATH/test`, optionally `PATH/valid` (or `val`, `validation`). Without
   a valid directory a fixed 10% of train (at least one image, a permutation of `data.split_seed`) validates.
2. Otherwise all images of PATH, split 80/10/10 by a fixed permutation of `data.split_seed`.

Inside PATH (or each split directory) the images lie either directly there (no labels) or, as in
torchvision's ImageFolder, in one subdirectory per class (searched recursively; the label of an image is the
index of its class directory's name in the sorted list of all class names). Hidden files and other
extensions are ignored; files are read in sorted order, so the same folder gives the same dataset.

Each image is read with Pillow and converted to RGB (palette and 1-bit images expanded, alpha dropped,
16-bit grey reduced to 8 bits), then, by config:

* `data.center_crop=S`: the central S×S square is cut out (images smaller than S are refused);
* `data.image_size=S`: the shorter side is resized to S (Lanczos) and the central S×S square kept;
  without it every image must already have the same size (a folder of mixed sizes is refused, naming two);
* `data.color`: `gray` keeps one luminance channel (ITU-R 601 luma, as Pillow's convert("L")), `rgb` three; `auto` is gray when every image
  is grey (R = G = B everywhere), else rgb.

Values: 8-bit pixels are divided by 255 (`transforms.pixel_scale`; a folder whose pixels are all 0/1 stays
binary).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset, path_from_name
from raygen.data.transforms import SPLITS, pixel_scale, split_indices, to_unit_float

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}
VALID_FRACTION = 0.1


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in EXTENSIONS


def _visible_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(directory: Path) -> tuple[list[Path], list[str] | None]:
    """(image files, class name of each or None): top-level images, or one subdirectory per class."""
    top = sorted(p for p in directory.iterdir() if _is_image(p))
    classes = {d.name: sorted(p for p in d.rglob("*") if _is_image(p)) for d in _visible_dirs(directory)}
    classes = {name: files for name, files in classes.items() if files}
    if top and classes:
        raise DataError(
            f"{directory}: holds images both directly ({top[0].name}, ...) and in subdirectories "
            f"({', '.join(sorted(classes))}); put them all in one class subdirectory each, or all at the top"
        )
    if top:
        return top, None
    files = [f for name in sorted(classes) for f in classes[name]]
    return files, [name for name in sorted(classes) for _ in classes[name]]


def _split_dirs(root: Path) -> dict[str, Path] | None:
    dirs = {d.name.lower(): d for d in _visible_dirs(root)}
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_DIRS.items():
        hits = [dirs[a] for a in aliases if a in dirs]
        if len(hits) > 1:
            raise DataError(f"{root}: both {' and '.join(h.name for h in hits)} name the {split} split; keep one")
        if hits:
            found[split] = hits[0]
    if not found:
        return None
    if "train" not in found or "test" not in found:
        raise DataError(
            f"{root}: has {', '.join(d.name + '/' for d in found.values())} but split directories need both "
            "train/ and test/ (valid/ optional); add the missing one, or rename them to use the whole folder "
            "split 80/10/10"
        )
    return found


def _read(path: Path, config: DataConfig) -> np.ndarray:
    """One image as uint8 (H, W, 3) after the configured crop and resize."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):  # a 16-bit grey PNG (modes I;16 / I): 0..65535 -> 0..255
                wide = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable PNG/JPEG image ({err})") from None
    except Image.DecompressionBombError as err:  # not an OSError: a huge header would escape as a traceback
        raise DataError(f"{path}: refused, image too large ({err})") from None
    if config.center_crop is not None:
        side = config.center_crop
        w, h = image.size
        if w < side or h < side:
            raise DataError(f"{path}: is {w}x{h}, smaller than data.center_crop={side}")
        left, upper = (w - side) // 2, (h - side) // 2
        image = image.crop((left, upper, left + side, upper + side))
    if config.image_size is not None:
        side = config.image_size
        w, h = image.size
        scale = side / min(w, h)
        size = (max(side, round(w * scale)), max(side, round(h * scale)))
        if size != (w, h):
            image = image.resize(size, Image.Resampling.LANCZOS)
        w, h = image.size
        left, upper = (w - side) // 2, (h - side) // 2
        image = image.crop((left, upper, left + side, upper + side))
    return np.asarray(image, dtype=np.uint8)


def _free_memory() -> int | None:
    """Bytes of physical memory free now (Linux/macOS sysconf), None where the platform does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(n: int, config: DataConfig, root: Path) -> None:
    """Refuse a data.image_size whose images cannot fit in memory before resizing the first one: a typo
    (image_size=100000) would otherwise upscale every image with Lanczos until the machine runs out of memory."""
    if config.image_size is None:
        return
    side = config.image_size
    need = n * side * side * 3 * 5  # uint8 RGB while reading + float32 after scaling to [0, 1]
    free = _free_memory()
    if free is not None and need > free:
        raise DataError(
            f"{root}: data.image_size={side} makes {n} images of {side}x{side} pixels, about {need / 2**30:.1f} GiB, "
            f"more than the {free / 2**30:.1f} GiB of free memory; choose a smaller data.image_size"
        )


def _stack(files: list[Path], config: DataConfig, where: Path) -> np.ndarray:
    """uint8 (N, H, W, 3); a clear error when sizes differ."""
    arrays = [_read(f, config) for f in files]
    first = arrays[0].shape
    for f, a in zip(files, arrays):
        if a.shape != first:
            raise DataError(
                f"{where}: images differ in size ({files[0]} is {first[1]}x{first[0]}, {f} is {a.shape[1]}x"
                f"{a.shape[0]}); set data.image_size=S to resize and center-crop them all to SxS"
            )
    return np.stack(arrays)


def load_folder(name: str, config: DataConfig) -> Dataset:
    root = path_from_name(name, "directory of images", "/data/my-images", Path.is_dir)
    split_dirs = _split_dirs(root)
    scanned = {s: _scan(d) for s, d in split_dirs.items()} if split_dirs else {"all": _scan(root)}
    for key, (files, _) in scanned.items():
        if not files:
            where = split_dirs[key] if split_dirs else root
            raise DataError(
                f"{where}: no {'/'.join(EXTENSIONS)} images (looked in it and in its subdirectories)"
            )
    with_classes = [k for k, (_, c) in scanned.items() if c is not None]
    if with_classes and len(with_classes) != len(scanned):
        log.warning("%s: class subdirectories in %s only; labels not used", root, with_classes)
    class_names = sorted({c for _, cs in scanned.values() for c in cs or ()}) if len(with_classes) == len(
        scanned
    ) else None
    log.info("folder %s: reading %d images", root, sum(len(f) for f, _ in scanned.values()))
    _check_size(sum(len(f) for f, _ in scanned.values()), config, root)
    arrays = {k: _stack(files, config, root) for k, (files, _) in scanned.items()}
    sizes = {k: a.shape[1:] for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"{root}: splits differ in image size {sizes}; set data.image_size=S to resize them all to SxS"
        )
    labels = None
    if class_names is not None:
        index = {c: i for i, c in enumerate(class_names)}
        labels = {k: np.array([index[c] for c in cs], dtype=np.int64) for k, (_, cs) in scanned.items()}

    if split_dirs:
        meta = {"split": "split directories " + "/".join(d.name for d in split_dirs.values())}
        if "valid" not in arrays:
            perm = np.random.default_rng(config.split_seed % 2**63).permutation(len(arrays["train"]))
            n_valid = max(1, round(VALID_FRACTION * len(perm)))
            keep = {"valid": np.sort(perm[:n_valid]), "train": np.sort(perm[n_valid:])}
            train = arrays.pop("train")
            arrays.update({s: train[i] for s, i in keep.items()})
            if labels is not None:
                y = labels.pop("train")
                labels.update({s: y[i] for s, i in keep.items()})
            meta = {"split": f"train/ and test/ as stored; valid = a fixed {VALID_FRACTION:.0%} of train",
                    "split_seed": config.split_seed}
    else:
        idx = split_indices(len(arrays["all"]), (0.8, 0.1, 0.1), config.split_seed)
        arrays = {s: arrays["all"][i] for s, i in idx.items()}
        labels = {s: labels["all"][i] for s, i in idx.items()} if labels is not None else None
        meta = {"split": "fixed permutation 80/10/10", "split_seed": config.split_seed}

    grey = all(bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()) for a in arrays.values())
    color = config.color if config.color != "auto" else ("gray" if grey else "rgb")
    if color == "gray":
        # ITU-R 601 luma in Pillow's fixed point (its convert("L")); equal to the channel when R = G = B
        weights = np.array([19595, 38470, 7471], dtype=np.uint32)
        arrays = {s: ((a @ weights + 0x8000) >> 16).astype(np.uint8)[..., None] for s, a in arrays.items()}
    arrays = {s: np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for s, a in arrays.items()}  # (N, C, H, W)
    scale = pixel_scale(arrays, str(root))
    splits = {s: torch.from_numpy(to_unit_float(arrays[s], f"{root} {s}", scale)) for s in SPLITS}
    return Dataset(
        name=name,
        kind="image",
        shape=tuple(int(d) for d in splits["train"].shape[1:]),
        splits=splits,
        binary=scale == "binary",
        labels={s: torch.from_numpy(labels[s]) for s in SPLITS} if labels is not None else None,
        meta={
            "source": "image folder",
            "directory": str(root),
            "color": color,
            "center_crop": config.center_crop,
            "image_size": config.image_size,
            "classes": class_names,
            "scale": scale,
            **meta,
        },
    )
