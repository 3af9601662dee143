"""Shared test fixtures: a tiny registered algorithm for loop/store tests, and quiet determinism."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
torch.set_num_threads(1)


@pytest.fixture
def toy_algorithm(monkeypatch):
    """Register `tests.toy_algorithm:MeanFit` as algorithm 'meanfit' for loop and store tests."""
    from raygen import algorithms

    monkeypatch.setitem(algorithms._ALGORITHMS, "meanfit", "tests.toy_algorithm:MeanFit")
    return "meanfit"
