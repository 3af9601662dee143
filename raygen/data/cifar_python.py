"""CIFAR-10's "python version" as torchvision keeps it: the directory cifar-10-batches-py/ with data_batch_1 …
data_batch_5 and test_batch (no extension), so a data root shared with torchvision is read in place.

Each file is a pickled dict (written by Python 2): "data", a uint8 array of shape (10 000, 3072) whose rows
are the 1024 red, 1024 green, 1024 blue values of a 32×32 image, each plane row by row (the same order as the
binary version), and "labels", a list of 10 000 ints 0–9 (plus "batch_label" and "filenames", unused).

A pickle can name any Python callable and have it called while it loads, so these files are never given to
`pickle.load` as they are: `SafeUnpickler` resolves only the three numpy names an array needs (its
reconstructor, `ndarray`, `dtype`) and `_codecs.encode` restricted to latin-1 (how protocol-2 pickles written
by Python 3 store bytes); every other global is refused before anything is called. Dicts, lists, strings and
numbers need no globals. The CIFAR page publishes an md5 only for the archive, not for these files, so each
is checked for its structure (a dict, uint8 data of the exact shape, labels 0–9 of the same count).
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from raygen.data.base import DataError, read_file_bytes

PY_MEMBER_DIR = "cifar-10-batches-py"
PY_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
PY_TEST_FILE = "test_batch"
PY_FILES = (*PY_TRAIN_FILES, PY_TEST_FILE)

# numpy's array reconstructor under the name this numpy pickles it with; Python 2 era files name it
# numpy.core.multiarray, numpy >= 2 names it numpy._core.multiarray (same function).
_RECONSTRUCT = np.empty(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin-1 is allowed)")
    return text.encode("latin-1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only (see the module docstring)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (a CIFAR-10 batch holds only a dict of lists and numpy arrays)"
            ) from None


def safe_load(raw: bytes) -> object:
    # latin-1: Python 2 `str` values (the array bytes among them) come back unchanged, as numpy documents
    return SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()


def parse_python_batch(raw: bytes, where: str, records: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images uint8 (records, 3, 32, 32), labels int64 (records,))."""
    try:
        batch = safe_load(raw)
    except Exception as err:  # noqa: BLE001 - any failure of a corrupt or hostile pickle is one DataError
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: holds a {type(batch).__name__}, a CIFAR-10 python batch is a dict")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{where}: lacks the keys 'data' and 'labels' (has {sorted(map(str, batch))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (records, 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be uint8 of shape ({records}, 3072), got {got}")
    if not isinstance(labels, list | np.ndarray) or len(labels) != records:
        got = len(labels) if hasattr(labels, "__len__") else type(labels).__name__
        raise DataError(f"{where}: 'labels' must list {records} labels, got {got}")
    if not all(isinstance(v, int | np.integer) and 0 <= v <= 9 for v in labels):
        raise DataError(f"{where}: 'labels' must be integers 0-9")
    return data.reshape(records, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def python_dirs(root: Path, own: Path) -> list[Path]:
    """Where the python batches are looked for: in raygen's cifar10/ directory, then in the root itself
    (torchvision's `CIFAR10(root)` keeps root/cifar-10-batches-py/)."""
    return [own / PY_MEMBER_DIR, root / PY_MEMBER_DIR]


def complete_python_dir(root: Path, own: Path) -> Path | None:
    for directory in python_dirs(root, own):
        if all((directory / f).is_file() for f in PY_FILES):
            return directory
    return None


def read_python_batches(directory: Path, records: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {f: parse_python_batch(read_file_bytes(directory / f), str(directory / f), records) for f in PY_FILES}
