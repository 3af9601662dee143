"""raygen: train, sweep and analyse learned-transition-operator generative models and Professor Forcing."""

__version__ = "0.1.0"


def sweep(spec, results="results", **options):
    """Run a sweep from Python: `raygen.sweep("sweeps/x.yaml" | {spec as a dict} | resolved, results=...,
    smoke=False, resume=None, more=0, address=None, verbose=False)`. Returns a SweepResult with `.trials` (one
    row per trial), `.best_trial` and `.result_grid` (Tune's ResultGrid). Imported lazily: Ray loads on first use."""
    from raygen.engine.sweep import sweep as run

    return run(spec, results, **options)
