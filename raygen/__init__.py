"""raygen: train, sweep and analyse learned-transition-operator generative models and Professor Forcing."""

__version__ = "0.1.0"
