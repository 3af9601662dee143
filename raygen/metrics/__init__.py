"""Metrics: Parzen windows, lower bounds and importance sampling, reversibility, BPC, hidden-state distances."""
