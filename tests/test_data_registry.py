"""Names, kinds, listing with presence, the embedded datasets, and the npz loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raygen.data import DataConfig, DataError, dataset_kind, list_datasets, load_dataset
from raygen.data.embedded import DIGITS_FRACTIONS, TOY_SHAPES
from raygen.data.transforms import split_indices

KINDS = {
    "digits": "image",
    "mnist": "image",
    "idx:/x.gz": "image",
    "npz:/x.npz": "image",
    "folder:/x": "image",
    "binarized_mnist": "image",
    "seqbinarized_mnist": "sequence",
    "toy2d:swissroll": "points",
    "seqdigits": "sequence",
    "seqmnist": "sequence",
    "text:embedded": "sequence",
    "text:ptb": "sequence",
    "text:/some/file.txt": "sequence",
}


def test_kind_of_every_name_without_heavy_imports():
    code = (
        "import sys; from raygen.data import dataset_kind; "
        f"print([dataset_kind(n) for n in {list(KINDS)!r}]); "
        "print(sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    kinds, heavy = out.strip().splitlines()
    assert kinds == str(list(KINDS.values()))
    assert heavy == "[]"


def test_unknown_names():
    with pytest.raises(KeyError, match="unknown dataset 'cifar'"):
        dataset_kind("cifar")
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist"):
        load_dataset("cifar")


def test_list_datasets_reports_paths_and_presence(tmp_path):
    rows = {r.name: r for r in list_datasets(DataConfig(root=str(tmp_path)))}
    listed_toys = {n for n in rows if n.startswith("toy2d:")}
    assert listed_toys == {f"toy2d:{s}" for s in TOY_SHAPES}
    for name in (
        "digits",
        "mnist",
        "seqdigits",
        "seqmnist",
        "text:embedded",
        "text:ptb",
        "idx:PATH",
        "npz:PATH",
        "folder:PATH",
        "binarized_mnist",
        "seqbinarized_mnist",
        "text:PATH",
    ):
        assert name in rows
    assert rows["binarized_mnist"].missing == [
        str(tmp_path / "binarized_mnist" / f"binarized_mnist_{s}.amat.gz") for s in ("train", "valid", "test")
    ]
    mnist = rows["mnist"]
    assert mnist.kind == "image" and mnist.present is False
    assert mnist.locations == [
        str(tmp_path / "mnist" / f) for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")
    ]
    assert mnist.missing == mnist.locations
    ptb = rows["text:ptb"]
    assert ptb.locations == [str(tmp_path / "ptb" / f"ptb.char.{s}.txt") for s in ("train", "valid", "test")]
    assert ptb.present is False
    assert rows["idx:PATH"].present is None
    for name in ("digits", "text:embedded"):  # shipped with sklearn / CPython: real files, present
        assert rows[name].present is True and Path(rows[name].locations[0]).is_file()
    assert rows["toy2d:circle"].locations == ["embedded"] and rows["toy2d:circle"].present

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(b"")  # the decompressed name counts too
    rows = {r.name: r for r in list_datasets(DataConfig(root=str(tmp_path), mnist_split="test-only"))}
    assert rows["mnist"].present is True
    assert rows["mnist"].locations == [str(tmp_path / "mnist" / "t10k-images-idx3-ubyte")]
    (tmp_path / "ptb").mkdir()
    for s in ("valid", "test"):
        (tmp_path / "ptb" / f"ptb.char.{s}.txt").write_text("a _ b\n")
    rows = {r.name: r for r in list_datasets(DataConfig(root=str(tmp_path), ptb_split="valid-as-train"))}
    assert rows["text:ptb"].present is True


# ------------------------------------------------------------------------------------------ embedded


def test_digits_shapes_ranges_and_fixed_split():
    from sklearn.datasets import load_digits

    reference = load_digits().images / 16.0
    a = load_dataset("digits")
    b = load_dataset("digits")
    c = load_dataset("digits", DataConfig(split_seed=7))
    assert a.kind == "image" and a.shape == (1, 8, 8) and a.image_shape == (1, 8, 8)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 1258, "valid": 270, "test": 269}
    idx = split_indices(len(reference), DIGITS_FRACTIONS, DataConfig().split_seed)
    assert set(idx["train"]).isdisjoint(idx["valid"]) and set(idx["valid"]).isdisjoint(idx["test"])
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(reference)))
    for split, x in a.splits.items():
        assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
        np.testing.assert_allclose(x[:, 0].numpy(), reference[idx[split]], atol=1e-7)
        assert x.equal(b.splits[split])
    assert not a.splits["train"].equal(c.splits["train"])


@pytest.mark.parametrize("shape", TOY_SHAPES)
def test_toy2d(shape):
    cfg = DataConfig(toy_samples=500)
    a, b = load_dataset(f"toy2d:{shape}", cfg), load_dataset(f"toy2d:{shape}", cfg)
    other = load_dataset(f"toy2d:{shape}", DataConfig(toy_samples=500, split_seed=5))
    assert a.kind == "points" and a.shape == (2,)
    for split, x in a.splits.items():
        assert x.shape == (500, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
        assert float(x.abs().max()) < 1.5
        assert x.equal(b.splits[split])
    rows = {k: {tuple(r) for r in v.tolist()} for k, v in a.splits.items()}  # independent draws: disjoint
    assert rows["train"].isdisjoint(rows["valid"]) and rows["train"].isdisjoint(rows["test"])
    assert not a.splits["train"].equal(other.splits["train"])


def test_toy2d_unknown_shape():
    with pytest.raises(DataError, match="unknown toy2d shape 'blob'"):
        load_dataset("toy2d:blob")


# ------------------------------------------------------------------------------------------ npz


def test_npz_named_splits_uint8(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        s: rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
        for s, n in (("train", 9), ("valid", 3), ("test", 4))
    }
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.shape == (1, 6, 6)
    for s, arr in arrays.items():
        np.testing.assert_allclose(ds.splits[s][:, 0].numpy(), arr / 255.0, atol=1e-7)


def test_npz_x_split_with_labels_and_layouts(tmp_path):
    x = np.random.default_rng(1).random((20, 5, 5, 3)).astype(np.float32)  # channels last
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", DataConfig(split_seed=2))
    assert ds.shape == (3, 5, 5) and [len(ds.splits[s]) for s in ("train", "valid", "test")] == [16, 2, 2]
    for s in ds.splits:
        np.testing.assert_array_equal(ds.splits[s].numpy(), x[ds.labels[s].numpy()].transpose(0, 3, 1, 2))
    np.savez(tmp_path / "flat.npz", x=np.zeros((10, 16), np.uint8))
    assert load_dataset(f"npz:{tmp_path / 'flat.npz'}").shape == (1, 4, 4)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.full((10, 3, 3), 2.0)}, r"\[0, 1\]"),
        ({"x": np.full((10, 3, 3), 300, np.int32)}, r"integer pixels range over \[300, 300\]"),
        ({"x": np.zeros((10, 3, 3), np.complex64)}, "dtype complex64 is not supported"),
        ({"x": np.zeros((10, 7), np.uint8)}, "not square"),
        ({"images": np.zeros((10, 3, 3), np.uint8), "data": np.zeros((10, 3, 3))}, "several candidate image"),
        (
            {"train": np.zeros((4, 3, 3)), "valid": np.zeros((2, 3, 3)), "test": np.zeros((2, 4, 4))},
            "different example shapes",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_corrupt_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="not a readable .npz") as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value)
