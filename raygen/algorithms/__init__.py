"""Algorithm registry. Each algorithm is one module; its class is imported only when asked for."""

from __future__ import annotations

import importlib

from raygen.algorithms.base import Algorithm, Artifact

_ALGORITHMS = {
    "walkback": "raygen.algorithms.walkback:Walkback",
    "infusion": "raygen.algorithms.infusion:Infusion",
    "professor": "raygen.algorithms.sequence:ProfessorForcing",
    "teacher": "raygen.algorithms.sequence:TeacherForcing",
    "scheduled": "raygen.algorithms.sequence:ScheduledSampling",
    "vae": "raygen.algorithms.vae:VAE",
    "gan": "raygen.algorithms.gan:GAN",
    "gmmn": "raygen.algorithms.gmmn:GMMN",
    "net": "raygen.algorithms.diffusion:NET",
    "ddpm": "raygen.algorithms.diffusion:DDPM",
    "gsn": "raygen.algorithms.gsn:GSN",
}


def algorithm_names() -> list[str]:
    return list(_ALGORITHMS)


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in _ALGORITHMS:
        raise KeyError(f"unknown algorithm '{name}' (known: {', '.join(_ALGORITHMS)})")
    module, attr = _ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["Algorithm", "Artifact", "algorithm_class", "algorithm_names"]
