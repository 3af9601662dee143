"""celeba: a tiny synthetic img_align_celeba/ (178x218 images) with and without list_eval_partition.txt."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raygen.data import DataConfig, DataError, list_datasets, load_dataset

NAMES = [f"{i:06d}.jpg" for i in range(1, 11)]


def make_celeba(root, partition: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Smooth random 178x218 RGB images (JPEG at quality 95), returned as decoded by Pillow."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    decoded = {}
    for name in NAMES:
        small = rng.integers(0, 256, size=(11, 9, 3), dtype=np.uint8)
        Image.fromarray(small).resize((178, 218), Image.Resampling.BILINEAR).save(folder / name, quality=95)
        with Image.open(folder / name) as im:
            decoded[name] = im.convert("RGB")
    if partition is not None:
        lines = [f"{n} {s}" for n, s in partition.items()]
        (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return decoded


def vw_crop(image: Image.Image) -> np.ndarray:
    """VW's recipe written out: 178x218 -> 64x78 (width x height), then rows 7..70 (the central 64)."""
    assert image.size == (178, 218)
    scaled = image.resize((64, 78), Image.Resampling.LANCZOS)
    return np.asarray(scaled.crop((0, 7, 64, 71)), dtype=np.float32).transpose(2, 0, 1) / 255.0


def test_official_partition_and_vw_crop(tmp_path):
    partition = {n: (0 if i < 5 else 1 if i < 7 else 2) for i, n in enumerate(NAMES)}
    decoded = make_celeba(tmp_path, partition)
    ds = load_dataset("celeba", DataConfig(root=str(tmp_path)))
    assert ds.shape == (3, 64, 64) and ds.kind == "image" and not ds.binary
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 5, "valid": 2, "test": 3}
    expected = {"train": NAMES[:5], "valid": NAMES[5:7], "test": NAMES[7:]}
    for split, names in expected.items():
        want = np.stack([vw_crop(decoded[n]) for n in names])
        np.testing.assert_allclose(ds.splits[split].numpy(), want, atol=1e-6)
    assert "list_eval_partition" in ds.meta["split"] and "64x78" in ds.meta["preprocessing"]
    row = next(r for r in list_datasets(DataConfig(root=str(tmp_path))) if r.name == "celeba")
    assert row.present


def test_without_partition_fixed_permutation(tmp_path):
    make_celeba(tmp_path)
    a = load_dataset("celeba", DataConfig(root=str(tmp_path)))
    b = load_dataset("celeba", DataConfig(root=str(tmp_path)))
    assert {s: len(v) for s, v in a.splits.items()} == {"train": 8, "valid": 1, "test": 1}
    assert "permutation" in a.meta["split"]
    for s in a.splits:
        assert (a.splits[s] == b.splits[s]).all()
    together = np.concatenate([a.splits[s].numpy() for s in a.splits]).reshape(10, -1)
    assert len(np.unique(together, axis=0)) == 10  # disjoint, every image once


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="CelebA not found: .*img_align_celeba is not a directory"):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))
    make_celeba(tmp_path, {"000001.jpg": 0, "999999.jpg": 2})
    part = tmp_path / "celeba" / "list_eval_partition.txt"
    with pytest.raises(DataError, match=r"list_eval_partition.txt: lists 1 image\(s\) not in .*first: 999999.jpg"):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))
    part.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt: line 2 is '000002.jpg train'"):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))
    part.write_text("000001.jpg 0\n000002.jpg 2\n")
    with pytest.raises(DataError, match="assigns no image to the valid split"):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))
    (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").write_bytes(b"not a jpeg")
    part.write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    with pytest.raises(DataError, match=r"000001.jpg: not a readable PNG/JPEG image"):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))
