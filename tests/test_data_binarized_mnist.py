"""The `.amat` reader, the `binarized_mnist` / `seqbinarized_mnist` datasets, and the recorded binarization."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from raygen.config import build_config
from raygen.data import DataConfig, DataError, list_datasets, load_dataset
from raygen.data import binarized_mnist as bm
from raygen.data.binarized_mnist import parse_amat, read_amat
from tests.shared_data import SHARED_DATA

SHARED = SHARED_DATA / "binarized_mnist"
LM = "larochelle-murray-2011 fixed"  # the value analysis filters on (spelled out, not imported)


def amat_text(values: np.ndarray, sep: str = " ", end: str = "\n") -> bytes:
    """`.amat` text written independently of the reader: one line per row, values joined by `sep`."""
    return "".join(sep.join(str(int(v)) for v in row) + end for row in values).encode()


def random_bits(n: int, width: int = 784, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, width)) < 0.3).astype(np.uint8)


# ------------------------------------------------------------------------------------------ .amat reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_amat_plain_and_gzip(tmp_path, gz):
    values = random_bits(5)
    text = amat_text(values)
    path = tmp_path / ("x.amat.gz" if gz else "x.amat")
    path.write_bytes(gzip.compress(text) if gz else text)
    out = read_amat(path)
    assert out.dtype == np.uint8 and out.shape == (5, 784)
    np.testing.assert_array_equal(out, values)


def test_parse_amat_tolerates_tabs_crlf_trailing_space_and_blank_lines():
    values = random_bits(3, width=6, seed=1)
    text = amat_text(values[:2], sep="\t", end=" \r\n") + b"\n  \n" + amat_text(values[2:], sep="  ")
    np.testing.assert_array_equal(parse_amat(text, "t", width=6), values)
    # no final newline
    np.testing.assert_array_equal(parse_amat(amat_text(values, end="\n")[:-1], "t", width=6), values)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"0 1 0\n1 1 0 1\n", "line 2 holds 4 values, expected 3"),
        (b"0 1 0\n1 1\n", "line 2 holds 2 values, expected 3"),
        (b"0 1 0\n1 2 0\n", "line 2, value 2 is '2'"),
        (b"0 1 0\n0 10 1\n", "line 2, value 2 is '10'"),
        (b"0.5 1 0\n", "line 1, value 1 is '0.5'"),
        (b"0 1 -1\n", "line 1, value 3 is '-1'"),
        (b"0,1,0\n", "line 1, value 1 is '0,1,0'"),
        (b"0 1 0\n1\x0c1 0\n", "line 2 holds the byte 0x0c between values"),
        (b"", "is empty"),
        (b" \n\n", "holds only whitespace"),
    ],
)
def test_parse_amat_errors_name_the_file_and_problem(text, match):
    with pytest.raises(DataError, match=match) as err:
        parse_amat(text, "/data/x.amat", width=3)
    assert str(err.value).startswith("/data/x.amat: ")


def test_read_amat_corrupt_gzip_and_missing(tmp_path):
    path = tmp_path / "x.amat.gz"
    path.write_bytes(gzip.compress(amat_text(random_bits(2)))[:30])
    with pytest.raises(DataError, match="truncated gzip") as err:
        read_amat(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="cannot read"):
        read_amat(tmp_path / "absent.amat")


# ------------------------------------------------------------------------------------------ the dataset


@pytest.fixture
def tiny_set(tmp_path, monkeypatch):
    """Small stand-in files in the official layout, with the module's sizes and value checksums patched."""
    sizes = {"train": 6, "valid": 3, "test": 4}
    values = {s: random_bits(n, seed=i) for i, (s, n) in enumerate(sizes.items())}
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    (folder / "binarized_mnist_train.amat.gz").write_bytes(gzip.compress(amat_text(values["train"])))
    (folder / "binarized_mnist_valid.amat").write_bytes(amat_text(values["valid"]))
    (folder / "binarized_mnist_test.amat").write_bytes(amat_text(values["test"], end=" \r\n"))
    checksums = {s: hashlib.md5(np.packbits(v).tobytes()).hexdigest() for s, v in values.items()}
    monkeypatch.setattr(bm, "SPLIT_SIZES", sizes)
    monkeypatch.setattr(bm, "VALUES_MD5", checksums)
    return tmp_path, values


def test_loads_three_official_splits_as_binary_images(tiny_set):
    root, values = tiny_set
    ds = load_dataset("binarized_mnist", DataConfig(root=str(root)))
    assert ds.kind == "image" and ds.shape == (1, 28, 28) and ds.binary
    for split, v in values.items():
        np.testing.assert_array_equal(ds.splits[split].numpy().reshape(len(v), 784), v.astype(np.float32))
    assert ds.meta["binarization"] == LM and ds.meta["binarize"] == "none"
    assert ds.meta["verified"]["valid"].startswith("values md5")  # not the reference copy's bytes


def test_found_through_raygen_data_env(tiny_set, monkeypatch):
    root, _ = tiny_set
    monkeypatch.setenv("RAYGEN_DATA", str(root))
    assert len(load_dataset("binarized_mnist").splits["test"]) == 4
    row = {r.name: r for r in list_datasets()}["binarized_mnist"]
    assert row.present and row.locations[0] == str(root / "binarized_mnist" / "binarized_mnist_train.amat.gz")


def test_sequential_form_is_the_same_pixels_in_raster_order(tiny_set):
    root, values = tiny_set
    seq = load_dataset("seqbinarized_mnist", DataConfig(root=str(root)))
    assert seq.kind == "sequence" and seq.shape == (784,) and seq.vocab == ["0", "1"]
    assert seq.image_shape == (1, 28, 28) and seq.meta["binarization"] == LM
    for split, v in values.items():
        np.testing.assert_array_equal(seq.splits[split].numpy(), v.astype(np.int64))


def test_wrong_values_or_count_are_refused(tiny_set, monkeypatch):
    root, values = tiny_set
    test_file = root / "binarized_mnist" / "binarized_mnist_test.amat"
    flipped = values["test"].copy()
    flipped[0, 0] ^= 1
    test_file.write_bytes(amat_text(flipped))
    with pytest.raises(DataError, match="pixel values differ from the standard binarized MNIST test") as err:
        load_dataset("binarized_mnist", DataConfig(root=str(root)))
    assert str(test_file) in str(err.value)
    test_file.write_bytes(amat_text(values["test"][:3]))
    with pytest.raises(DataError, match="holds 3 images, the standard binarized MNIST test split has 4"):
        load_dataset("binarized_mnist", DataConfig(root=str(root)))


def test_missing_file_names_it_and_the_directory(tiny_set):
    root, _ = tiny_set
    (root / "binarized_mnist" / "binarized_mnist_valid.amat").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", DataConfig(root=str(root)))
    msg = str(err.value)
    assert "binarized_mnist_valid.amat" in msg and str(root / "binarized_mnist") in msg
    assert "binarized_mnist_train" not in msg and "data.root" in msg


def test_rebinarizing_is_refused_and_binarization_is_not_set_by_hand(tiny_set):
    root, _ = tiny_set
    for scheme in ("threshold", "fixed", "dynamic"):
        with pytest.raises(DataError, match=f"already binary.*data.binarize={scheme}"):
            load_dataset("binarized_mnist", DataConfig(root=str(root), binarize=scheme))
    with pytest.raises(DataError, match="data.binarization='threshold'.*leave it unset"):
        load_dataset("binarized_mnist", DataConfig(root=str(root), binarization="threshold"))
    with pytest.raises(DataError, match="'digits' carries no binarization of its own"):
        load_dataset("digits", DataConfig(binarization=LM))


def test_run_config_records_the_binarization():
    """What analysis reads from the stored config: data.binarization for these datasets, None otherwise."""
    for dataset, algorithm in (("binarized_mnist", "walkback"), ("seqbinarized_mnist", "professor")):
        config = build_config(algorithm=algorithm, dataset=dataset)
        assert config.data.binarization == LM and config.to_dict()["data"]["binarization"] == LM
    plain = build_config(algorithm="walkback", dataset="mnist", overrides=["data.binarize=fixed"])
    assert plain.data.binarization is None and plain.data.binarize == "fixed"


# ------------------------------------------------------------------------------------------ real files


@pytest.fixture(scope="module")
def shared_files() -> Path:
    if not (SHARED / "binarized_mnist_test.amat.gz").exists():
        pytest.skip(f"{SHARED} (the project's shared binarized MNIST) is not on this machine")
    return SHARED


def test_reference_copy_checksums_match_the_data_readme(shared_files):
    readme = {  # md5 of the .gz as shipped (shared data README)
        "binarized_mnist_train.amat.gz": "bcef6008b69cb0c96687eaf71bb09c59",
        "binarized_mnist_valid.amat.gz": "f98251b05f4b98b052354dc71eebb103",
        "binarized_mnist_test.amat.gz": "cbfdb7a5a94c0fbd18f04ba4b6cbcac3",
    }
    for name, md5 in readme.items():
        assert hashlib.md5((shared_files / name).read_bytes()).hexdigest() == md5 == bm.FILE_MD5[name]


@pytest.mark.slow
def test_real_files_load_with_the_published_content(shared_files):
    ds = load_dataset("binarized_mnist", DataConfig(root=str(shared_files.parent)))
    assert {s: tuple(v.shape) for s, v in ds.splits.items()} == {
        "train": (50_000, 1, 28, 28), "valid": (10_000, 1, 28, 28), "test": (10_000, 1, 28, 28)
    }
    # mean pixel per split as given in the data README
    for split, mean in (("train", 0.1306), ("valid", 0.1311), ("test", 0.1325)):
        assert round(float(ds.splits[split].double().mean()), 4) == mean
    assert set(ds.meta["verified"].values()) == {"file md5 of the reference copy"}
    # the first test images parsed independently (str.split per line) agree with the reader
    with gzip.open(shared_files / "binarized_mnist_test.amat.gz", "rt") as f:
        first = np.array([[int(t) for t in next(f).split()] for _ in range(20)], dtype=np.float32)
    np.testing.assert_array_equal(ds.splits["test"][:20].reshape(20, 784).numpy(), first)
