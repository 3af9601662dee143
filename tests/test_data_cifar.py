"""cifar10: synthetic batch files in the official binary record format, read extracted and from the archive.

Real batch files hold 10 000 records (30.7 MB each, 184 MB for the six); the tests shrink
`cifar.RECORDS_PER_FILE` (and `CIFAR_VALID`) so each file is a few records of the exact official layout,
and one test checks that, unpatched, the official size is enforced. The synthetic archive cannot have the
official md5, so archive tests patch `CIFAR_MD5` to the synthetic archive's md5; the md5 test does not.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from raygen.data import DataConfig, DataError, cifar, dataset_kind, list_datasets, load_dataset

N = 4  # records per synthetic batch file
VALID = 3
FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def record_bytes(label: int, image: np.ndarray) -> bytes:
    """The documented record, byte by byte: label, then red, green, blue planes, each row by row."""
    out = bytearray([label])
    for c in range(3):
        for y in range(32):
            for x in range(32):
                out.append(int(image[c, y, x]))
    return bytes(out)


def synthetic_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per file: images (N, 3, 32, 32) uint8 indexed [c, y, x] and labels. Image k (global order of the files)
    has red[0, 0] = k so it can be traced through the splits; the first has three distinct plane patterns."""
    rng = np.random.default_rng(0)
    out = {}
    for f, name in enumerate(FILES):
        images = rng.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(f * N, (f + 1) * N)
        labels = rng.integers(0, 10, size=N).astype(np.int64)
        out[name] = (images, labels)
    y, x = np.mgrid[0:32, 0:32]
    first = out[FILES[0]][0][0]
    first[0], first[1], first[2] = 7 * y + x, 7 * x + y, 255 - (x + y)  # red, green, blue
    return out


def file_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    return b"".join(record_bytes(int(label), image) for image, label in zip(images, labels, strict=True))


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_FILE", N)
    monkeypatch.setattr(cifar, "CIFAR_VALID", VALID)
    batches = synthetic_batches()
    return batches, {name: file_bytes(*batch) for name, batch in batches.items()}


def write_extracted(root: Path, raw: dict[str, bytes]) -> Path:
    directory = root / "cifar10" / "cifar-10-batches-bin"
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in raw.items():
        (directory / name).write_bytes(data)
    return directory


def write_archive(root: Path, raw: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    """A tar.gz laid out like the official one (plus `extra` members), in <root>/cifar10/."""
    path = root / "cifar10" / "cifar-10-binary.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {
        "cifar-10-batches-bin/batches.meta.txt": b"airplane\nautomobile\n",
        "cifar-10-batches-bin/readme.html": b"<html/>",
    }
    members.update({f"cifar-10-batches-bin/{name}": data for name, data in raw.items()})
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def trust(monkeypatch, archive: Path) -> None:
    monkeypatch.setattr(cifar, "CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())


# ------------------------------------------------------------------------------------------ contents


def test_pixel_order_labels_split_and_scaling(tmp_path, small):
    batches, raw = small
    write_extracted(tmp_path, raw)
    ds = load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert ds.kind == "image" and ds.shape == (3, 32, 32) and ds.binary is False
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 5 * N - VALID, "valid": VALID, "test": N}
    assert ds.meta["scale"] == "pixel/255" and ds.meta["read_from"] == "extracted files"
    assert f"first {5 * N - VALID}" in ds.meta["split"] and f"last {VALID}" in ds.meta["split"]
    assert "common convention" in ds.meta["split"] and ds.meta["binarize"] == "none"
    assert ds.meta["files"] == [str(tmp_path / "cifar10" / "cifar-10-batches-bin" / f) for f in FILES]

    # the pattern record: channel 0 is red, rows are y, columns are x
    y, x = np.mgrid[0:32, 0:32]
    first = ds.splits["train"][0].numpy()
    np.testing.assert_array_equal(first[0] * 255, (7 * y + x).astype(np.float32))
    np.testing.assert_array_equal(first[1] * 255, (7 * x + y).astype(np.float32))
    np.testing.assert_array_equal(first[2] * 255, (255 - (x + y)).astype(np.float32))

    # every pixel against its byte offset in the file: 1 + 1024 c + 32 y + x within its record
    c, y, x = np.indices((3, 32, 32))
    for split, name, start in (("test", "test_batch.bin", 0), ("valid", "data_batch_5.bin", N - VALID)):
        data = np.frombuffer(raw[name], np.uint8)
        for i in range(len(ds.splits[split])):
            offsets = (start + i) * 3073 + 1 + 1024 * c + 32 * y + x
            expected = data[offsets].astype(np.float32) / np.float32(255)
            np.testing.assert_array_equal(ds.splits[split][i].numpy(), expected)
            assert int(ds.labels[split][i]) == data[(start + i) * 3073]

    # train = the five training files in order minus the last VALID images; valid = those; test = test_batch
    train_images = np.concatenate([batches[f][0] for f in FILES[:5]])
    train_labels = np.concatenate([batches[f][1] for f in FILES[:5]])
    expected = {
        "train": (train_images[:-VALID], train_labels[:-VALID]),
        "valid": (train_images[-VALID:], train_labels[-VALID:]),
        "test": batches["test_batch.bin"],
    }
    for split, (images, labels) in expected.items():
        x_split = ds.splits[split]
        assert x_split.dtype == torch.float32 and ds.labels[split].dtype == torch.int64
        np.testing.assert_array_equal(x_split.numpy(), images.astype(np.float32) / np.float32(255))
        np.testing.assert_array_equal(ds.labels[split].numpy(), labels)
    assert (ds.splits["valid"][:, 0, 0, 0] * 255).round().tolist() == list(range(5 * N - VALID, 5 * N))
    assert float(min(v.min() for v in ds.splits.values())) >= 0.0
    assert float(max(v.max() for v in ds.splits.values())) <= 1.0


def test_archive_and_extracted_give_the_same_tensors(tmp_path, small, monkeypatch):
    _, raw = small
    write_extracted(tmp_path / "a", raw)
    outside = tmp_path / "b" / "escape.bin"
    archive = write_archive(
        tmp_path / "b", raw, extra={"../escape.bin": b"x", "cifar-10-batches-bin/x.bin": b"y"}
    )
    trust(monkeypatch, archive)
    a = load_dataset("cifar10", DataConfig(root=str(tmp_path / "a")))
    b = load_dataset("cifar10", DataConfig(root=str(tmp_path / "b")))
    assert b.meta["read_from"] == "archive" and b.meta["files"] == [str(archive)]
    for split in ("train", "valid", "test"):
        assert a.splits[split].equal(b.splits[split]) and a.labels[split].equal(b.labels[split])
    # read in place: nothing extracted, unexpected member names never touched
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar-10-binary.tar.gz"]
    assert not outside.exists()


def test_complete_extraction_is_preferred_over_the_archive(tmp_path, small):
    _, raw = small
    write_extracted(tmp_path, raw)
    write_archive(tmp_path, {})  # wrong md5 and no batches: would fail if it were read
    ds = load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert ds.meta["read_from"] == "extracted files"


def test_incomplete_extraction_falls_back_to_the_archive(tmp_path, small, monkeypatch):
    _, raw = small
    write_extracted(tmp_path, {"data_batch_1.bin": raw["data_batch_1.bin"]})
    trust(monkeypatch, write_archive(tmp_path, raw))
    assert load_dataset("cifar10", DataConfig(root=str(tmp_path))).meta["read_from"] == "archive"


# ------------------------------------------------------------------------------------------ errors


def test_archive_with_wrong_md5(tmp_path, small):
    _, raw = small
    archive = write_archive(tmp_path, raw)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    assert str(archive) in msg and "md5" in msg and cifar.CIFAR_MD5 in msg and "data.download=true" in msg


def corrupt(raw: dict[str, bytes], how: str) -> tuple[dict[str, bytes], str]:
    data = bytearray(raw["data_batch_3.bin"])
    if how == "truncated":
        data = data[:-5]
        expect = f"truncated: {N * 3073 - 5} bytes"
    elif how == "trailing":
        data += b"\x00"
        expect = "has trailing bytes"
    else:
        data[2 * 3073] = 10
        data[3 * 3073] = 255
        expect = "bad label 10 at record 2"
    return {**raw, "data_batch_3.bin": bytes(data)}, expect


@pytest.mark.parametrize("how", ["truncated", "trailing", "label"])
def test_corrupt_extracted_file(tmp_path, small, how):
    bad, expect = corrupt(small[1], how)
    directory = write_extracted(tmp_path, bad)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert str(directory / "data_batch_3.bin") in str(err.value) and expect in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "label"])
def test_corrupt_member_of_a_trusted_archive(tmp_path, small, monkeypatch, how):
    bad, expect = corrupt(small[1], how)
    archive = write_archive(tmp_path, bad)
    trust(monkeypatch, archive)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert f"{archive}:cifar-10-batches-bin/data_batch_3.bin" in str(err.value) and expect in str(err.value)


def test_archive_lacking_a_member(tmp_path, small, monkeypatch):
    raw = dict(small[1])
    del raw["test_batch.bin"]
    trust(monkeypatch, write_archive(tmp_path, raw))
    with pytest.raises(DataError, match="archive lacks cifar-10-batches-bin/test_batch.bin"):
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))


def test_not_a_gzip_archive(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"not a tarball")
    trust(monkeypatch, archive)
    with pytest.raises(DataError, match="cannot read the archive") as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    assert str(archive) in str(err.value)


def test_official_size_is_enforced_without_the_test_patch(tmp_path):
    directory = write_extracted(
        tmp_path, {name: file_bytes(*batch) for name, batch in synthetic_batches().items()}
    )
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    assert str(directory / "data_batch_1.bin") in msg
    assert f"truncated: {N * 3073} bytes" in msg and "10000 records of 3073 bytes = 30730000 bytes" in msg


def test_missing_everything(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    assert (
        "cifar-10-binary.tar.gz" in msg and str(tmp_path / "cifar10") in msg and "data.download=true" in msg
    )
    assert "https://www.cs.toronto.edu/~kriz/" in msg


def test_partial_extraction_without_archive_names_the_missing_files(tmp_path, small):
    write_extracted(tmp_path, {"data_batch_1.bin": small[1]["data_batch_1.bin"]})
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", DataConfig(root=str(tmp_path)))
    msg = str(err.value)
    assert "cifar-10-binary.tar.gz" in msg and "lacks data_batch_2.bin" in msg and "test_batch.bin" in msg


def test_download_fetches_the_archive_from_a_mirror(tmp_path, small, monkeypatch):
    mirror = tmp_path / "mirror"
    archive = write_archive(mirror, small[1])
    trust(monkeypatch, archive)
    root = tmp_path / "root"
    config = DataConfig(root=str(root), download=True, download_mirrors=(archive.parent.as_uri() + "/",))
    ds = load_dataset("cifar10", config)
    fetched = root / "cifar10" / "cifar-10-binary.tar.gz"
    assert fetched.read_bytes() == archive.read_bytes() and ds.meta["files"] == [str(fetched)]
    assert len(ds.splits["test"]) == N


# ------------------------------------------------------------------------------------------ registry


def test_kind_without_heavy_imports():
    code = (
        "import sys; from raygen.data import dataset_kind; print(dataset_kind('cifar10')); "
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["image", "[]"]
    assert dataset_kind("cifar10") == "image"


def test_list_datasets_locations(tmp_path, small, monkeypatch):
    def row():
        return {r.name: r for r in list_datasets(DataConfig(root=str(tmp_path)))}["cifar10"]

    d = tmp_path / "cifar10"
    archive = str(d / "cifar-10-binary.tar.gz")
    extracted = [str(d / "cifar-10-batches-bin" / f) for f in FILES]
    r = row()
    assert (r.kind, r.locations, r.present, r.missing) == ("image", [archive], False, [archive])
    assert "45k" in r.description and "5k" in r.description

    write_extracted(tmp_path, {"test_batch.bin": small[1]["test_batch.bin"]})
    r = row()
    assert r.locations == extracted and r.present is False and r.missing == extracted[:5]

    write_archive(tmp_path, small[1])
    r = row()
    assert r.locations == [archive] and r.present is True

    write_extracted(tmp_path, small[1])
    r = row()
    assert r.locations == extracted and r.present is True and r.missing == []


def test_cli_datasets_row(tmp_path):
    from raygen.cli import app

    res = CliRunner().invoke(app, ["datasets", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if "│ cifar10 " in line)
    assert [c.strip() for c in line.split("│")][1:4] == ["cifar10", "image", "no"]
