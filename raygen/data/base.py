"""The dataset contract every loader returns, and the data section of the run config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from pydantic import Field

from raygen.config import Section


class DataError(RuntimeError):
    """Missing, corrupt or unusable data; the message names the file and what to do."""


class DataConfig(Section):
    root: str | None = Field(
        None, description="directory searched for data files (default: $RAYGEN_DATA, then ~/.raygen/data)"
    )
    download: bool = Field(False, description="download missing files (checksum verified); never implicit")
    binarize: Literal["none", "threshold", "fixed", "dynamic"] = Field(
        "none",
        description="binarization scheme for image data (DL book §20.14: the three give very different "
        "likelihoods, so the scheme is stored with every result)",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="threshold for binarize=threshold")
    seq_len: int = Field(500, ge=2, description="non-overlapping training sequence length (PF PTB: 500)")
    max_train: int | None = Field(None, ge=1, description="cap on training examples (quick runs)")
    toy_samples: int = Field(10_000, ge=10, description="points drawn per split for toy2d datasets")
    toy_noise: float = Field(0.05, ge=0, description="std of the Gaussian noise around toy2d manifolds")
    split_seed: int = Field(1234, description="seed of the fixed train/valid/test split")


@dataclass(frozen=True)
class Dataset:
    """In-memory splits plus what algorithms need to know about them.

    `splits[name]` is a tensor of shape (N, *shape): float32 in [0, 1] for images, float32 for points,
    int64 token ids for sequences.
    """

    name: str
    kind: Literal["image", "points", "sequence"]
    shape: tuple[int, ...]
    splits: dict[str, torch.Tensor]
    binary: bool = False
    vocab: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    batch_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

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
    """One row of `raygen datasets`."""

    name: str
    kind: str
    description: str
    locations: list[str]
    present: bool
