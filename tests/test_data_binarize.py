"""Binarization schemes (DL book §20.14) on the embedded digits and the pixel-sequence datasets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from raygen.data import DataConfig, DataError, load_dataset


@pytest.fixture(scope="module")
def probs():
    """The real-valued digits every scheme starts from."""
    return load_dataset("digits", DataConfig(binarize="none"))


def test_none_is_default_for_images(probs):
    ds = load_dataset("digits")
    assert ds.meta["binarize"] == "none" and not ds.binary
    assert ds.splits["train"].equal(probs.splits["train"])
    assert len(torch.unique(ds.splits["train"])) > 2


def test_threshold_exact(probs):
    ds = load_dataset("digits", DataConfig(binarize="threshold", threshold=0.3))
    assert ds.binary and ds.meta["binarize"] == "threshold" and ds.meta["threshold"] == 0.3
    for split, p in probs.splits.items():
        expected = (p.numpy() > 0.3).astype(np.float32)
        np.testing.assert_array_equal(ds.splits[split].numpy(), expected)
    assert ds.batch_transform is None


def test_fixed_is_deterministic_and_unbiased(probs):
    a = load_dataset("digits", DataConfig(binarize="fixed"))
    b = load_dataset("digits", DataConfig(binarize="fixed"))
    c = load_dataset("digits", DataConfig(binarize="fixed", split_seed=99))
    assert a.binary and a.meta["binarize"] == "fixed" and a.batch_transform is None
    for split in a.splits:
        assert a.splits[split].equal(b.splits[split])
        assert set(torch.unique(a.splits[split]).tolist()) <= {0.0, 1.0}
    assert not a.splits["train"].equal(c.splits["train"][: len(a.splits["train"])])
    # E[Bernoulli(p)] = p: the mean over ~80k train pixels matches the mean probability (binomial std < 0.002)
    p, x = probs.splits["train"], a.splits["train"]
    assert float(x.mean()) == pytest.approx(float(p.mean()), abs=0.01)
    # pixels with p = 0 or p = 1 are never flipped
    assert bool((x[p == 0] == 0).all()) and bool((x[p == 1] == 1).all())
    threshold = load_dataset("digits", DataConfig(binarize="threshold"))
    assert not x.equal(threshold.splits["train"])


def test_dynamic_fresh_draw_per_batch(probs):
    ds = load_dataset("digits", DataConfig(binarize="dynamic"))
    fixed = load_dataset("digits", DataConfig(binarize="fixed"))
    assert ds.binary and ds.meta["binarize"] == "dynamic"
    assert ds.splits["train"].equal(probs.splits["train"])  # probabilities; prepare_batch draws
    for split in ("valid", "test"):  # evaluation splits hold the fixed draw
        assert ds.splits[split].equal(fixed.splits[split])
    batch = ds.splits["train"][:100]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([ds.prepare_batch(batch, g) for _ in range(400)])
    assert set(torch.unique(draws).tolist()) <= {0.0, 1.0}
    assert not draws[0].equal(draws[1])
    # per-pixel mean of 400 draws is within 6 binomial standard deviations (<= 0.15) of p
    assert float((draws.mean(0) - batch).abs().max()) < 6 * (0.25 / 400) ** 0.5
    assert float(draws.mean()) == pytest.approx(float(batch.mean()), abs=0.005)
    # the same generator state gives the same batch (runs are reproducible)
    again = ds.prepare_batch(batch, torch.Generator().manual_seed(0))
    assert again.equal(draws[0])


def test_dynamic_dataset_pickles_for_ray():
    ds = load_dataset("digits", DataConfig(binarize="dynamic"))
    clone = pickle.loads(pickle.dumps(ds))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = ds.splits["train"][:5]
    assert clone.prepare_batch(x, g1).equal(ds.prepare_batch(x, g2))


def test_binarize_rejected_for_points():
    with pytest.raises(DataError, match="applies to image data"):
        load_dataset("toy2d:circle", DataConfig(binarize="threshold", toy_samples=20))


def test_seqdigits_default_threshold(probs):
    ds = load_dataset("seqdigits")
    assert ds.kind == "sequence" and ds.shape == (64,) and ds.vocab == ["0", "1"]
    assert ds.meta["binarize"] == "threshold" and ds.meta["image_shape"] == (1, 8, 8)
    assert ds.image_shape == (1, 8, 8)
    for split, p in probs.splits.items():
        expected = (p.reshape(len(p), -1).numpy() > 0.5).astype(np.int64)
        assert ds.splits[split].dtype == torch.int64
        np.testing.assert_array_equal(ds.splits[split].numpy(), expected)


def test_seqdigits_fixed_matches_image_fixed():
    seq = load_dataset("seqdigits", DataConfig(binarize="fixed"))
    img = load_dataset("digits", DataConfig(binarize="fixed"))
    assert seq.splits["test"].equal(img.splits["test"].reshape(len(img.splits["test"]), -1).long())


@pytest.mark.parametrize("scheme", ["none", "dynamic"])
def test_seqdigits_refuses_non_binary_schemes(scheme):
    with pytest.raises(DataError, match="needs binary pixels"):
        load_dataset("seqdigits", DataConfig(binarize=scheme))


def test_max_train_applies_after_binarization():
    full = load_dataset("digits", DataConfig(binarize="fixed"))
    capped = load_dataset("digits", DataConfig(binarize="fixed", max_train=10))
    assert capped.splits["train"].equal(full.splits["train"][:10])
    assert capped.labels["train"].equal(full.labels["train"][:10])
    seq = load_dataset("seqdigits", DataConfig(max_train=7))
    assert len(seq.splits["train"]) == 7 and seq.meta["max_train"] == 7
