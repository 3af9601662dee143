"""The `cifar10` dataset, from the official "CIFAR-10 binary version", or from the python version's extracted
cifar-10-batches-py/ that torchvision users already have (read by `cifar_python` without running the pickles).

Layout (https://www.cs.toronto.edu/~kriz/cifar.html): the archive cifar-10-binary.tar.gz holds the directory
cifar-10-batches-bin/ with data_batch_1.bin … data_batch_5.bin and test_batch.bin. Each .bin file is 10 000
records of 3073 bytes: one label byte (0–9), then 3072 pixel bytes — the 1024 red, then the 1024 green, then
the 1024 blue values of a 32×32 image, each plane in row-major order. So a record's pixels reshape directly
to (3, 32, 32) = (channel, row, column).

Looked for in `<data root>/cifar10/`: the extracted cifar-10-batches-bin/*.bin files when all six are there,
else the archive, read in place (one streaming pass; only members with the exact expected names are read,
and nothing is written to disk). When the .bin files are not all there, a complete cifar-10-batches-py/ in
`<data root>/cifar10/` or in `<data root>/` itself (torchvision's `CIFAR10(root)` layout) is read instead.
The archive is md5-checked against the official checksum; the extracted files have no published checksums,
so they are checked for their exact size and for label bytes 0–9.
Every problem raises `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset, read_file_bytes
from raygen.data.cifar_python import PY_FILES, PY_MEMBER_DIR, complete_python_dir, read_python_batches
from raygen.data.download import fetch, md5sum
from raygen.data.registry import data_root
from raygen.data.transforms import to_unit_float

log = logging.getLogger(__name__)

CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page for the binary version
CIFAR_ARCHIVE_BYTES = 170_052_171
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR_MEMBER_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
CIFAR_FILES = (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)
CIFAR_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
# Records in each official batch file. Module-level so tests can write small files in the exact record
# format; the size check always uses this value, so real files must hold exactly 10 000 records.
RECORDS_PER_FILE = 10_000
# The common convention (no split is part of the release): the last 5 000 training images validate.
CIFAR_VALID = 5_000


# ------------------------------------------------------------------------------------------ format


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (images uint8 (N, 3, 32, 32), labels int64 (N,)); N = RECORDS_PER_FILE."""
    expected = RECORDS_PER_FILE * RECORD_BYTES
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{where}: {problem}: {len(raw)} bytes, a CIFAR-10 batch file holds {RECORDS_PER_FILE} records "
            f"of {RECORD_BYTES} bytes = {expected} bytes (the file is corrupt or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: bad label {int(labels[i])} at record {i} (byte offset {i * RECORD_BYTES}); CIFAR-10 "
            f"labels are 0-9 ({bad.size} bad record(s) in all); the file is corrupt or not a CIFAR-10 batch"
        )
    return records[:, 1:].reshape(RECORDS_PER_FILE, *CIFAR_SHAPE), labels.astype(np.int64)


def read_archive(path: Path) -> dict[str, bytes]:
    """The six batch files' bytes from the archive, by file name; the archive's md5 is checked first."""
    try:
        got = md5sum(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if got != CIFAR_MD5:
        raise DataError(
            f"{path}: md5 {got} does not match the official {CIFAR_ARCHIVE} ({CIFAR_MD5}, "
            f"{CIFAR_ARCHIVE_BYTES} bytes; this file has {path.stat().st_size}); the file is corrupt or not "
            "the official one. Delete it and fetch it again (data.download=true)"
        )
    wanted = {f"{CIFAR_MEMBER_DIR}/{f}": f for f in CIFAR_FILES}
    found: dict[str, bytes] = {}
    try:
        # Streaming mode: one pass over the gzip stream instead of a seek (= re-decompression) per member.
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile():
                    raise DataError(f"{path}: archive member {member.name} is not a regular file")
                handle = tar.extractfile(member)
                assert handle is not None  # regular files always have a handle
                found[wanted[member.name]] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: cannot read the archive ({err})") from None
    missing = [m for m, f in wanted.items() if f not in found]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return found


# ------------------------------------------------------------------------------------------ locations


def cifar10_dir(config: DataConfig) -> Path:
    return data_root(config) / "cifar10"


def _extracted(directory: Path) -> list[Path]:
    return [directory / CIFAR_MEMBER_DIR / f for f in CIFAR_FILES]


def _complete_extraction(directory: Path) -> list[Path] | None:
    """The six extracted batch files when all are there (they are then read instead of the archive)."""
    extracted = _extracted(directory)
    return extracted if all(p.exists() for p in extracted) else None


def cifar10_files(name: str, config: DataConfig) -> list[Path]:
    """What `cifar10` reads (for `raygen datasets`): the extracted files if all there, else the archive;
    a partial extraction with no archive lists the six files, so the missing ones show."""
    directory = cifar10_dir(config)
    if (complete := _complete_extraction(directory)) is not None:
        return complete
    if (python := complete_python_dir(data_root(config), directory)) is not None:
        return [python / f for f in PY_FILES]
    extracted = _extracted(directory)
    if not (directory / CIFAR_ARCHIVE).exists() and any(p.exists() for p in extracted):
        return extracted
    return [directory / CIFAR_ARCHIVE]


def _missing_message(directory: Path) -> str:
    partial = [p.name for p in _extracted(directory) if not p.exists()]
    msg = f"CIFAR-10 not found: {CIFAR_ARCHIVE} in {directory}"
    if len(partial) < len(CIFAR_FILES):
        msg += f" (and {directory / CIFAR_MEMBER_DIR} lacks {', '.join(partial)})"
    msg += f" (nor the python version's {PY_MEMBER_DIR}/ in {directory} or {directory.parent})"
    return msg + (
        f". Put the official binary version there (the archive as is, or extracted so that "
        f"{CIFAR_MEMBER_DIR}/ holds {', '.join(CIFAR_FILES)}), or set data.download=true to fetch "
        f"{CIFAR_ARCHIVE} (md5-checked, 170 MB) from {', '.join(CIFAR_MIRRORS)}."
    )


# ------------------------------------------------------------------------------------------ cifar10


def load_cifar10(name: str, config: DataConfig) -> Dataset:
    """CIFAR-10 images (3, 32, 32), float32 pixel/255 in [0, 1], int64 labels.

    train = the first 45 000 training images (data_batch_1..5 in order), valid = the last 5 000 (a common
    convention; the release defines only train and test), test = test_batch.bin (10 000).
    """
    directory = cifar10_dir(config)
    archive = directory / CIFAR_ARCHIVE
    extracted = _complete_extraction(directory)
    use_extracted = extracted is not None
    python = None if use_extracted else complete_python_dir(data_root(config), directory)
    if python is not None:
        # torchvision's layout: same images and order as the binary version, so the same splits follow
        batches = read_python_batches(python, RECORDS_PER_FILE)
        batches = {b: batches[p] for b, p in zip(CIFAR_FILES, PY_FILES, strict=True)}
        files = [str(python / f) for f in PY_FILES]
        read_from = f"python version ({PY_MEMBER_DIR}, torchvision's layout)"
    elif not use_extracted and not archive.exists():
        if not config.download:
            raise DataError(_missing_message(directory))
        fetch(
            CIFAR_ARCHIVE,
            directory,
            CIFAR_MD5,
            (*config.download_mirrors, *CIFAR_MIRRORS),
            config.download_timeout,
        )

    if python is None and not use_extracted and any(p.exists() for p in _extracted(directory)):
        log.info("cifar10: %s is incomplete; reading %s instead", directory / CIFAR_MEMBER_DIR, archive)
    if python is None:
        if extracted is not None:
            raw = {p.name: read_file_bytes(p) for p in extracted}
            where = {p.name: str(p) for p in extracted}
            files = [str(p) for p in extracted]
        else:
            raw = read_archive(archive)
            where = {f: f"{archive}:{CIFAR_MEMBER_DIR}/{f}" for f in CIFAR_FILES}
            files = [str(archive)]
        batches = {f: parse_batch(raw.pop(f), where[f]) for f in CIFAR_FILES}
        read_from = "extracted files" if use_extracted else "archive"

    train = np.concatenate([batches[f][0] for f in CIFAR_TRAIN_FILES])
    train_labels = np.concatenate([batches[f][1] for f in CIFAR_TRAIN_FILES])
    test, test_labels = batches[CIFAR_TEST_FILE]
    n = len(train) - CIFAR_VALID
    images = {
        "train": to_unit_float(train[:n], "cifar10 train"),
        "valid": to_unit_float(train[n:], "cifar10 valid"),
        "test": to_unit_float(test, "cifar10 test"),
    }
    labels = {"train": train_labels[:n], "valid": train_labels[n:], "test": test_labels}
    return Dataset(
        name=name,
        kind="image",
        shape=CIFAR_SHAPE,
        splits={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in images.items()},
        labels={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in labels.items()},
        meta={
            "source": "CIFAR-10 binary version",
            "directory": str(directory),
            "files": files,
            "read_from": read_from,
            "scale": "pixel/255",
            "split": f"first {n} of data_batch_1-5 train / last {CIFAR_VALID} of them as valid (common "
            f"convention, not part of the release) / {len(test)} test_batch test",
        },
    )
