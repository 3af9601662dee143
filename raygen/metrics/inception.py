"""Inception score (Salimans et al. 2016; VW §3.16, Infusion TAB 3.2) and Fréchet distance (FID, Heusel et al.
2017) on the outputs of a feature network the user supplies.

The Inception-v3 weights these scores are defined with cannot be downloaded by raygen (nothing is fetched
implicitly, and machines may be offline). `load_feature_extractor(path)` loads a TorchScript file whose
forward maps images (N, 3, H, W) in [0, 1] to `(logits (N, C), features (N, F))` — e.g. the standard
Inception-v3 weights a user already has, exported once with `torch.jit.script`/`trace` behind a small wrapper
that resizes to 299×299 and returns (class logits, 2048-d pool features). Scores computed with any other
network are other scores and must be named as such.

    IS = exp(E_x KL(p(y | x) ‖ p(y))),  p(y) the mean of p(y | x) over the split; mean ± std over `splits`
         splits (Salimans et al.: 10 splits of 50 000 samples)
    FID = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})  (feature means and covariances, ddof = 1)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def inception_score(probs: torch.Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception score over `splits` equal splits of the class probabilities (N, C)."""
    import scipy.special  # here, not at import: `import raygen.metrics` stays cheap

    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"inception_score needs class probabilities of shape (N, C), got {p.shape}")
    if not np.all(np.isfinite(p)) or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("inception_score: each row must be a probability vector (softmax the logits first)")
    if not 1 <= splits <= len(p):
        raise ValueError(f"inception_score: splits must be between 1 and the number of samples {len(p)}, got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = scipy.special.rel_entr(part, marginal).sum(1)  # Σ_y p log(p / p(y)), with 0 log 0 = 0
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) (ddof = 1) of features (N, F), float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 feature vectors of shape (N, F), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    import scipy.linalg

    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (len(mu_a), len(mu_a)):
        raise ValueError(f"frechet_distance: shapes do not match: {mu_a.shape}, {cov_a.shape}, {mu_b.shape}, {cov_b.shape}")
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(root)):  # singular product: regularise both covariances slightly (FID convention)
        eps = 1e-6 * np.eye(len(mu_a))
        root = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)  # rounding leaves a tiny imaginary part on a product of PSD matrices
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def frechet_distance_features(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of feature vectors (N, F) and (M, F)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def load_feature_extractor(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript network at `path` (see the module docstring for its interface), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature extractor not found: {path} (a TorchScript file; raygen downloads none)")
    try:
        net = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not a TorchScript file ({str(err).splitlines()[0]})") from None
    return net.eval()


def extract(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities (N, C), features (N, F)) of images (N, 3, H, W) in [0, 1]; grey images are repeated
    to three channels."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"extract needs images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    device = next(iter(net.parameters()), torch.empty(0)).device
    probs, feats = [], []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            x = images[lo : lo + batch_size].to(device).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out = net(x)
            if not (isinstance(out, tuple) and len(out) == 2 and out[0].dim() == 2 and out[1].dim() == 2):
                raise ValueError("the feature extractor must return (logits (N, C), features (N, F))")
            probs.append(torch.softmax(out[0].double(), 1).cpu())
            feats.append(out[1].double().cpu())
    return torch.cat(probs), torch.cat(feats)


# ---------------------------------------------------------------------------------------------- offline stand-in


class ClassifierFeatures(torch.nn.Module):
    """An MLP classifier of the dataset's own labels with the extractor interface: images → (logits, features
    of the last hidden layer). Scores computed with it are raygen's *classifier score* and *classifier FID* —
    a different score from the Inception score and FID, meaningful only between models of the same dataset."""

    def __init__(self, in_dim: int, classes: int, hidden: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for a, b in zip((in_dim, *hidden[:-1]), hidden):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(hidden[-1], classes)
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != self.in_dim:  # grey images arrive expanded to 3 channels by `extract`
            flat = x[:, :1].reshape(len(x), -1)
        f = self.body(flat)
        return self.head(f), f


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden: tuple[int, ...] = (256, 128),
    steps: int = 2000,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> ClassifierFeatures:
    """Fit `ClassifierFeatures` to (images (N, ...), int labels (N,)) by Adam on the cross-entropy."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"train_classifier needs as many labels as images, got {len(images)} and {len(labels)}")
    labels = labels.long()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ClassifierFeatures(images[0].numel(), int(labels.max()) + 1, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x = images.reshape(len(images), -1).float()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x[idx])[0], labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()
