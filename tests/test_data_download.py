"""Explicit downloads: file:// mirrors and a patched opener only — these tests never touch the network."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from raygen.data import DataConfig, DataError, load_dataset
from raygen.data import idx as idx_mod
from raygen.data.download import fetch, md5sum
from tests.shared_data import SHARED_DATA

SHARED_MNIST = SHARED_DATA / "mnist"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any non-file:// URL fails the test; the built-in MNIST mirrors are removed."""
    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        target = url if isinstance(url, str) else url.full_url
        if not target.startswith("file:"):
            raise AssertionError(f"test tried to reach the network: {target}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setattr(idx_mod, "MNIST_MIRRORS", ())


def mirror(tmp_path: Path, files: dict[str, bytes]) -> str:
    d = tmp_path / "mirror"
    d.mkdir(exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d.as_uri() + "/"


def test_fetch_verifies_and_writes_atomically(tmp_path):
    payload = b"some bytes" * 1000
    url = mirror(tmp_path, {"f.bin": payload})
    dest = tmp_path / "dest"
    path = fetch("f.bin", dest, hashlib.md5(payload).hexdigest(), [url])
    assert path == dest / "f.bin" and path.read_bytes() == payload
    assert md5sum(path) == hashlib.md5(payload).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == ["f.bin"]  # no temporary left behind


def test_checksum_mismatch_leaves_nothing(tmp_path):
    url = mirror(tmp_path, {"f.bin": b"tampered"})
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        fetch("f.bin", dest, "0" * 32, [url])
    msg = str(err.value)
    assert "checksum mismatch" in msg and "f.bin" in msg and str(dest / "f.bin") in msg
    assert list(dest.iterdir()) == []


def test_falls_through_to_next_mirror(tmp_path):
    payload = b"payload"
    good = mirror(tmp_path, {"f.bin": payload})
    missing = (tmp_path / "empty").as_uri() + "/"
    path = fetch("f.bin", tmp_path / "dest", hashlib.md5(payload).hexdigest(), [missing, good])
    assert path.read_bytes() == payload


def test_network_failure_names_file_and_directory(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dest = tmp_path / "mnist"
    with pytest.raises(DataError) as err:
        fetch("t10k-images-idx3-ubyte.gz", dest, None, ["https://example.invalid/mnist/"])
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(dest) in msg and "name resolution" in msg


def test_download_disabled_never_opens_a_url(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("download attempted although data.download=false")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    with pytest.raises(DataError, match="data.download=true"):
        load_dataset("mnist", DataConfig(root=str(tmp_path)))


def test_mnist_download_rejects_wrong_checksum(tmp_path):
    url = mirror(tmp_path, {"t10k-images-idx3-ubyte.gz": b"not mnist", "t10k-labels-idx1-ubyte.gz": b"x"})
    cfg = DataConfig(
        root=str(tmp_path / "root"), download=True, download_mirrors=(url,), mnist_split="test-only"
    )
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist", cfg)
    assert not (tmp_path / "root" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_mnist_download_from_local_mirror(tmp_path):
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{SHARED_MNIST} (the project's shared MNIST test set) is not on this machine")
    src = tmp_path / "mirror"
    shutil.copytree(SHARED_MNIST, src)
    cfg = DataConfig(
        root=str(tmp_path / "root"), download=True, download_mirrors=(src.as_uri(),), mnist_split="test-only"
    )
    ds = load_dataset("mnist", cfg)
    assert len(ds.splits["train"]) == 8000
    got = sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir())
    assert got == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
