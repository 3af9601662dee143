"""Dataset registry: `load_dataset(name, config)` and `list_datasets()`.

Names are what users type: `digits`, `toy2d:swissroll`, `mnist`, `idx:PATH`, `npz:PATH`, ... Each loader
module registers a `DatasetSource`; a source answers whether it can load a name, what kind of data it
gives, where it looks for files, and loads it.
"""

from __future__ import annotations

from raygen.data.base import DataConfig, DataError, Dataset, DatasetInfo
from raygen.data.registry import dataset_kind, list_datasets, load_dataset

__all__ = [
    "DataConfig",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "dataset_kind",
    "list_datasets",
    "load_dataset",
]
