"""raygen: train, sweep and analyse learned-transition-operator generative models and Professor Forcing.

The Python API (the same runs, store and files as the `raygen` command):

    import raygen
    run = raygen.train("walkback", "toy2d:mog", steps=500)   # -> Run: .final, .metrics, .curve(), .sample(n)
    store = raygen.open("results")                           # -> Store: .runs, .metrics, .artifacts, .run(id)
    out = raygen.sweep("sweeps/x.yaml", smoke=True)          # -> SweepResult: .trials, .best_trial

Importing raygen is cheap: torch, pandas and Ray load when a function first needs them.
"""

from raygen.api import Run, Samples, Store, evaluate_run, open, sample_run, train

__version__ = "0.1.0"

__all__ = ["Run", "Samples", "Store", "__version__", "evaluate_run", "open", "sample_run", "sweep", "train"]


def sweep(spec, results="results", **options):
    """Run a sweep from Python: `raygen.sweep("sweeps/x.yaml" | {spec as a dict} | resolved, results=...,
    smoke=False, resume=None, more=0, address=None, verbose=False)`. Returns a SweepResult with `.trials` (one
    row per trial), `.best_trial` and `.result_grid` (Tune's ResultGrid). Imported lazily: Ray loads on first use."""
    from raygen.engine.sweep import sweep as run

    return run(spec, results, **options)
