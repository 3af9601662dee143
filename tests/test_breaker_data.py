"""Hostile and mislabelled user data files found by a tester: each is refused with one DataError naming the
file (never a traceback, never code run), or, for a legitimate file under a borrowed name, read."""

from __future__ import annotations

import importlib
import os
import struct

import numpy as np
import pytest
from PIL import Image

from raygen.data import DataConfig, DataError, load_dataset


def test_npy_file_is_refused_naming_the_format(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((20, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"images.npy: a .npy file .*np.savez"):
        load_dataset(f"npz:{path}", DataConfig())


def test_non_zip_file_is_refused_without_inviting_allow_pickle(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"d.npz: not a readable .npz archive") as err:
        load_dataset(f"npz:{path}", DataConfig())
    assert "pickle" not in str(err.value)


class _Marker:
    """Unpickling this calls os.system: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["images", "labels"])
def test_pickled_object_array_runs_no_code(tmp_path, where):
    marker = tmp_path / "marker"
    evil = np.empty(20, dtype=object)
    evil[:] = [_Marker(marker)] * 20
    arrays = {"images": np.zeros((20, 8, 8), np.uint8), "labels": np.arange(20)}
    arrays[where] = evil
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"d.npz: not a readable .npz archive"):
        load_dataset(f"npz:{path}", DataConfig())
    assert not marker.exists()


def _idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_idx_directory_under_mnist_file_names_is_read_as_user_data(tmp_path):
    """Fashion-MNIST and others ship as train-images-idx3-ubyte / t10k-images-idx3-ubyte: `idx:` must not
    hold them to MNIST's official md5 and shapes (only `mnist` does)."""
    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    _idx(tmp_path / "train-images-idx3-ubyte", images[:40])
    _idx(tmp_path / "t10k-images-idx3-ubyte", images[40:])
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(40, dtype=np.uint8) % 10)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    ds = load_dataset(f"idx:{tmp_path}", DataConfig())
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 36, "valid": 4, "test": 10}
    np.testing.assert_allclose(ds.splits["test"].numpy()[:, 0], images[40:] / 255.0, atol=1e-7)
    assert ds.labels["test"].tolist() == list(range(10))


def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch):
    for i in range(10):
        Image.new("L", (8, 8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 8x8 = 64 > 2 x 16: PIL raises DecompressionBombError
    with pytest.raises(DataError, match=r"0.png: refused, image too large"):
        load_dataset(f"folder:{tmp_path}", DataConfig())


def test_folder_image_size_that_cannot_fit_in_memory_is_refused_before_resizing(tmp_path, monkeypatch):
    folder = importlib.import_module("raygen.data.folder")

    for i in range(10):
        Image.new("L", (8, 8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(folder, "_free_memory", lambda: 1 << 20)  # 1 MiB free
    monkeypatch.setattr(folder, "_read", lambda *a: pytest.fail("resized an image before the size check"))
    with pytest.raises(DataError, match=r"data.image_size=512 makes 10 images of 512x512 pixels"):
        load_dataset(f"folder:{tmp_path}", DataConfig(image_size=512))


def test_npz_array_header_declaring_a_terabyte_is_a_data_error(tmp_path):
    import io
    import zipfile

    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 1000, 1000)})
    buf.write(b"\0" * 1000)
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"d.npz: (an array is larger than the free memory|not a readable .npz)"):
        load_dataset(f"npz:{path}", DataConfig())


def test_forced_channel_axis_must_hold_a_channel_count(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((20, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match=r"data.channels=first reads axis 1 of shape \(20, 8, 8, 3\) as 8 channels"):
        load_dataset(f"npz:{path}", DataConfig(channels="first"))
    assert tuple(load_dataset(f"npz:{path}", DataConfig(channels="last")).splits["train"].shape[1:]) == (3, 8, 8)
