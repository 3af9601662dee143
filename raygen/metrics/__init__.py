"""Metrics: Parzen windows, lower bounds and importance sampling, reversibility, BPC, hidden-state distances,
AIS for decoder-based models, Inception score and FID on a user-supplied feature network.

Pure functions over tensors (most also take numpy arrays); no algorithm knowledge. The algorithms produce
the raw quantities (samples, log-weights, per-step log-probabilities, hidden states) and call these.
"""

from raygen.metrics.ais import AISConfig, AISResult, ais_log_likelihood, ais_schedule
from raygen.metrics.chains import nearest_neighbours, reversibility_ratio
from raygen.metrics.inception import (
    frechet_distance,
    frechet_distance_features,
    inception_score,
    load_feature_extractor,
)
from raygen.metrics.likelihood import (
    bernoulli_log_prob,
    bits_per_dim,
    bits_per_dim_estimates,
    dequantize,
    gaussian_log_prob,
    importance_estimates,
    mean_std,
    summarise_repeats,
)
from raygen.metrics.parzen import DEFAULT_SIGMAS, parzen_evaluate, parzen_log_likelihood, select_parzen_sigma
from raygen.metrics.sequence import bits_per_char, hidden_state_distances

__all__ = [
    "DEFAULT_SIGMAS",
    "AISConfig",
    "AISResult",
    "ais_log_likelihood",
    "ais_schedule",
    "bernoulli_log_prob",
    "bits_per_char",
    "bits_per_dim",
    "bits_per_dim_estimates",
    "dequantize",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_log_prob",
    "hidden_state_distances",
    "importance_estimates",
    "inception_score",
    "load_feature_extractor",
    "mean_std",
    "nearest_neighbours",
    "parzen_evaluate",
    "parzen_log_likelihood",
    "reversibility_ratio",
    "select_parzen_sigma",
    "summarise_repeats",
]
