"""BPC and hidden-state distances on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raygen.metrics import bits_per_char, hidden_state_distances


def test_bits_per_char_hand_computed():
    # A uniform model over 4 characters costs ln 4 nats = exactly 2 bits per character.
    assert bits_per_char(math.log(4)) == pytest.approx(2.0, rel=1e-15)
    assert bits_per_char(0.0) == 0.0
    t = bits_per_char(torch.tensor([math.log(2), math.log(8)]))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.tensor([1.0, 3.0]))


def test_hidden_state_distances_symmetric_clouds():
    teacher = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # centroid (1, 0)
    free = torch.tensor([[1.0, 3.0], [1.0, 5.0]])  # centroid (1, 4)
    out = hidden_state_distances(teacher, free)
    assert out["centroid_distance"] == pytest.approx(4.0)
    # Both teacher states are √(1² + 3²) from their nearest free state (1, 3).
    assert out["nearest_free_distance"] == pytest.approx(math.sqrt(10))


def test_hidden_state_distances_far_outlier_moves_centroid_not_nearest():
    teacher = np.array([[0.0, 0.0], [10.0, 0.0]])  # centroid (5, 0)
    free = np.array([[0.0, 1.0], [9.0, 0.0], [101.0, 101.0]])  # centroid (110/3, 102/3)
    out = hidden_state_distances(teacher, free)
    assert out["centroid_distance"] == pytest.approx(math.hypot(110 / 3 - 5, 102 / 3))
    assert out["nearest_free_distance"] == pytest.approx(1.0)  # (0,0)→(0,1) and (10,0)→(9,0)


def test_hidden_state_distances_direction_is_teacher_to_free():
    teacher = torch.tensor([[0.0], [10.0]])
    free = torch.tensor([[0.0]])
    # Mean over teacher states of the distance to the nearest free state: (0 + 10) / 2, not 0.
    assert hidden_state_distances(teacher, free)["nearest_free_distance"] == pytest.approx(5.0)
    assert hidden_state_distances(free, teacher)["nearest_free_distance"] == pytest.approx(0.0)


def test_hidden_state_distances_flattens_leading_dims():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 4, 3, generator=g)  # (time, batch, hidden)
    free = torch.randn(2, 6, 3, generator=g)
    out = hidden_state_distances(teacher, free)
    t, f = teacher.reshape(-1, 3).double().numpy(), free.reshape(-1, 3).double().numpy()
    pair = np.linalg.norm(t[:, None, :] - f[None, :, :], axis=2)  # brute force, (20, 12)
    assert out["nearest_free_distance"] == pytest.approx(pair.min(axis=1).mean(), rel=1e-12)
    assert out["centroid_distance"] == pytest.approx(np.linalg.norm(t.mean(0) - f.mean(0)), rel=1e-12)
    with pytest.raises(ValueError, match="same number of dimensions"):
        hidden_state_distances(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="hidden_size"):
        hidden_state_distances(torch.zeros(4), torch.zeros(3, 4))
