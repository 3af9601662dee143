"""Users' own image files: every npz layout and dtype, IDX files with labels, and folders of PNG/JPEG images."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from raygen.data import DataConfig, DataError, load_dataset
from raygen.data.transforms import split_indices

SEED = DataConfig().split_seed


def pixels(shape, seed=0) -> np.ndarray:
    """uint8 0..255 images whose first pixel value varies (so row order can be checked)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def load_npz(tmp_path, *args, config=None, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, *args, **arrays)
    return load_dataset(f"npz:{path}", config or DataConfig())


def assert_single_split(ds, images_nchw: np.ndarray, scale: float = 255.0):
    """80/10/10 by the documented permutation of split_seed, values divided by `scale`."""
    idx = split_indices(len(images_nchw), (0.8, 0.1, 0.1), SEED)
    for split, rows in idx.items():
        np.testing.assert_allclose(ds.splits[split].numpy(), images_nchw[rows] / scale, atol=1e-7)


# ------------------------------------------------------------------------------------------ npz layouts


def test_npz_one_unnamed_uint8_array(tmp_path):
    """The issue's refused file: np.savez(path, images) of uint8 (N, 28, 28) pixels 0..255."""
    images = pixels((30, 28, 28))
    ds = load_npz(tmp_path, images)
    assert ds.shape == (1, 28, 28) and not ds.binary and ds.meta["scale"] == "/255"
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [24, 3, 3]
    assert_single_split(ds, images[:, None])


def test_npz_unnamed_images_and_labels(tmp_path):
    images, labels = pixels((20, 5, 5)), np.arange(20) % 3
    ds = load_npz(tmp_path, images, labels)
    idx = split_indices(20, (0.8, 0.1, 0.1), SEED)
    for split, rows in idx.items():
        assert ds.labels[split].tolist() == labels[rows].tolist()


@pytest.mark.parametrize("key", ["images", "data", "X", "x", "digits"])
def test_npz_single_named_array(tmp_path, key):
    images = pixels((10, 4, 4))
    ds = load_npz(tmp_path, **{key: images, "labels": np.arange(10)})
    assert_single_split(ds, images[:, None])
    assert sorted(torch.cat(list(ds.labels.values())).tolist()) == list(range(10))


def test_npz_named_image_array_wins_over_other_arrays(tmp_path):
    images = pixels((10, 4, 4))
    ds = load_npz(tmp_path, images=images, mean_image=images.mean(0))
    assert_single_split(ds, images[:, None])


@pytest.mark.parametrize("upper", [False, True])
def test_npz_keras_style(tmp_path, upper):
    x_train, x_test = pixels((10, 6, 6, 3)), pixels((4, 6, 6, 3), seed=1)
    y_train, y_test = np.arange(10) % 10, np.arange(4)
    names = ("X_train", "y_train", "X_test", "y_test") if upper else ("x_train", "y_train", "x_test", "y_test")
    ds = load_npz(tmp_path, **dict(zip(names, (x_train, y_train, x_test, y_test))))
    assert ds.shape == (3, 6, 6)
    np.testing.assert_allclose(ds.splits["test"].numpy(), x_test.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    assert ds.labels["test"].tolist() == y_test.tolist()
    # no valid array: a fixed 10% of train (here 1 image) validates, the rest trains, in file order
    perm = np.random.default_rng(SEED).permutation(10)
    valid, train = np.sort(perm[:1]), np.sort(perm[1:])
    np.testing.assert_allclose(ds.splits["valid"].numpy(), x_train[valid].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.splits["train"].numpy(), x_train[train].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
    assert ds.labels["train"].tolist() == y_train[train].tolist()


def test_npz_keras_with_validation_and_one_hot_labels(tmp_path):
    x = {s: pixels((n, 3, 3), seed=n) for s, n in (("train", 6), ("val", 2), ("test", 3))}
    y = {s: np.eye(4, dtype=np.float32)[np.arange(len(v)) % 4] for s, v in x.items()}
    ds = load_npz(tmp_path, **{f"x_{s}": v for s, v in x.items()}, **{f"y_{s}": v for s, v in y.items()})
    np.testing.assert_allclose(ds.splits["valid"][:, 0].numpy(), x["val"] / 255.0, atol=1e-7)
    assert ds.labels["train"].tolist() == [0, 1, 2, 3, 0, 1]


def test_npz_plain_train_test_without_valid(tmp_path):
    train, test = pixels((20, 3, 3)), pixels((5, 3, 3), seed=1)
    ds = load_npz(tmp_path, train=train, test=test)
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [18, 2, 5]


def test_npz_train_alone_is_split_like_one_array(tmp_path):
    images = pixels((10, 3, 3))
    ds = load_npz(tmp_path, x_train=images, y_train=np.arange(10))
    assert_single_split(ds, images[:, None])
    assert ds.labels["test"].tolist() == split_indices(10, (0.8, 0.1, 0.1), SEED)["test"].tolist()


@pytest.mark.parametrize(
    "layout, stored",
    [
        ("N,H,W", lambda a: a[:, 0]),
        ("N,H,W,1", lambda a: a.transpose(0, 2, 3, 1)),
        ("N,1,H,W", lambda a: a),
        ("N,H*W", lambda a: a.reshape(len(a), -1)),
    ],
)
def test_npz_grey_layouts(tmp_path, layout, stored):
    images = pixels((10, 1, 5, 5))
    assert_single_split(load_npz(tmp_path, stored(images)), images)


@pytest.mark.parametrize("channels", [3, 4])
def test_npz_colour_layouts_inferred(tmp_path, channels):
    images = pixels((10, channels, 7, 6))
    assert_single_split(load_npz(tmp_path, images), images)  # (N, C, H, W)
    assert_single_split(load_npz(tmp_path, images.transpose(0, 2, 3, 1)), images)  # (N, H, W, C)


def test_npz_ambiguous_channels_need_data_channels(tmp_path):
    images = pixels((10, 3, 4, 3))  # axis 1 and axis 3 could both hold 3 channels
    with pytest.raises(DataError, match=r"cannot tell the channel axis of shape \(10, 3, 4, 3\).*data.channels"):
        load_npz(tmp_path, images)
    assert_single_split(load_npz(tmp_path, images, config=DataConfig(channels="first")), images)
    last = load_npz(tmp_path, images, config=DataConfig(channels="last"))
    assert_single_split(last, images.transpose(0, 3, 1, 2))
    with pytest.raises(DataError, match="neither axis"):
        load_npz(tmp_path, pixels((10, 6, 7, 8)))


# ------------------------------------------------------------------------------------------ npz values


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32, np.bool_])
def test_npz_zero_one_integers_stay_binary(tmp_path, dtype):
    """Issue: an .npz of uint8 0/1 was divided by 255 (max 0.0039). 0/1 stays 0/1 whatever the dtype."""
    bits = (np.random.default_rng(0).random((20, 4, 4)) < 0.4).astype(dtype)
    ds = load_npz(tmp_path, images=bits)
    assert ds.binary and ds.meta["scale"] == "binary"
    assert float(torch.cat(list(ds.splits.values())).max()) == 1.0
    assert_single_split(ds, bits[:, None].astype(np.float32), scale=1.0)


def test_npz_zero_one_splits_stay_binary_together(tmp_path):
    train, test = ((np.random.default_rng(s).random((10, 3, 3)) < 0.5).astype(np.uint8) for s in (0, 1))
    ds = load_npz(tmp_path, train=train, test=test)
    assert ds.binary and ds.splits["test"].numpy().tolist() == test[:, None].astype(np.float32).tolist()


def test_npz_int_pixels_and_floats(tmp_path):
    images = pixels((10, 3, 3)).astype(np.int64)
    assert_single_split(load_npz(tmp_path, images), images[:, None])  # int64 0..255: divided by 255
    floats = np.random.default_rng(0).random((10, 3, 3)).astype(np.float32)
    assert_single_split(load_npz(tmp_path, floats), floats[:, None], scale=1.0)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"train": np.ones((4, 3, 3), np.uint8), "test": np.full((2, 3, 3), 200, np.uint8)},
         "train holds only 0/1 values but test holds 8-bit pixels up to 200"),
        ({"x": np.full((4, 3, 3), 1000, np.uint16)}, r"range over \[1000, 1000\].*257"),
        ({"x": np.full((4, 3, 3), 255.0)}, r"float values must lie in \[0, 1\]"),
        ({"x": np.full((4, 3, 3), np.nan)}, "NaN"),
        ({"train": pixels((4, 3, 3)), "x_test": pixels((2, 3, 3))}, "mixes plain and Keras-style"),
        ({"valid": pixels((4, 3, 3)), "test": pixels((2, 3, 3))}, "has a valid array but no training array"),
        ({"train": pixels((4, 3, 3)), "valid": pixels((2, 3, 3))}, "has train and valid but no test"),
        ({"valid": pixels((4, 3, 3)), "val": pixels((2, 3, 3)), "train": pixels((4, 3, 3))}, "both naming"),
        ({"a": pixels((4, 3, 3)), "b": pixels((4, 3, 3))}, r"several candidate image arrays \(a uint8\(4, 3, 3\)"),
        ({"labels": np.arange(4)}, "no array with two or more dimensions"),
        ({"images": pixels((4, 3, 3)), "labels": np.arange(5)}, r"labels must be 4 integers"),
        ({"images": pixels((4, 3, 3)), "y": np.arange(4), "labels": np.arange(4)}, "several label arrays"),
        ({"x": pixels((4, 3, 3, 3, 3))}, "not a batch of images"),
    ],
)
def test_npz_refusals_name_arrays_and_fix(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match) as err:
        load_npz(tmp_path, **arrays)
    assert str(tmp_path / "d.npz") in str(err.value)


def test_npz_ambiguity_message_says_what_to_rename(tmp_path):
    with pytest.raises(DataError) as err:
        load_npz(tmp_path, a=pixels((4, 3, 3)), b=pixels((4, 3, 3)))
    assert "name the images 'images'" in str(err.value) and "x_train/x_test" in str(err.value)


# ------------------------------------------------------------------------------------------ idx


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype("uint8"): 0x08, np.dtype("float32"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_idx_file_with_labels_beside_it(tmp_path):
    images, labels = pixels((20, 4, 4)), (np.arange(20) % 7).astype(np.uint8)
    (tmp_path / "my-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "my-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    ds = load_dataset(f"idx:{tmp_path / 'my-images-idx3-ubyte.gz'}")
    idx = split_indices(20, (0.8, 0.1, 0.1), SEED)
    for split, rows in idx.items():
        assert ds.labels[split].tolist() == labels[rows].tolist()
        np.testing.assert_allclose(ds.splits[split][:, 0].numpy(), images[rows] / 255.0, atol=1e-7)
    assert ds.meta["label_files"] == [str(tmp_path / "my-labels-idx1-ubyte")]


def test_idx_file_without_labels_and_binary_bytes(tmp_path):
    bits = (np.random.default_rng(0).random((10, 4, 4)) < 0.5).astype(np.uint8)
    (tmp_path / "bits.idx").write_bytes(idx_bytes(bits))
    ds = load_dataset(f"idx:{tmp_path / 'bits.idx'}")
    assert ds.labels is None and ds.binary and float(ds.splits["train"].max()) == 1.0


def test_idx_channels_last_file(tmp_path):
    images = pixels((10, 5, 6, 3))
    (tmp_path / "rgb.idx").write_bytes(idx_bytes(images))
    assert_single_split(load_dataset(f"idx:{tmp_path / 'rgb.idx'}"), images.transpose(0, 3, 1, 2))


def test_idx_directory_with_labels_and_wrong_label_count(tmp_path):
    train, test = pixels((10, 4, 4)), pixels((3, 4, 4), seed=1)
    (tmp_path / "a-train-images-idx3-ubyte").write_bytes(idx_bytes(train))
    (tmp_path / "a-test-images-idx3-ubyte").write_bytes(idx_bytes(test))
    (tmp_path / "a-train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))
    assert load_dataset(f"idx:{tmp_path}").labels is None  # test labels missing: no labels
    (tmp_path / "a-test-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(3, dtype=np.uint8)))
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.labels["valid"].tolist() == [9] and ds.labels["test"].tolist() == [0, 1, 2]
    (tmp_path / "a-test-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)))
    with pytest.raises(DataError, match="a-test-labels-idx1-ubyte: a labels file must hold 3 integers"):
        load_dataset(f"idx:{tmp_path}")


# ------------------------------------------------------------------------------------------ folder


def save(path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_flat_grey_pngs(tmp_path):
    images = pixels((10, 6, 5))
    for i, a in enumerate(images):
        save(tmp_path / f"img{i:02d}.png", a)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.shape == (1, 6, 5) and ds.labels is None and ds.meta["color"] == "gray"
    assert_single_split(ds, images[:, None])


def test_folder_class_subdirectories_give_labels_and_rgb(tmp_path):
    rgb = pixels((10, 4, 4, 3))
    for i, a in enumerate(rgb):
        save(tmp_path / ("b_cls" if i % 2 else "a_cls") / f"{i}.png", a)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.shape == (3, 4, 4) and ds.meta["classes"] == ["a_cls", "b_cls"]
    order = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]  # sorted by class, then file name
    idx = split_indices(10, (0.8, 0.1, 0.1), SEED)
    for split, rows in idx.items():
        files = [order[r] for r in rows]
        np.testing.assert_allclose(ds.splits[split].numpy(), rgb[files].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
        assert ds.labels[split].tolist() == [f % 2 for f in files]


def test_folder_split_directories_and_jpeg(tmp_path):
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            save(tmp_path / split / f"{i}.jpg", pixels((8, 8, 3), seed=i))
    ds = load_dataset(f"folder:{tmp_path}")
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [9, 1, 3]
    decoded = np.asarray(Image.open(tmp_path / "test" / "0.jpg").convert("RGB"))  # JPEG is lossy: compare decoded
    np.testing.assert_allclose(ds.splits["test"][0].numpy(), decoded.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_folder_resize_and_crop_match_pillow(tmp_path):
    big = pixels((20, 30, 3))  # 30 wide, 20 high
    save(tmp_path / "x" / "a.png", big)
    for i in range(9):
        save(tmp_path / "x" / f"b{i}.png", pixels((24, 24, 3), seed=i + 1))
    ds = load_dataset(f"folder:{tmp_path / 'x'}", DataConfig(center_crop=16, image_size=8, color="rgb"))
    assert ds.shape == (3, 8, 8)
    # independent: Pillow crop of the central 16x16, resize 16 -> 8 with Lanczos
    want = Image.fromarray(big).crop((7, 2, 23, 18)).resize((8, 8), Image.Resampling.LANCZOS)
    all_images = torch.cat([ds.splits[s] for s in ("train", "valid", "test")])
    diffs = (all_images - torch.from_numpy(np.asarray(want).transpose(2, 0, 1) / 255.0).float()).abs()
    assert float(diffs.flatten(1).max(1).values.min()) < 1e-6  # one of the images is exactly that one


def test_folder_gray_is_pillow_luma(tmp_path):
    rgb = pixels((10, 5, 5, 3))
    for i, a in enumerate(rgb):
        save(tmp_path / f"{i}.png", a)
    ds = load_dataset(f"folder:{tmp_path}", DataConfig(color="gray"))
    luma = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in rgb])
    assert_single_split(ds, luma[:, None])


def test_folder_binary_and_16_bit_images(tmp_path):
    bits = np.random.default_rng(0).random((10, 4, 4)) < 0.5
    for i, a in enumerate(bits):
        save(tmp_path / "bits" / f"{i}.png", a)  # bool array: a 1-bit PNG
    ds = load_dataset(f"folder:{tmp_path / 'bits'}")
    assert ds.binary and ds.shape == (1, 4, 4)
    assert_single_split(ds, bits[:, None].astype(np.float32), scale=1.0)
    eight_bit = pixels((10, 3, 3))
    for i, a in enumerate(eight_bit):
        save(tmp_path / "wide" / f"{i}.png", a.astype(np.uint16) * 257)  # 16-bit grey PNG, 0..65535
    assert Image.open(tmp_path / "wide" / "0.png").mode.startswith("I")
    assert_single_split(load_dataset(f"folder:{tmp_path / 'wide'}"), eight_bit[:, None])


def test_folder_refusals(tmp_path):
    save(tmp_path / "mixed" / "a.png", pixels((4, 4)))
    save(tmp_path / "mixed" / "b.png", pixels((5, 4)))
    save(tmp_path / "mixed" / "c.png", pixels((4, 4)))
    with pytest.raises(DataError, match=r"images differ in size.*data.image_size"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken/x.png: not a readable PNG/JPEG"):
        load_dataset(f"folder:{tmp_path / 'broken'}")
    save(tmp_path / "both" / "a.png", pixels((4, 4)))
    save(tmp_path / "both" / "cls" / "b.png", pixels((4, 4)))
    with pytest.raises(DataError, match="both directly"):
        load_dataset(f"folder:{tmp_path / 'both'}")
    save(tmp_path / "half" / "train" / "a.png", pixels((4, 4)))
    with pytest.raises(DataError, match="need both train/ and test/"):
        load_dataset(f"folder:{tmp_path / 'half'}")
    with pytest.raises(DataError, match="smaller than data.center_crop=9"):
        load_dataset(f"folder:{tmp_path / 'mixed'}", DataConfig(center_crop=9))
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'absent'}")
