"""Dataset registry: `load_dataset(name, config)` and `list_datasets()`.

Names are what users type: `digits`, `toy2d:swissroll`, `mnist`, `binarized_mnist`, `cifar10`, `svhn`, `celeba`, `idx:PATH`,
`npz:PATH`, `folder:PATH`, `seqdigits`, `seqmnist`, `seqbinarized_mnist`, `text:embedded`, `text:ptb`,
`text:PATH`. Each name belongs to a `DatasetSource`
(declared in `registry.py`; more can be added with `register`) that says what kind of data it gives, where
it looks for files, and loads it. Importing this package imports neither torch nor numpy; loaders do, when
called.

Modules: `base` (contract + DataConfig), `registry` (names), `transforms` (splits, pixel scaling and
layouts, binarization), `embedded` (digits, toy2d), `idx` (IDX format, mnist, idx:), `binarized_mnist`
(the `.amat` format and the standard binarized MNIST), `cifar` (CIFAR-10 binary; `cifar_python` reads
torchvision's cifar-10-batches-py safely), `svhn`, `celeba`, `npz`, `folder` (PNG/JPEG
directories), `text`, `sequences` (pixel sequences), `download` (explicit, checksummed downloads).
"""

from __future__ import annotations

from raygen.data.base import DataConfig, DataError, Dataset, DatasetInfo
from raygen.data.registry import (
    BINARIZED_MNIST_BINARIZATION,
    DatasetSource,
    data_root,
    dataset_kind,
    list_datasets,
    load_dataset,
    register,
)

__all__ = [
    "BINARIZED_MNIST_BINARIZATION",
    "DataConfig",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "DatasetSource",
    "data_root",
    "dataset_kind",
    "list_datasets",
    "load_dataset",
    "register",
]
