"""Inception score and Fréchet distance: arithmetic against closed forms and direct computations, and the
feature-extractor interface with a small TorchScript network of the same interface."""

import math

import numpy as np
import pytest
import torch

from raygen.metrics.inception import (
    extract,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    inception_score,
    load_feature_extractor,
)


def test_inception_score_closed_forms():
    # confident predictions spread evenly over K classes: IS = K; identical predictions: IS = 1
    k = 5
    onehot = np.eye(k)[np.arange(100) % k]
    assert inception_score(onehot, splits=1) == pytest.approx((k, 0.0))
    same = np.tile(np.array([[0.2, 0.3, 0.5]]), (40, 1))
    assert inception_score(same, splits=4)[0] == pytest.approx(1.0)


def test_inception_score_matches_a_direct_computation_per_split():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    direct = []
    for part in (p[:20], p[20:40], p[40:]):
        m = part.mean(0)
        direct.append(math.exp(np.mean([sum(r[j] * math.log(r[j] / m[j]) for j in range(4)) for r in part])))
    assert inception_score(p, splits=3) == pytest.approx((np.mean(direct), np.std(direct)), rel=1e-12)
    with pytest.raises(ValueError, match="probability vector"):
        inception_score(logits)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    exact = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(exact, rel=1e-10)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 3))
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-8)
    mu, cov = feature_statistics(a)
    assert np.allclose(cov, np.cov(a.T)) and np.allclose(mu, a.mean(0))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Linear(3 * 4 * 4, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x.flatten(1))
        return self.head(f), f


def test_feature_extractor_from_a_torchscript_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    net = _Tiny()
    torch.jit.script(net).save(str(path))
    loaded = load_feature_extractor(path)
    images = torch.rand(10, 1, 4, 4)
    probs, feats = extract(loaded, images, batch_size=4)
    ref_logits, ref_feats = net(images.expand(-1, 3, -1, -1))
    assert torch.allclose(feats, ref_feats.double(), atol=1e-6)
    assert torch.allclose(probs, torch.softmax(ref_logits.double(), 1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="raygen downloads none"):
        load_feature_extractor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_feature_extractor(tmp_path / "junk.pt")


def test_classifier_stand_in_scores_a_balanced_separable_set():
    from raygen.metrics.inception import train_classifier

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    images = (torch.rand(200, 1, 4, 4, generator=g) * 0.2 + labels[:, None, None, None] * 0.8).clamp(0, 1)
    net = train_classifier(images, labels, hidden=(16, 8), steps=1500, lr=1e-2)
    probs, feats = extract(net, images)
    assert float((probs.argmax(1) == labels).double().mean()) == 1.0
    # confident, balanced predictions over 2 classes: the score approaches 2 (the closed form for one-hot)
    assert inception_score(probs, splits=1)[0] == pytest.approx(2.0, abs=0.1)
    assert frechet_distance_features(feats[:100], feats[:100]) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance_features(feats[labels == 0], feats[labels == 1]) > 1.0
