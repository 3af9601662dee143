"""IDX files (the MNIST format) and the `mnist` and `idx:PATH` datasets.

IDX layout (LeCun's MNIST page), all integers big-endian:

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension (uint32)
    rest        the elements in C order; exactly prod(sizes) * itemsize bytes

Files may be gzipped (detected by the gzip magic bytes, not the name). Every way a file can be wrong —
unreadable, bad gzip, truncated, wrong magic, unknown type code, payload of the wrong length, the official
MNIST name with the wrong md5 — raises `DataError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset, decompress, path_from_name, read_file_bytes
from raygen.data.download import fetch
from raygen.data.registry import data_root
from raygen.data.transforms import as_images, pixel_scale, split_indices, to_unit_float

log = logging.getLogger(__name__)

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# md5 of the four official files, as published by torchvision/TFDS/paddle and checked against the t10k
# files in the project's shared data folder.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Header shapes of the official files (checked for the gzipped and the decompressed versions).
MNIST_SHAPES = {
    "train-images-idx3-ubyte": (60_000, 28, 28),
    "train-labels-idx1-ubyte": (60_000,),
    "t10k-images-idx3-ubyte": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte": (10_000,),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_TRAIN, MNIST_TEST = "train-images-idx3-ubyte", "t10k-images-idx3-ubyte"
MNIST_VALID = 10_000  # standard: the last 10 000 training images are the validation set


# ------------------------------------------------------------------------------------------ IDX format


def parse_idx(raw: bytes, where: str) -> np.ndarray:
    """Decode IDX bytes (already decompressed) into an array in native byte order; `where` names the file."""
    if len(raw) < 4:
        raise DataError(f"{where}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{where}: not an IDX file (magic number 0x{raw[:4].hex()} does not start with 0000)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{where}: unknown IDX element type 0x{code:02x} (known: 08 09 0B 0C 0D 0E)")
    if ndim == 0:
        raise DataError(f"{where}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{where}: truncated IDX header ({len(raw)} bytes, needs {header} for {ndim} dims)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        problem = "truncated" if payload < expected else "has trailing bytes"
        raise DataError(
            f"{where}: {problem}: header says {dims} x {dtype.itemsize} bytes = {expected} bytes of data, "
            f"file holds {payload}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path, official: bool = True) -> np.ndarray:
    """Read an IDX file (gzipped or raw). With `official`, MNIST's file names are md5- and shape-checked;
    `idx:` passes False, since other data sets (Fashion-MNIST, KMNIST) ship under exactly those names."""
    path = Path(path)
    raw = read_file_bytes(path)
    want = MNIST_MD5.get(path.name) if official else None
    if want is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != want:
            raise DataError(
                f"{path}: md5 {got} does not match the official {path.name} ({want}); the file is corrupt "
                "or not the official one. Delete it and fetch it again (data.download=true)"
            )
    array = parse_idx(decompress(raw, path), str(path))
    shape = MNIST_SHAPES.get(path.name.removesuffix(".gz")) if official else None
    if shape is not None and array.shape != shape:
        raise DataError(f"{path}: holds shape {array.shape}, the official file has {shape}")
    return array


def idx_images(array: np.ndarray, where: str, channels: str = "auto", scale: str | None = None) -> np.ndarray:
    """An IDX array as float32 images (N, C, H, W) in [0, 1] (layouts: `transforms.as_images`; values:
    `transforms.pixel_scale`, so a file of 0/1 bytes stays binary)."""
    if array.ndim == 1:
        raise DataError(f"{where}: holds a 1-D array of shape {array.shape}, which is a labels file, not images")
    return to_unit_float(as_images(array, where, channels), where, scale)


def labels_file(images_path: Path) -> Path | None:
    """The labels file beside an images file: its name with 'images' -> 'labels' and 'idx3' -> 'idx1'
    (as MNIST's train-images-idx3-ubyte / train-labels-idx1-ubyte), gzipped or not; None when absent."""
    stem = images_path.name.removesuffix(".gz")
    base = stem.replace("images", "labels").replace("idx3", "idx1")
    if base == stem:
        return None
    return _existing(images_path.parent, base)


def read_labels(path: Path, n: int, official: bool = True) -> np.ndarray:
    """int64 (n,) labels from an IDX labels file, checked against the number of images."""
    labels = read_idx(path, official)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: a labels file must hold {n} integers (one per image), holds {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------------------ mnist


def _existing(directory: Path, base: str) -> Path | None:
    """The gzipped file if present (it can be md5-checked), else the decompressed one, else None."""
    for candidate in (directory / f"{base}.gz", directory / base):
        if candidate.exists():
            return candidate
    return None


def mnist_dir(config: DataConfig) -> Path:
    return data_root(config) / "mnist"


def torchvision_mnist_dir(config: DataConfig) -> Path:
    """torchvision's layout under the same root (`MNIST(root)` keeps the files in root/MNIST/raw/), so a data
    root shared with torchvision is read in place instead of downloading MNIST a second time."""
    return data_root(config) / "MNIST" / "raw"


def _needed(config: DataConfig) -> list[str]:
    return [MNIST_TEST] if config.mnist_split == "test-only" else [MNIST_TRAIN, MNIST_TEST]


def mnist_directory(config: DataConfig) -> Path:
    """Where `mnist` reads: raygen's own <root>/mnist/ when it holds every needed image file, else
    torchvision's <root>/MNIST/raw/ when that does, else raygen's (downloads go there; errors name both)."""
    for directory in (mnist_dir(config), torchvision_mnist_dir(config)):
        if all(_existing(directory, b) is not None for b in _needed(config)):
            return directory
    return mnist_dir(config)


def mnist_files(name: str, config: DataConfig) -> list[Path]:
    """The image files `mnist` needs (for `raygen datasets`): the existing variant, else the .gz name."""
    directory = mnist_directory(config)
    return [_existing(directory, b) or directory / f"{b}.gz" for b in _needed(config)]


def _missing_message(missing: list[str], directory: Path, config: DataConfig) -> str:
    files = " and ".join(f"{b}.gz" for b in missing)
    msg = (
        f"MNIST file(s) not found: {files} in {directory} (nor in torchvision's layout {directory.parent / 'MNIST' / 'raw'}). "
        "Put the official files there (gzipped or not), "
        f"or set data.download=true to fetch them (md5-checked) from {', '.join(MNIST_MIRRORS)}"
    )
    if config.mnist_split == "official":
        msg += (
            "; or, when only the t10k file is available, set data.mnist_split=test-only (splits the 10 000 test "
            "images 8000/1000/1000; numbers are then not comparable with published ones)"
        )
    return msg + "."


def _download_mnist(bases: list[str], directory: Path, config: DataConfig) -> None:
    mirrors = (*config.download_mirrors, *MNIST_MIRRORS)
    for base in bases:
        for filename in (f"{base}.gz", f"{base.replace('images-idx3', 'labels-idx1')}.gz"):
            if _existing(directory, filename.removesuffix(".gz")) is None:
                fetch(filename, directory, MNIST_MD5[filename], mirrors, config.download_timeout)


def _labels(images_path: Path, n: int) -> np.ndarray | None:
    path = labels_file(images_path)
    return read_labels(path, n) if path is not None else None


def load_mnist(name: str, config: DataConfig) -> Dataset:
    """MNIST images (1, 28, 28) in [0, 1] (pixel/255: "the only preprocessing", Infusion §3.5).

    official: train = the first 50 000 training images, valid = the last 10 000 (standard), test = t10k.
    test-only: the 10 000 t10k images split 8000/1000/1000 by a fixed permutation of `split_seed`.
    """
    directory = mnist_directory(config)
    needed = _needed(config)
    missing = [b for b in needed if _existing(directory, b) is None]
    if missing and config.download:
        _download_mnist(missing, directory, config)
        missing = [b for b in needed if _existing(directory, b) is None]
    if missing:
        raise DataError(_missing_message(missing, directory, config))

    test_path = _existing(directory, MNIST_TEST)
    assert test_path is not None
    test = idx_images(read_idx(test_path), str(test_path))
    test_labels = _labels(test_path, len(test))
    meta: dict = {"source": "MNIST IDX", "directory": str(directory), "scale": "pixel/255"}
    if config.mnist_split == "official":
        train_path = _existing(directory, MNIST_TRAIN)
        assert train_path is not None
        train = idx_images(read_idx(train_path), str(train_path))
        train_labels = _labels(train_path, len(train))
        n = len(train) - MNIST_VALID
        splits = {"train": train[:n], "valid": train[n:], "test": test}
        labels = None
        if train_labels is not None and test_labels is not None:
            labels = {"train": train_labels[:n], "valid": train_labels[n:], "test": test_labels}
        meta.update(
            split="official: 50000 train / last 10000 of train as valid / 10000 t10k test",
            files=[str(train_path), str(test_path)],
        )
    else:
        idx = split_indices(len(test), (0.8, 0.1, 0.1), config.split_seed)
        splits = {k: test[v] for k, v in idx.items()}
        labels = {k: test_labels[v] for k, v in idx.items()} if test_labels is not None else None
        meta.update(
            split="test-only: the 10000 t10k images split 8000/1000/1000 by a fixed permutation; "
            "not comparable with published MNIST numbers",
            split_seed=config.split_seed,
            files=[str(test_path)],
        )
        log.warning("mnist: data.mnist_split=test-only; results are not comparable with published numbers")
    return Dataset(
        name=name,
        kind="image",
        shape=(1, 28, 28),
        splits={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in splits.items()},
        labels={k: torch.from_numpy(v) for k, v in labels.items()} if labels is not None else None,
        meta=meta,
    )


# ------------------------------------------------------------------------------------------ idx:PATH


def _idx_split_files(directory: Path) -> dict[str, Path]:
    """The train and test image files of a directory: names containing train / test (or t10k)."""
    found: dict[str, dict[str, Path]] = {"train": {}, "test": {}}
    for path in sorted(directory.iterdir()):
        lower = path.name.lower()
        if not path.is_file() or "label" in lower or path.name.startswith("."):
            continue
        if not ("idx" in lower or lower.endswith((".ubyte", ".ubyte.gz"))):
            continue
        stem = path.name.removesuffix(".gz")
        split = "train" if "train" in lower else "test" if ("test" in lower or "t10k" in lower) else None
        # the gzipped copy wins over its decompressed twin (same stem)
        if split and (stem not in found[split] or path.name.endswith(".gz")):
            found[split][stem] = path
    out = {}
    for split, files in found.items():
        if len(files) != 1:
            listed = ", ".join(p.name for p in files.values()) or "none"
            raise DataError(
                f"{directory}: expected exactly one IDX image file with '{split}' in its name, found {listed} "
                "(label files are ignored; point idx: at a single file to split it 80/10/10)"
            )
        out[split] = next(iter(files.values()))
    return out


def load_idx(name: str, config: DataConfig) -> Dataset:
    """Images from any IDX file, with class labels when a labels file lies beside it (`labels_file`).

    `idx:FILE`: split 80/10/10 by a fixed permutation of `data.split_seed`. `idx:DIR`: the one image file
    with 'train' and the one with 'test' (or 't10k') in its name; valid = the last 10% of train (contiguous,
    like MNIST's standard split). Labels are used only when every image file has its labels file.
    Layouts and values as for `npz:` (`transforms.as_images`, `transforms.pixel_scale`)."""
    path = path_from_name(name, "IDX file or directory", "/data/my-images-idx3-ubyte.gz", Path.exists)
    files = _idx_split_files(path) if path.is_dir() else {"all": path}
    arrays = {k: read_idx(f, official=False) for k, f in files.items()}
    scale = pixel_scale(arrays, str(path))
    images = {k: idx_images(a, str(files[k]), config.channels, scale) for k, a in arrays.items()}
    found_labels = {k: labels_file(f) for k, f in files.items()}
    labels = (
        {k: read_labels(lf, len(images[k]), official=False) for k, lf in found_labels.items() if lf is not None}
        if all(found_labels.values())
        else None
    )
    if path.is_dir():
        train, test = images["train"], images["test"]
        if train.shape[1:] != test.shape[1:]:
            raise DataError(f"{path}: train images {train.shape[1:]} and test images {test.shape[1:]} differ")
        n_valid = max(1, len(train) // 10)
        cut = {"train": slice(None, -n_valid), "valid": slice(-n_valid, None)}
        splits = {"train": train[cut["train"]], "valid": train[cut["valid"]], "test": test}
        if labels is not None:
            labels = {"train": labels["train"][cut["train"]], "valid": labels["train"][cut["valid"]],
                      "test": labels["test"]}
        meta = {
            "split": "directory: train file minus its last 10% / last 10% of train / test file",
            "files": [str(files["train"]), str(files["test"])],
        }
    else:
        idx = split_indices(len(images["all"]), (0.8, 0.1, 0.1), config.split_seed)
        splits = {k: images["all"][v] for k, v in idx.items()}
        if labels is not None:
            labels = {k: labels["all"][v] for k, v in idx.items()}
        meta = {"split": "fixed permutation 80/10/10", "split_seed": config.split_seed, "files": [str(path)]}
    if labels is not None:
        meta["label_files"] = [str(f) for f in found_labels.values()]
    shape = tuple(int(s) for s in splits["train"].shape[1:])
    return Dataset(
        name=name,
        kind="image",
        shape=shape,
        splits={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in splits.items()},
        binary=scale == "binary",
        labels={k: torch.from_numpy(v) for k, v in labels.items()} if labels is not None else None,
        meta={"source": "IDX", "scale": scale, **meta},
    )
