"""The standard binarized MNIST (`binarized_mnist`) and its `.amat` text format.

The data set: MNIST binarized once by Larochelle & Murray (2011, "The Neural Autoregressive Distribution
Estimator"), each pixel drawn once as Bernoulli(intensity) and the draw published; 50 000 train / 10 000
valid / 10 000 test images of 28×28 binary pixels. Likelihoods on it are comparable only with numbers on the
same fixed draw (threshold, another fixed draw or dynamic binarization give different numbers), which is why
this is a dataset of its own, not `mnist` with `data.binarize`: its `meta["binarization"]` and the run's
`data.binarization` say `"larochelle-murray-2011 fixed"` (`raygen.data.BINARIZED_MNIST_BINARIZATION`), so analysis can tell a run on
it from a run on a thresholded or re-drawn MNIST. PF Table 2.1 ("standard binarized MNIST") uses it pixel by
pixel: `seqbinarized_mnist` (see `sequences`).

Files, looked for in `<data root>/binarized_mnist/`: `binarized_mnist_{train,valid,test}.amat`, plain or
gzipped (`.amat.gz` is preferred when both exist; gzip is detected by content). `.amat` is text: one image
a line, its 784 pixels in raster order as whitespace-separated 0/1 values; blank lines are skipped.

Checks: the md5 of each file is compared with the reference copy the project checked (gzipped and
uncompressed); a copy whose bytes differ (other spacing or line ends, as the file published first may have)
is still accepted when its *values* are the standard ones: the md5 of the parsed pixels (packed 8 to a byte,
`VALUES_MD5`) is checked for every file, whatever its bytes. Every problem raises `DataError` naming the
file, where it was looked for and what is wrong.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset, decompress, read_file_bytes
from raygen.data.registry import BINARIZED_MNIST_BINARIZATION, data_root

log = logging.getLogger(__name__)

BINARIZATION = BINARIZED_MNIST_BINARIZATION
DIRECTORY = "binarized_mnist"
WIDTH = 784
SHAPE = (1, 28, 28)
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
# md5 of the reference copy's files (gzipped as distributed with the project's data, and uncompressed).
FILE_MD5 = {
    "binarized_mnist_train.amat.gz": "bcef6008b69cb0c96687eaf71bb09c59",
    "binarized_mnist_valid.amat.gz": "f98251b05f4b98b052354dc71eebb103",
    "binarized_mnist_test.amat.gz": "cbfdb7a5a94c0fbd18f04ba4b6cbcac3",
    "binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",
    "binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
    "binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8",
}
# md5 of the pixel values, independent of the text's bytes: hashlib.md5(np.packbits(values)).hexdigest()
# with `values` the (N, 784) uint8 0/1 array in file order.
VALUES_MD5 = {
    "train": "309a57a5f57edf7dfa1a0d2118daedf9",
    "valid": "98627b12c08410820c516e41a0e07017",
    "test": "50aa7f0ccbdaba86f6a8aeabd1fecfed",
}
ORIGINAL_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


# ------------------------------------------------------------------------------------------ .amat format


def _token_error(text: bytes, where: str, width: int) -> DataError:
    """The exact problem with a file the fast path refused: first bad token, or first line of the wrong length."""
    lineno = 0
    for lineno, line in enumerate(text.split(b"\n"), 1):
        tokens = line.split()
        for column, token in enumerate(tokens, 1):
            if token not in (b"0", b"1"):
                shown = token[:20].decode("latin-1")
                return DataError(
                    f"{where}: line {lineno}, value {column} is '{shown}'; a binarized .amat file holds only "
                    "0 and 1 (the file is corrupt or not binarized)"
                )
        if tokens and len(tokens) != width:
            return DataError(f"{where}: line {lineno} holds {len(tokens)} values, expected {width} (one image a line)")
    # every token is fine, so the problem is a separator other than space, tab, CR or LF
    at = int(np.flatnonzero(_BYTE_KIND[np.frombuffer(text, dtype=np.uint8)] == 0)[0])
    line = text.count(b"\n", 0, at) + 1
    return DataError(
        f"{where}: line {line} holds the byte 0x{text[at]:02x} between values; "
        ".amat values are separated by spaces or tabs"
    )


def parse_amat(text: bytes, where: str, width: int = WIDTH) -> np.ndarray:
    """`.amat` text (already decompressed) -> uint8 array (N, width) of 0/1; `where` names the file.

    Vectorised over the bytes: every byte must be '0', '1', a space, a tab, CR or LF, no two digits may touch
    (a token such as '10' or '2' is not a binary value), and every non-blank line must hold exactly `width`
    digits. Anything else is reported by a slower per-token pass that names the line and the value.
    """
    b = np.frombuffer(text, dtype=np.uint8)
    kind = _BYTE_KIND[b]  # one pass over the bytes: 0 other, 1 '0', 2 '1', 3 blank, 4 newline
    digit = (kind == 1) | (kind == 2)
    if not kind.all() or (digit[1:] & digit[:-1]).any():
        raise _token_error(text, where, width)
    if not digit.any():
        what = "is empty (0 bytes)" if b.size == 0 else "holds only whitespace"
        raise DataError(f"{where}: {what}; expected one image a line, {width} whitespace-separated 0/1 values")
    starts = np.concatenate(([0], np.flatnonzero(kind == 4) + 1))
    per_line = np.add.reduceat(digit, starts[starts < b.size], dtype=np.int64)
    bad = np.flatnonzero((per_line != 0) & (per_line != width))
    if bad.size:
        raise DataError(
            f"{where}: line {int(bad[0]) + 1} holds {int(per_line[bad[0]])} values, expected {width} "
            f"(one image a line; {bad.size} bad line(s) in all)"
        )
    return (kind[digit] == 2).astype(np.uint8).reshape(-1, width)


_BYTE_KIND = np.zeros(256, dtype=np.uint8)
_BYTE_KIND[ord("0")], _BYTE_KIND[ord("1")] = 1, 2
_BYTE_KIND[[ord(" "), ord("\t"), ord("\r")]] = 3
_BYTE_KIND[ord("\n")] = 4


def read_amat(path: str | Path, width: int = WIDTH) -> np.ndarray:
    """Read a plain or gzipped `.amat` file of 0/1 values -> uint8 (N, width)."""
    path = Path(path)
    return parse_amat(decompress(read_file_bytes(path), path), str(path), width)


def values_md5(values: np.ndarray) -> str:
    return hashlib.md5(np.packbits(values.astype(np.uint8), axis=None).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------ dataset


def directory(config: DataConfig) -> Path:
    return data_root(config) / DIRECTORY


def _existing(folder: Path, split: str) -> Path | None:
    """The gzipped file if present, else the plain one, else None."""
    for candidate in (folder / f"binarized_mnist_{split}.amat.gz", folder / f"binarized_mnist_{split}.amat"):
        if candidate.exists():
            return candidate
    return None


def binarized_mnist_files(name: str, config: DataConfig) -> list[Path]:
    """The three split files (for `raygen datasets`): the existing variant, else the .amat.gz name."""
    folder = directory(config)
    return [_existing(folder, s) or folder / f"binarized_mnist_{s}.amat.gz" for s in SPLIT_SIZES]


def _read_split(path: Path, split: str) -> tuple[np.ndarray, str]:
    raw = read_file_bytes(path)
    file_ok = FILE_MD5.get(path.name) == hashlib.md5(raw).hexdigest()
    values = parse_amat(decompress(raw, path), str(path))
    want_n = SPLIT_SIZES[split]
    if len(values) != want_n:
        raise DataError(
            f"{path}: holds {len(values)} images, the standard binarized MNIST {split} split has {want_n} "
            "(the file is truncated or not the standard one)"
        )
    got, want = values_md5(values), VALUES_MD5[split]
    if got != want:
        raise DataError(
            f"{path}: its pixel values differ from the standard binarized MNIST {split} split (values md5 "
            f"{got}, expected {want}); the file is corrupt or another binarization. Replace it with the "
            f"standard file (from {ORIGINAL_URL})"
        )
    return values, ("file md5 of the reference copy" if file_ok else "values md5 (file bytes differ from the reference copy)")


def load_binarized_mnist(name: str, config: DataConfig) -> Dataset:
    """The 50 000 / 10 000 / 10 000 official splits as float32 0/1 images (1, 28, 28), labels not included
    (the `.amat` files carry none)."""
    folder = directory(config)
    paths = {s: _existing(folder, s) for s in SPLIT_SIZES}
    missing = [f"binarized_mnist_{s}.amat" for s, p in paths.items() if p is None]
    if missing:
        msg = (
            f"binarized MNIST file(s) not found: {', '.join(missing)} (or .amat.gz) in {folder}. Put the standard "
            f"files there, plain or gzipped (the originals are at {ORIGINAL_URL}), or point data.root / --root / "
            f"$RAYGEN_DATA at the directory that holds {DIRECTORY}/"
        )
        if config.download:
            msg += "; data.download does not fetch this data set (its original files carry no published checksum)"
        raise DataError(msg + ".")
    splits, checks = {}, {}
    for split, path in paths.items():
        assert path is not None
        values, checks[split] = _read_split(path, split)
        splits[split] = torch.from_numpy(values.astype(np.float32).reshape(len(values), *SHAPE))
        log.info("binarized_mnist %s: %s verified by %s", split, path, checks[split])
    return Dataset(
        name=name,
        kind="image",
        shape=SHAPE,
        splits=splits,
        binary=True,
        meta={
            "source": "binarized MNIST .amat (Larochelle & Murray 2011)",
            "binarization": BINARIZATION,
            "split": "official: 50000 train / 10000 valid / 10000 test",
            "directory": str(folder),
            "files": [str(p) for p in paths.values()],
            "verified": checks,
        },
    )
