"""torchvision's on-disk layouts read in place: MNIST under <root>/MNIST/raw/ and CIFAR-10's
cifar-10-batches-py/ (pickled batches read by a restricted unpickler that never runs a pickle's code)."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from raygen.data import DataConfig, DataError, cifar, list_datasets, load_dataset
from raygen.data import idx as idx_mod
from raygen.data.cifar_python import PY_FILES, parse_python_batch
from tests.shared_data import SHARED_DATA

N = 4  # records per synthetic CIFAR batch
VALID = 3


# ------------------------------------------------------------------------------------------ MNIST/raw


def idx_bytes(array: np.ndarray) -> bytes:
    """The documented IDX header written by hand: 0 0 0x08 ndim, then big-endian uint32 sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_read_from_torchvision_raw_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_mod, "MNIST_SHAPES", {})
    monkeypatch.setattr(idx_mod, "MNIST_VALID", 2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    # torchvision keeps the decompressed files (and sometimes the .gz beside them): one of each here
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(train))
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(7) % 10))
    (raw / "t10k-images-idx3-ubyte").write_bytes(gzip.compress(idx_bytes(test)))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([4, 5, 6])))
    ds = load_dataset("mnist", DataConfig(root=str(tmp_path)))
    assert ds.meta["directory"] == str(raw)
    np.testing.assert_allclose(ds.splits["train"][:, 0].numpy(), train[:5] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["valid"][:, 0].numpy(), train[5:] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["test"][:, 0].numpy(), test / 255.0, atol=1e-7)
    assert ds.labels["test"].tolist() == [4, 5, 6]
    row = next(r for r in list_datasets(DataConfig(root=str(tmp_path))) if r.name == "mnist")
    assert row.present and all(str(raw) in loc for loc in row.locations)


def test_mnist_raygen_directory_wins_and_errors_name_both(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", DataConfig(root=str(tmp_path)))
    assert str(tmp_path / "mnist") in str(err.value) and str(tmp_path / "MNIST" / "raw") in str(err.value)


def test_mnist_real_t10k_in_torchvision_layout_is_md5_checked(tmp_path):
    src = SHARED_DATA / "mnist"
    if not (src / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{src} (the project's shared MNIST test set) is not on this machine")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(src / f, raw / f)
    ds = load_dataset("mnist", DataConfig(root=str(tmp_path), mnist_split="test-only"))
    assert sum(len(v) for v in ds.splits.values()) == 10_000 and ds.meta["directory"] == str(raw)
    # a corrupted official-name file in that layout fails its md5, naming the file
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    data = bytearray((src / "t10k-images-idx3-ubyte.gz").read_bytes())
    data[-9] ^= 1
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: md5"):
        load_dataset("mnist", DataConfig(root=str(tmp_path), mnist_split="test-only"))


# ------------------------------------------------------------------------------------------ cifar-10-batches-py


def synthetic_python_batches(directory: Path, protocol: int | str = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Files in the python version's format: a dict with uint8 data (N, 3072) = red, green, blue planes."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for f, name in enumerate(PY_FILES):
        images = rng.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(f * N, (f + 1) * N)  # traceable through the splits
        labels = [int(v) for v in rng.integers(0, 10, size=N)]
        batch = {"batch_label": name, "labels": labels, "data": images.reshape(N, 3072),
                 "filenames": [f"img{i}.png" for i in range(N)]}
        raw = pickle.dumps(batch, protocol=4 if protocol == 4 else 2)
        if protocol == "numpy1":  # the name numpy < 2 (and the Python 2 era files) give the reconstructor
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            assert b"numpy.core.multiarray" in raw
        (directory / name).write_bytes(raw)
        out[name] = (images, np.array(labels))
    (directory / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane"] * 10}))
    return out


@pytest.fixture
def small_cifar(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_FILE", N)
    monkeypatch.setattr(cifar, "CIFAR_VALID", VALID)


@pytest.mark.parametrize("where", ["root", "cifar10"])
@pytest.mark.parametrize("protocol", [2, 4, "numpy1"])
def test_cifar_python_batches_read_in_torchvision_layout(tmp_path, small_cifar, where, protocol):
    directory = (tmp_path if where == "root" else tmp_path / "cifar10") / "cifar-10-batches-py"
    batches = synthetic_python_batches(directory, protocol)
    ds = load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    train = np.concatenate([batches[f][0] for f in PY_FILES[:5]])
    train_labels = np.concatenate([batches[f][1] for f in PY_FILES[:5]])
    np.testing.assert_allclose(ds.splits["train"].numpy(), train[:-VALID] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["valid"].numpy(), train[-VALID:] / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["test"].numpy(), batches["test_batch"][0] / 255.0, atol=1e-7)
    assert ds.labels["valid"].tolist() == train_labels[-VALID:].tolist()
    assert ds.labels["test"].tolist() == batches["test_batch"][1].tolist()
    assert "python version" in ds.meta["read_from"] and ds.meta["files"][0] == str(directory / "data_batch_1")
    row = next(r for r in list_datasets(DataConfig(root=str(tmp_path))) if r.name == "cifar10")
    assert row.present and row.locations[0] == str(directory / "data_batch_1")


class _Hostile:
    """Pickles to a call of os.system: what a tampered batch file could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["system", "eval", "codec"])
def test_hostile_pickle_runs_no_code_and_names_the_file(tmp_path, small_cifar, payload):
    directory = tmp_path / "cifar-10-batches-py"
    synthetic_python_batches(directory)
    marker = tmp_path / "marker"
    if payload == "system":
        hostile = pickle.dumps({"data": _Hostile(marker), "labels": [0] * N}, protocol=2)
    elif payload == "eval":
        class Evil:
            def __reduce__(self):
                return (eval, (f"open({str(marker)!r}, 'w').close()",))
        hostile = pickle.dumps({"data": Evil(), "labels": [0] * N}, protocol=2)
    else:  # the one allowed helper, asked for another codec
        class Codec:
            def __reduce__(self):
                return (__import__("_codecs").encode, ("x", "rot13"))
        hostile = pickle.dumps({"data": Codec(), "labels": [0] * N}, protocol=2)
    # the unrestricted loader would run it: proof the payload is live
    if payload != "codec":
        pickle.loads(hostile)
        assert marker.exists()
        marker.unlink()
    (directory / "data_batch_3").write_bytes(hostile)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 python batch \(UnpicklingError"):
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert not marker.exists()


def test_python_batch_structure_errors():
    def batch(**kw):
        base = {"data": np.zeros((N, 3072), np.uint8), "labels": [0] * N}
        return pickle.dumps({**base, **kw}, protocol=2)

    cases = {
        b"not a pickle": "not a CIFAR-10 python batch",
        pickle.dumps([1, 2]): "holds a list",
        pickle.dumps({"data": 1}): "lacks the keys 'data' and 'labels'",
        batch(data=np.zeros((N, 3072), np.float32)): r"'data' must be uint8 of shape \(4, 3072\), got float32",
        batch(data=np.zeros((N + 1, 3072), np.uint8)): "got uint8 \\(5, 3072\\)",
        batch(labels=[0] * (N - 1)): "'labels' must list 4 labels, got 3",
        batch(labels=[0, 1, 2, 10]): "'labels' must be integers 0-9",
        batch(data=np.zeros((N, 3072), object)): "'data' must be uint8",
    }
    for raw, message in cases.items():
        with pytest.raises(DataError, match=message) as err:
            parse_python_batch(raw, "/x/data_batch_1", N)
        assert str(err.value).startswith("/x/data_batch_1: ")


def test_incomplete_python_dir_is_not_used(tmp_path, small_cifar):
    directory = tmp_path / "cifar-10-batches-py"
    synthetic_python_batches(directory)
    shutil.os.remove(directory / "test_batch")
    with pytest.raises(DataError, match="cifar-10-batches-py") as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert "CIFAR-10 not found" in str(err.value)
