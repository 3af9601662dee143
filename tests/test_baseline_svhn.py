"""SVHN from the official format-2 .mat files: layout, labels (10 = digit 0), splits and clear errors."""

import numpy as np
import pytest
import scipy.io

from raygen.data import load_dataset
from raygen.data import svhn as svhn_module
from raygen.data.base import DataConfig, DataError


def _write(directory, name, n, seed, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = labels if labels is not None else rng.integers(1, 11, size=(n, 1))
    scipy.io.savemat(directory / name, {"X": x, "y": y})
    return x, y


def test_svhn_reads_the_official_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(svhn_module, "SVHN_VALID", 2)
    d = tmp_path / "svhn"
    d.mkdir()
    x, _ = _write(d, "train_32x32.mat", 6, 0, labels=np.array([[10], [1], [2], [3], [9], [10]]))
    _write(d, "test_32x32.mat", 3, 1)
    _write(d, "extra_32x32.mat", 4, 2)
    data = load_dataset("svhn", DataConfig(root=str(tmp_path)))
    assert {k: tuple(v.shape) for k, v in data.splits.items()} == {
        "train": (4, 3, 32, 32), "valid": (2, 3, 32, 32), "test": (3, 3, 32, 32)}
    # image 1, channel 2 (blue), row 5, column 7 is X[5, 7, 2, 1] / 255
    assert float(data.splits["train"][1, 2, 5, 7]) == pytest.approx(x[5, 7, 2, 1] / 255.0)
    assert data.labels["train"].tolist() == [0, 1, 2, 3] and data.labels["valid"].tolist() == [9, 0]
    extra = load_dataset("svhn+extra", DataConfig(root=str(tmp_path)))
    assert tuple(extra.splits["train"].shape) == (8, 3, 32, 32)


def test_svhn_errors_name_the_file(tmp_path):
    d = tmp_path / "svhn"
    d.mkdir()
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_dataset("svhn", DataConfig(root=str(tmp_path)))
    scipy.io.savemat(d / "train_32x32.mat", {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"train_32x32.mat: X must be uint8 of shape \(32, 32, 3, N\)"):
        load_dataset("svhn", DataConfig(root=str(tmp_path)))
    _write(d, "train_32x32.mat", 3, 0, labels=np.array([[0], [1], [2]]))
    with pytest.raises(DataError, match="labels must be 1..10"):
        load_dataset("svhn", DataConfig(root=str(tmp_path)))
