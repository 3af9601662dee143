"""The dataset contract every loader returns, and the data section of the run config.

This module imports no torch at run time (tensors appear only in annotations), so `import raygen.data`
and `raygen.config` stay cheap; torch is imported by the loaders when a dataset is actually loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from raygen.config import Section

if TYPE_CHECKING:
    import torch


class DataError(RuntimeError):
    """Missing, corrupt or unusable data; the message names the file and what to do."""


def path_from_name(name: str, what: str, example: str, exists: Callable[[Path], bool]) -> Path:
    """The PATH of a `kind:PATH` dataset name, refused when empty or when `exists` says it is not there."""
    kind, _, raw = name.partition(":")
    if not raw:
        raise DataError(f"{kind}: needs a path, e.g. {kind}:{example}")
    path = Path(raw).expanduser()
    if not exists(path):
        raise DataError(f"{path}: no such {what} (from dataset name '{name}')")
    return path


def read_file_bytes(path: Path) -> bytes:
    """A data file's bytes; an unreadable file is a DataError naming it."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def decompress(raw: bytes, path: Path) -> bytes:
    """gzip data (detected by its magic bytes, not the name) decompressed; other bytes returned as they are."""
    import gzip
    import zlib

    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise DataError(f"{path}: truncated gzip file (the download was probably cut short)") from None
        except (OSError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip data ({err})") from None
    if path.suffix == ".gz":
        raise DataError(f"{path}: named .gz but is not a gzip file (first bytes {raw[:4].hex()})")
    return raw


class DataConfig(Section):
    root: str | None = Field(
        None, description="directory searched for data files (default: $RAYGEN_DATA, then ~/.raygen/data)"
    )
    download: bool = Field(
        False, description="download missing files from public mirrors (md5 verified); never implicit"
    )
    download_mirrors: tuple[str, ...] = Field(
        (), description="extra base URLs tried before the built-in mirrors (e.g. a lab-local copy)"
    )
    download_timeout: float = Field(30.0, gt=0, description="seconds before a stalled download is abandoned")
    binarize: Literal["auto", "none", "threshold", "fixed", "dynamic"] = Field(
        "auto",
        description="binarization scheme (DL book §20.14: threshold, one fixed random draw, or a fresh draw "
        "per batch give very different likelihoods, so the scheme is stored with every result). "
        "auto = none for image datasets, threshold for pixel-sequence datasets (seqdigits, seqmnist)",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="pixel > threshold is 1 (binarize=threshold)")
    binarization: str | None = Field(
        None,
        description="the binarization the dataset's own files carry, recorded with the run so analysis can "
        "check it: filled in from the dataset (binarized_mnist, seqbinarized_mnist: "
        "'larochelle-murray-2011 fixed'), None for data that come unbinarized; not set by hand",
    )
    mnist_split: Literal["official", "test-only"] = Field(
        "official",
        description="official: 50k train / last 10k of train as valid / 10k t10k test; test-only: only the "
        "t10k file, split 8000/1000/1000 by a fixed permutation (not comparable with published numbers)",
    )
    ptb_split: Literal["official", "valid-as-train"] = Field(
        "official",
        description="official: ptb.char.{train,valid,test}.txt; valid-as-train: no train file needed, the "
        "first 95% of ptb.char.valid.txt trains, its last 5% validates, ptb.char.test.txt tests",
    )
    seq_len: int = Field(
        500, ge=2, description="length of the non-overlapping sequences cut from a text (PF PTB char: 500)"
    )
    max_train: int | None = Field(None, ge=1, description="cap on training examples (quick runs)")
    channels: Literal["auto", "first", "last"] = Field(
        "auto",
        description="channel axis of 4-D image arrays (npz:, idx:): auto = the one of axis 1 and axis 3 whose "
        "size is 1-4 (refused when both or neither are); first = (N, C, H, W); last = (N, H, W, C)",
    )
    color: Literal["auto", "gray", "rgb"] = Field(
        "auto",
        description="folder: images as one grey channel or three RGB channels (alpha dropped); auto = gray "
        "when every image is grey (R = G = B), else rgb",
    )
    center_crop: int | None = Field(
        None, ge=1, description="folder: first cut the central center_crop x center_crop square of each image"
    )
    image_size: int | None = Field(
        None,
        ge=1,
        description="folder: then resize the shorter side to image_size (Lanczos) and cut the central "
        "image_size x image_size square; None = keep the size (all images must then share one size)",
    )
    toy_samples: int = Field(10_000, ge=10, description="points drawn per split for toy2d datasets")
    toy_noise: float = Field(0.05, ge=0, description="std of the Gaussian noise around toy2d manifolds")
    split_seed: int = Field(
        1234, description="seed of the fixed train/valid/test split and of the binarize=fixed draw"
    )


@dataclass(frozen=True)
class Dataset:
    """In-memory splits plus what algorithms need to know about them.

    `splits[name]` is a tensor of shape (N, *shape): float32 in [0, 1] for images, float32 for points,
    int64 token ids in [0, len(vocab)) for sequences. With `binarize=dynamic` the image train split holds
    the pixel probabilities and `prepare_batch` draws a fresh binary batch; valid/test hold one fixed draw.
    `labels` (optional, int64 (N,)) follow the same order as `splits` when the source has class labels.
    `meta` describes the data (source files, split rule, scale, `binarize`, and `binarization` for files that
    come binarized, e.g. binarized MNIST's "larochelle-murray-2011 fixed").
    """

    name: str
    kind: Literal["image", "points", "sequence"]
    shape: tuple[int, ...]
    splits: dict[str, torch.Tensor]
    binary: bool = False
    vocab: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    batch_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    labels: dict[str, torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) when examples can be shown as pictures (images and sequential images)."""
        return self.meta.get("image_shape") if self.kind != "image" else tuple(self.shape)  # type: ignore

    def prepare_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-batch transform (dynamic binarization); identity for most datasets."""
        return self.batch_transform(x, generator) if self.batch_transform else x


@dataclass(frozen=True)
class DatasetInfo:
    """One row of `raygen datasets`.

    `locations` are the full paths looked for (or "embedded"/a description); `present` is None for
    templated names such as `idx:PATH`, where presence depends on the path the user gives.
    """

    name: str
    kind: str
    description: str
    locations: list[str]
    present: bool | None
    missing: list[str] = field(default_factory=list)
