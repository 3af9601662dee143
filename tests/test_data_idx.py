"""IDX format: round trips, every corruption path, official md5/shape checks, and the mnist / idx: datasets."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from raygen.data import DataConfig, DataError, load_dataset
from raygen.data import idx as idx_mod
from raygen.data.idx import read_idx
from tests.shared_data import SHARED_DATA

SHARED_MNIST = SHARED_DATA / "mnist"
T10K_MD5 = {  # from shared/data/README.md
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype("int16"): 0x0B,
    np.dtype("int32"): 0x0C,
    np.dtype("float32"): 0x0D,
    np.dtype("float64"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The documented header, written by hand: 0x0000, type code, ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def numbered_images(n: int, h: int = 4, w: int = 5) -> np.ndarray:
    """Image i has pixel [0, 0] = i, so rows can be traced through a split."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_round_trip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(array), gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_gzip_detected_by_content_not_name(tmp_path):
    array = numbered_images(3)
    out = read_idx(write(tmp_path / "images.idx3", idx_bytes(array), gz=True))
    np.testing.assert_array_equal(out, array)


def corruptions(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = idx_bytes(numbered_images(6))
    gz = gzip.compress(good)
    cases = {
        "truncated payload": (good[:-7], False, "truncated"),
        "trailing bytes": (good + b"\x00" * 3, False, "trailing"),
        "wrong magic": (b"\x01\x02" + good[2:], False, "magic"),
        "unknown type": (good[:2] + b"\x07" + good[3:], False, "element type"),
        "zero dims": (b"\x00\x00\x08\x00", False, "0 dimensions"),
        "truncated header": (good[:9], False, "header"),
        "empty": (b"", False, "too short"),
        "truncated gzip": (gz[: len(gz) // 2], None, "truncated gzip"),
        "corrupt gzip": (gz[:10] + bytes(len(gz) - 10), None, "gzip"),
        "not gzip but .gz": (good, None, "not a gzip"),
    }
    out = {}
    for i, (label, (data, gzip_it, expect)) in enumerate(cases.items()):
        name = f"case{i}.idx" + (".gz" if gzip_it is None else "")
        out[label] = (write(tmp_path / name, data, bool(gzip_it)), expect)
    return out


def test_corrupt_files_raise_data_error_naming_file_and_problem(tmp_path):
    for label, (path, expect) in corruptions(tmp_path).items():
        with pytest.raises(DataError) as err:
            read_idx(path)
        assert str(path) in str(err.value), label
        assert expect in str(err.value), (label, str(err.value))


def test_unreadable_path(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.idx")


def test_official_name_with_wrong_md5(tmp_path):
    path = write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(numbered_images(3, 28, 28)), gz=True)
    with pytest.raises(DataError, match="md5") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_official_raw_name_with_wrong_shape(tmp_path):
    path = write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(numbered_images(3, 28, 28)))
    with pytest.raises(DataError, match=r"official file has \(10000, 28, 28\)"):
        read_idx(path)


def test_official_md5_constants_are_md5s():
    for name, md5 in idx_mod.MNIST_MD5.items():
        assert len(md5) == 32 and int(md5, 16) >= 0, name
    for name, md5 in T10K_MD5.items():
        assert idx_mod.MNIST_MD5[name] == md5


# ------------------------------------------------------------------------------------------ real MNIST


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{SHARED_MNIST} (the project's shared MNIST test set) is not on this machine")
    return SHARED_MNIST


def test_real_t10k_md5_and_contents(shared_mnist):
    for name, md5 in T10K_MD5.items():
        assert hashlib.md5((shared_mnist / name).read_bytes()).hexdigest() == md5
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))
    # independent decode of the first image with gzip + struct
    raw = gzip.decompress((shared_mnist / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">4I", raw[:16]) == (0x0803, 10_000, 28, 28)
    np.testing.assert_array_equal(images[0].ravel(), np.frombuffer(raw[16 : 16 + 784], np.uint8))


def test_mnist_test_only_split(shared_mnist):
    ds = load_dataset("mnist", DataConfig(root=str(shared_mnist.parent), mnist_split="test-only"))
    assert ds.kind == "image" and ds.shape == (1, 28, 28)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8000, "valid": 1000, "test": 1000}
    assert "test-only" in ds.meta["split"]
    all_images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    pixel_sum = sum(float(v.sum()) for v in ds.splits.values())
    assert pixel_sum == pytest.approx(all_images.astype(np.float64).sum() / 255.0, rel=1e-6)
    assert float(ds.splits["train"].max()) == 1.0 and float(ds.splits["train"].min()) == 0.0
    assert sum(len(v) for v in ds.labels.values()) == 10_000


def test_mnist_official_missing_train_names_files_and_options(shared_mnist):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", DataConfig(root=str(shared_mnist.parent)))
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(shared_mnist) in msg
    assert "data.download=true" in msg and "data.mnist_split=test-only" in msg


def test_mnist_missing_everything(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    for needed in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", str(tmp_path / "mnist")):
        assert needed in msg
    assert "data.download=true" in msg and "test-only" in msg


def test_mnist_official_split_layout(tmp_path, monkeypatch):
    """Small stand-ins for the official raw files (shapes patched): valid = the last MNIST_VALID of train."""
    monkeypatch.setattr(idx_mod, "MNIST_SHAPES", {})
    monkeypatch.setattr(idx_mod, "MNIST_VALID", 2)
    d = tmp_path / "mnist"
    d.mkdir()
    train, test = numbered_images(12, 28, 28), numbered_images(5, 28, 28)
    write(d / "train-images-idx3-ubyte", idx_bytes(train))
    write(d / "t10k-images-idx3-ubyte", idx_bytes(test))
    write(d / "train-labels-idx1-ubyte", idx_bytes(np.arange(12, dtype=np.uint8) % 10))
    write(d / "t10k-labels-idx1-ubyte", idx_bytes(np.arange(5, dtype=np.uint8)))
    ds = load_dataset("mnist", DataConfig(root=str(tmp_path)))
    np.testing.assert_allclose(ds.splits["train"][:, 0].numpy(), train[:10] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["valid"][:, 0].numpy(), train[10:] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["test"][:, 0].numpy(), test / 255.0, atol=1e-7)
    assert ds.labels["valid"].tolist() == [0, 1] and ds.labels["test"].tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ idx:PATH


def test_idx_file_split_is_fixed_disjoint_and_scaled(tmp_path):
    images = numbered_images(50)
    path = write(tmp_path / "imgs-idx3-ubyte.gz", idx_bytes(images), gz=True)
    a = load_dataset(f"idx:{path}", DataConfig(split_seed=3))
    b = load_dataset(f"idx:{path}", DataConfig(split_seed=3))
    c = load_dataset(f"idx:{path}", DataConfig(split_seed=4))
    ids = {k: (v[:, 0, 0, 0] * 255).round().long().tolist() for k, v in a.splits.items()}
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [40, 5, 5]
    assert sorted(ids["train"] + ids["valid"] + ids["test"]) == list(range(50))
    for split in ids:
        np.testing.assert_allclose(a.splits[split][:, 0].numpy(), images[ids[split]] / 255.0, atol=1e-7)
        assert a.splits[split].equal(b.splits[split])
    assert not a.splits["train"].equal(c.splits["train"])
    assert a.shape == (1, 4, 5) and a.meta["binarize"] == "none"


def test_idx_directory_with_train_and_test(tmp_path):
    train, test = numbered_images(20), numbered_images(4)
    write(tmp_path / "foo-train-images-idx3-ubyte.gz", idx_bytes(train), gz=True)
    write(tmp_path / "foo-train-images-idx3-ubyte", idx_bytes(train))  # decompressed twin: .gz wins
    write(tmp_path / "foo-test-images-idx3-ubyte", idx_bytes(test))
    write(tmp_path / "foo-train-labels-idx1-ubyte", idx_bytes(np.zeros(20, np.uint8)))  # ignored
    ds = load_dataset(f"idx:{tmp_path}")
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [18, 2, 4]
    np.testing.assert_allclose(ds.splits["valid"][:, 0].numpy(), train[18:] / 255.0, atol=1e-7)


def test_idx_directory_ambiguous(tmp_path):
    for name in ("a-train-idx3-ubyte", "b-train-idx3-ubyte", "t10k-idx3-ubyte"):
        write(tmp_path / name, idx_bytes(numbered_images(3)))
    with pytest.raises(DataError, match="exactly one IDX image file with 'train'"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_labels_file_is_not_images(tmp_path):
    path = write(tmp_path / "x-idx1-ubyte", idx_bytes(np.arange(10, dtype=np.uint8)))
    with pytest.raises(DataError, match="labels file"):
        load_dataset(f"idx:{path}")


def test_idx_float_out_of_range(tmp_path):
    path = write(tmp_path / "x.idx", idx_bytes(np.full((4, 2, 2), 3.0, np.float32)))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(f"idx:{path}")


def test_idx_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such IDX file"):
        load_dataset(f"idx:{tmp_path / 'missing.idx'}")
