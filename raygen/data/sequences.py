"""Images read pixel by pixel as binary token sequences: `seqdigits` (64 steps), `seqmnist` and
`seqbinarized_mnist` (784 steps).

PF's sequential MNIST (Table 2.1) generates the pixels of a binarized image one at a time in raster
(row-major) order; the same view of the embedded 8x8 digits gives a laptop-sized version. Tokens are 0/1
with `vocab = ["0", "1"]` and `meta["image_shape"]` lets samples be drawn as pictures.

`seqbinarized_mnist` is the thesis' "standard binarized MNIST": the fixed Larochelle & Murray (2011) draw
read from its files (`binarized_mnist`), so its numbers compare with Table 2.1's; its `meta["binarization"]`
(and the run's `data.binarization`) say so, and `data.binarize` must stay `auto`.

For `seqdigits` and `seqmnist` binarization follows `data.binarize`; `auto` means threshold at
`data.threshold` here (tokens must be 0/1). `fixed` gives one seeded random draw of raygen's own (not the
published draw: use `seqbinarized_mnist` for that). `dynamic` is refused: splits are fixed int64 token
tensors, and a per-batch redraw would need real-valued training data; use `fixed` for a stochastic
binarization.
"""

from __future__ import annotations

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.registry import load_dataset
from raygen.data.transforms import effective_binarize

VOCAB = ["0", "1"]


def _pixel_sequences(name: str, image_name: str, config: DataConfig, prebinarized: bool = False) -> Dataset:
    # Pre-binarized files are read as they are (load_dataset has refused any other data.binarize).
    scheme = "none" if prebinarized else effective_binarize(config, "sequence")
    if not prebinarized and scheme not in ("threshold", "fixed"):
        raise DataError(
            f"dataset '{name}' needs binary pixels: data.binarize must be auto (= threshold), threshold or "
            f"fixed, not {scheme} (dynamic binarization needs real-valued training data; use fixed)"
        )
    images = load_dataset(image_name, config.model_copy(update={"binarize": scheme, "max_train": None}))
    if not images.binary:
        raise DataError(f"dataset '{name}': the images of '{image_name}' are not binary")
    splits = {k: v.reshape(len(v), -1).round().long() for k, v in images.splits.items()}  # (N, C*H*W)
    return Dataset(
        name=name,
        kind="sequence",
        shape=(images.dim,),
        splits=splits,
        binary=True,
        vocab=list(VOCAB),
        labels=images.labels,
        meta={
            **images.meta,
            "image_shape": tuple(images.shape),
            "order": "raster (row-major) pixels",
            "images": image_name,
        },
    )


def load_seqdigits(name: str, config: DataConfig) -> Dataset:
    return _pixel_sequences(name, "digits", config)


def load_seqmnist(name: str, config: DataConfig) -> Dataset:
    return _pixel_sequences(name, "mnist", config)


def load_seqbinarized_mnist(name: str, config: DataConfig) -> Dataset:
    return _pixel_sequences(name, "binarized_mnist", config, prebinarized=True)
