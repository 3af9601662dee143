"""Where dataset names are resolved to loaders.

The built-in sources are declared here as data: their kind and names are known without importing any
loader, so `dataset_kind(name)` (called while a config is validated) costs nothing, and numpy/torch/sklearn
are imported only when a dataset is loaded or listed. `load` and `files` may be callables or lazy
"module:function" strings. Third-party code adds sources with `register(DatasetSource(...))`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raygen.data.base import DataConfig, DataError, Dataset, DatasetInfo

LoadFn = Callable[[str, DataConfig], Dataset]
FilesFn = Callable[[str, DataConfig], list[Path]]


@dataclass(frozen=True)
class DatasetSource:
    """A family of dataset names. `matches(name)` decides ownership; `load` builds the Dataset."""

    prefix: str  # exact name ("digits") or prefix ending in ":" ("toy2d:", "idx:")
    kind: str
    description: str
    load: LoadFn | str  # callable or "module:function"
    names: tuple[str, ...] = ()  # concrete names listed by `raygen datasets` ("idx:PATH" = templated)
    files: FilesFn | str | None = None  # files looked for (None = nothing to look for: embedded)
    # The binarization the source's files already carry (e.g. binarized MNIST's fixed draw); recorded in the
    # run config as data.binarization, and data.binarize cannot re-binarize such data.
    binarization: str | None = None

    def matches(self, name: str) -> bool:
        return name == self.prefix or (self.prefix.endswith(":") and name.startswith(self.prefix))


def _resolve(fn: Callable | str) -> Callable:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


_TOY_NAMES = tuple(f"toy2d:{s}" for s in ("swissroll", "circle", "mog", "spiral"))
# The binarization of the standard binarized MNIST, as recorded in `data.binarization` and Dataset.meta.
BINARIZED_MNIST_BINARIZATION = "larochelle-murray-2011 fixed"

_SOURCES: list[DatasetSource] = [
    DatasetSource(
        "digits",
        "image",
        "scikit-learn 8x8 digits in [0,1], fixed 70/15/15 split",
        "raygen.data.embedded:load_digits",
        names=("digits",),
        files="raygen.data.embedded:digits_files",
    ),
    DatasetSource(
        "toy2d:",
        "points",
        "VW 2-D toy manifolds (Figs 3.8, 3.9, §3.15), drawn from split_seed",
        "raygen.data.embedded:load_toy",
        names=_TOY_NAMES,
    ),
    DatasetSource(
        "mnist",
        "image",
        "MNIST 28x28 in [0,1] (IDX files in mnist/ or torchvision's MNIST/raw/; data.download=true fetches them; data.mnist_split=test-only uses t10k alone)",
        "raygen.data.idx:load_mnist",
        names=("mnist",),
        files="raygen.data.idx:mnist_files",
    ),
    DatasetSource(
        "binarized_mnist",
        "image",
        "the standard binarized MNIST (Larochelle & Murray 2011 fixed binarization; .amat or .amat.gz; "
        "official 50k train / 10k valid / 10k test)",
        "raygen.data.binarized_mnist:load_binarized_mnist",
        names=("binarized_mnist",),
        files="raygen.data.binarized_mnist:binarized_mnist_files",
        binarization=BINARIZED_MNIST_BINARIZATION,
    ),
    DatasetSource(
        "cifar10",
        "image",
        "CIFAR-10 32x32 RGB in [0,1] (binary version: cifar-10-binary.tar.gz or its extracted .bin files; or "
        "torchvision's cifar-10-batches-py, read without running its pickles; "
        "first 45k train / last 5k of train as valid (common convention) / 10k test; data.download=true "
        "fetches it)",
        "raygen.data.cifar:load_cifar10",
        names=("cifar10",),
        files="raygen.data.cifar:cifar10_files",
    ),
    DatasetSource(
        "svhn",
        "image",
        "SVHN cropped digits 32x32 RGB in [0,1] (official train_32x32.mat / test_32x32.mat; last 5k of train "
        "as valid; never downloaded)",
        "raygen.data.svhn:load_svhn",
        names=("svhn",),
        files="raygen.data.svhn:svhn_files",
    ),
    DatasetSource(
        "svhn+extra",
        "image",
        "SVHN as `svhn`, training also on extra_32x32.mat (531k more images)",
        "raygen.data.svhn:load_svhn",
        names=("svhn+extra",),
        files="raygen.data.svhn:svhn_files",
    ),
    DatasetSource(
        "celeba",
        "image",
        "CelebA aligned faces as 64x64 RGB in [0,1] (img_align_celeba/ resized to 64x78 and center-cropped, as "
        "in VW; official list_eval_partition.txt split when present; never downloaded)",
        "raygen.data.celeba:load_celeba",
        names=("celeba",),
        files="raygen.data.celeba:celeba_files",
    ),
    DatasetSource(
        "idx:",
        "image",
        "images from any IDX file (80/10/10 split) or a directory with train and test IDX files; labels "
        "from a *labels-idx1* file beside each images file when there is one",
        "raygen.data.idx:load_idx",
    ),
    DatasetSource(
        "npz:",
        "image",
        "images from a .npz: arrays train/valid/test or x_train/x_test (+ y_*), or one array (arr_0, images, "
        "data, x) split 80/10/10; uint8 0..255 or float [0,1] (0/1 stays binary); channels inferred",
        "raygen.data.npz:load_npz",
    ),
    DatasetSource(
        "folder:",
        "image",
        "a directory of PNG/JPEG images (train/ test/ subdirectories or split 80/10/10; class subdirectories "
        "give labels), cropped/resized by data.center_crop / data.image_size",
        "raygen.data.folder:load_folder",
    ),
    DatasetSource(
        "seqdigits",
        "sequence",
        "8x8 digits as 64-step binary pixel sequences",
        "raygen.data.sequences:load_seqdigits",
        names=("seqdigits",),
        files="raygen.data.embedded:digits_files",
    ),
    DatasetSource(
        "seqmnist",
        "sequence",
        "MNIST as 784-step binary pixel sequences (PF Table 2.1)",
        "raygen.data.sequences:load_seqmnist",
        names=("seqmnist",),
        files="raygen.data.idx:mnist_files",
    ),
    DatasetSource(
        "seqbinarized_mnist",
        "sequence",
        "the standard binarized MNIST as 784-step pixel sequences (PF Table 2.1)",
        "raygen.data.sequences:load_seqbinarized_mnist",
        names=("seqbinarized_mnist",),
        files="raygen.data.binarized_mnist:binarized_mnist_files",
        binarization=BINARIZED_MNIST_BINARIZATION,
    ),
    DatasetSource(
        "text:",
        "sequence",
        "character sequences: text:embedded (Python's own reference text), "
        "text:ptb (PTB char), text:PATH (a text file or a directory of splits)",
        "raygen.data.text:load_text",
        names=("text:embedded", "text:ptb", "text:PATH"),
        files="raygen.data.text:text_files",
    ),
]


def register(source: DatasetSource) -> DatasetSource:
    """Add a source; later registrations are checked first, so they may override a built-in name."""
    _SOURCES.insert(0, source)
    return source


def data_root(config: DataConfig) -> Path:
    if config.root:
        return Path(config.root).expanduser()
    if os.environ.get("RAYGEN_DATA"):
        return Path(os.environ["RAYGEN_DATA"]).expanduser()
    return Path.home() / ".raygen" / "data"


def _sources() -> list[DatasetSource]:
    return _SOURCES


def find_source(name: str) -> DatasetSource:
    for source in _sources():
        if source.matches(name):
            return source
    known = ", ".join(sorted({n for s in _sources() for n in (s.names or (s.prefix + "PATH",))}))
    raise KeyError(f"unknown dataset '{name}' (known: {known})")


def dataset_kind(name: str) -> str:
    """image | points | sequence, without loading anything. Unknown names raise KeyError."""
    return find_source(name).kind


def with_dataset_defaults(name: object, config: DataConfig) -> DataConfig:
    """`config` with what the dataset itself determines filled in (data.binarization), so that the stored run
    config says it. Called while a run config is validated; unknown names are left to the dataset check."""
    try:
        source = find_source(name) if isinstance(name, str) else None
    except KeyError:
        source = None
    if source is None or source.binarization is None or config.binarization is not None:
        return config
    return config.model_copy(update={"binarization": source.binarization})


def load_dataset(name: str, config: DataConfig | None = None) -> Dataset:
    """Load `name`, then apply what is common to every source (binarization, max_train, contract checks)."""
    from raygen.data.transforms import finish

    config = config or DataConfig()
    try:
        source = find_source(name)
    except KeyError as err:
        raise DataError(err.args[0]) from None
    if config.binarization not in (None, source.binarization):
        raise DataError(
            f"data.binarization={config.binarization!r}, but dataset '{name}' carries "
            + (repr(source.binarization) if source.binarization else "no binarization of its own")
            + "; data.binarization records what the dataset is, it is filled in from the dataset: leave it unset"
        )
    if source.binarization is not None and config.binarize not in ("auto", "none"):
        raise DataError(
            f"dataset '{name}' is already binary (its files carry the {source.binarization} binarization); "
            f"data.binarize={config.binarize} would change nothing but the record: leave data.binarize=auto"
        )
    return finish(_resolve(source.load)(name, config), config)


def list_datasets(config: DataConfig | None = None) -> list[DatasetInfo]:
    """Every dataset name with the full paths it is looked for at, and whether they are all there."""
    config = config or DataConfig()
    rows = []
    for source in _sources():
        for name in source.names or (source.prefix + "PATH",):
            if name.endswith(":PATH"):
                rows.append(
                    DatasetInfo(name, source.kind, source.description, ["PATH given in the name"], None)
                )
                continue
            files = _resolve(source.files)(name, config) if source.files else []
            missing = [str(f) for f in files if not f.exists()]
            rows.append(
                DatasetInfo(
                    name=name,
                    kind=source.kind,
                    description=source.description,
                    locations=[str(f) for f in files] or ["embedded"],
                    present=not missing,
                    missing=missing,
                )
            )
    return rows
