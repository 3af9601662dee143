"""Sequence-model metrics: bits per character and teacher-forced vs free-running hidden-state distances."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import torch

from raygen.metrics._inputs import as_matrix, check_same_dim
from raygen.metrics.chains import nearest_neighbours

T = TypeVar("T", float, torch.Tensor)


def bits_per_char(nll_nats: T) -> T:
    """Mean per-character negative log-likelihood converted from nats to bits: nll / ln 2.

    Professor Forcing evaluates character-level Penn Treebank in BPC; the papers do not print the formula,
    this is the standard one (bits = nats / ln 2). Accepts a float or a tensor (returned in kind).
    """
    return nll_nats / math.log(2.0)


def hidden_state_distances(
    teacher_states: Any, free_states: Any, reference_states: Any | None = None
) -> dict[str, float]:
    """How far free-running hidden states drift from teacher-forced ones (Professor Forcing Fig 2.3).

    teacher_states: (N, H) GRU states collected with teacher forcing; free_states: (M, H) states of the same
    network sampling freely (e.g. at one time step, t = 500 in the paper). Extra leading dims are flattened.
    Returns floats:
      centroid_distance: Euclidean distance between the means of the two clouds — the paper's "mean centroid
        distance" (3000 → 1800, TF → PF).
      nearest_free_distance: mean over teacher-forced states of the distance to the nearest free-running
        state — the paper's "mean distance from a training-network hidden state to a sampling-network hidden
        state" (22.8 → 16.4).
    With `reference_states` — a second, disjoint set of teacher-forced states (same step, other sequences,
    ideally as many as free_states: nearest-neighbour distances shrink as the cloud grows) — also the
    noise floor and the scale-free versions, all divided by the teacher cloud's spread
    s = sqrt(mean ‖h − μ‖²) (`spread`, μ the teacher states' mean):
      centroid_distance_rel, nearest_free_distance_rel: the two distances above / s;
      centroid_baseline_rel, nearest_baseline_rel: the same two distances between teacher_states and
        reference_states / s — what two samples of the *same* (teacher-forced) distribution give; a
        free-running cloud at this level is indistinguishable by these measures.
    Interpretation: the paper measured these in the 2-D T-SNE embeddings (averaged over 30 T-SNEs); raygen
    measures them in the raw hidden-state space, which is deterministic and not distorted by T-SNE. The
    absolute values are therefore not comparable with the paper's; compare TF vs PF (the relative reduction)
    and each against its baseline. Lower is better: PF's aim is that free-running dynamics stay where
    teacher-forced ones go.
    """
    t = as_matrix("teacher_states", _flatten_states("teacher_states", teacher_states))
    f = as_matrix("free_states", _flatten_states("free_states", free_states), device=t.device)
    check_same_dim("teacher_states", t, "free_states", f)
    _, dist = nearest_neighbours(t, f)
    out = {
        "centroid_distance": float((t.mean(0) - f.mean(0)).norm()),
        "nearest_free_distance": float(dist.mean()),
    }
    if reference_states is None:
        return out
    r = as_matrix("reference_states", _flatten_states("reference_states", reference_states), device=t.device)
    check_same_dim("teacher_states", t, "reference_states", r)
    spread = float(t.sub(t.mean(0)).pow(2).sum(1).mean().sqrt())
    if spread == 0.0:
        raise ValueError("teacher_states are all equal (spread 0): relative distances are undefined")
    _, base = nearest_neighbours(t, r)
    return {
        **out,
        "spread": spread,
        "centroid_distance_rel": out["centroid_distance"] / spread,
        "nearest_free_distance_rel": out["nearest_free_distance"] / spread,
        "centroid_baseline_rel": float((t.mean(0) - r.mean(0)).norm()) / spread,
        "nearest_baseline_rel": float(base.mean()) / spread,
    }


def _flatten_states(name: str, x: Any) -> Any:
    shape = tuple(x.shape) if hasattr(x, "shape") else ()
    if len(shape) < 2:
        raise ValueError(f"{name} must have shape (..., hidden_size), got {shape}")
    return x.reshape(-1, shape[-1])
