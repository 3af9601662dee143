"""The training loop's contract, checked with a closed-form algorithm (tests/toy_algorithm.py)."""

import pytest
import torch

from raygen.algorithms.base import NonFiniteLossError
from raygen.config import build_config
from raygen.data import load_dataset
from raygen.engine.loop import train

SMALL = {"eval.parzen_samples": 200, "eval.test_examples": 200, "data.toy_samples": 400, "train.batch_size": 50}


def _config(name, **overrides):
    return build_config(algorithm=name, dataset="toy2d:mog", overrides={**SMALL, **overrides})


class Collect:
    def __init__(self):
        self.reports = []

    def __call__(self, step, metrics, *, checkpoint=None, artifacts=()):
        self.reports.append((step, dict(metrics), checkpoint, list(artifacts)))


def test_budget_is_counted_in_optimizer_updates(toy_algorithm):
    report = Collect()
    algo = train(_config(toy_algorithm, **{"train.steps": 10, "algo.updates_per_step": 3}), report)
    # The loop stops at the first minibatch boundary at or after the budget.
    assert algo.updates == 12
    assert max(step for step, *_ in report.reports) == 12


def test_fits_closed_form_mean_and_reports_on_cadence(toy_algorithm):
    cfg = _config(
        toy_algorithm,
        **{"train.steps": 400, "train.lr": 0.05, "train.log_every": 100, "train.eval_every": 200,
           "train.checkpoint_every": 200},
    )
    report = Collect()
    algo = train(cfg, report)
    data = load_dataset("toy2d:mog", cfg.data).splits["train"]
    assert torch.allclose(algo.mean.detach(), data.mean(0), atol=0.05)
    assert torch.allclose(algo.log_std.exp().detach(), data.std(0), atol=0.05)
    train_steps = [s for s, m, *_ in report.reports if "train/nll" in m]
    valid_steps = [s for s, m, *_ in report.reports if "valid/nll" in m]
    ckpt_steps = [s for s, m, c, a in report.reports if c is not None]
    # Running averages every 100 updates; the final evaluation of the train split (eval.splits) is train_eval/.
    assert train_steps == [100, 200, 300, 400]
    assert valid_steps == [200, 400]
    assert ckpt_steps == [200, 400]
    final = report.reports[-1][1]
    assert {"test/nll", "train_eval/nll", "test/parzen_ll", "test/parzen_ll_se", "test/parzen_sigma"} <= set(final)
    assert not any(k.startswith("train/") for k in final)
    assert [a.name for a in report.reports[-1][3]] == ["params.txt"]


def test_a_final_evaluation_of_the_validation_split_has_its_own_name(toy_algorithm):
    """The quick validation at the last update and the full evaluation of the validation split are two protocols
    at one step: stored under one name they gave two different values for one (step, split, metric) key."""
    report = Collect()
    train(_config(toy_algorithm, **{"train.steps": 40, "train.log_every": 20, "train.eval_every": 20,
                                    "eval.splits": ["valid", "test"], "eval.test_examples": 50}), report)
    written: dict[tuple[int, str], list[float]] = {}
    for step, metrics, *_ in report.reports:
        for key, value in metrics.items():
            written.setdefault((step, key), []).append(value)
    assert all(len(values) == 1 for values in written.values()), {k: v for k, v in written.items() if len(v) > 1}
    final = report.reports[-1][1]
    assert "valid_eval/nll" in final and not any(k.startswith("valid/") for k in final)
    assert (40, "valid/nll") in written  # the quick validation of the last update stays where it was


def test_seeded_runs_are_identical_and_seeds_differ(toy_algorithm):
    runs = []
    for seed in (0, 0, 1):
        report = Collect()
        train(_config(toy_algorithm, **{"train.steps": 30, "train.log_every": 10, "seed": seed}), report)
        runs.append([m for _, m, *_ in report.reports])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_resume_from_checkpoint_matches_uninterrupted_run(toy_algorithm):
    cfg = _config(toy_algorithm, **{"train.steps": 40, "train.checkpoint_every": 20, "eval.final": False})
    full = train(cfg, Collect())
    first = Collect()
    train(cfg.with_overrides({"train.steps": 20}), first)
    checkpoint = [c for _, _, c, _ in first.reports if c is not None][-1]
    resumed = train(cfg, Collect(), resume=checkpoint)
    assert resumed.updates == 40
    assert torch.equal(resumed.mean, full.mean) and torch.equal(resumed.log_std, full.log_std)


def test_nan_loss_raises_named_error(toy_algorithm):
    with pytest.raises(NonFiniteLossError, match="nan"):
        train(_config(toy_algorithm, **{"train.steps": 20, "algo.explode_at": 5}), Collect())


def _scripted_validation(monkeypatch, values):
    """Replace MeanFit.evaluate: the quick evaluation returns values[update]; the full one reports which model
    it scores (its mean). Returns {update: the model's mean at that validation evaluation}."""
    from tests.toy_algorithm import MeanFit

    seen = {}

    def evaluate(self, data, split, *, full, generator):
        if full:
            return {"nll": 0.0, "mean0": float(self.mean[0])}
        seen[self.updates] = float(self.mean[0])
        return {"nll": values[self.updates]}

    monkeypatch.setattr(MeanFit, "evaluate", evaluate)
    return seen


def test_final_evaluation_scores_the_best_on_validation_state(toy_algorithm, monkeypatch):
    seen = _scripted_validation(monkeypatch, {10: 5.0, 20: 3.0, 30: 4.0, 40: 3.5, 50: 6.0})
    report = Collect()
    cfg = _config(toy_algorithm, **{"train.steps": 50, "train.eval_every": 10, "train.lr": 0.05,
                                    "eval.parzen": False})
    train(cfg, report)
    step, final, *_ = report.reports[-1]
    assert step == 50  # the rows are stored at the last update ...
    assert final["test/mean0"] == seen[20] != seen[50]  # ... but score the state of update 20 (nll 3, minimum)
    assert final["selection/step"] == 20 and final["selection/nll"] == 3.0


def test_select_mode_max_and_no_selection(toy_algorithm, monkeypatch):
    seen = _scripted_validation(monkeypatch, {10: 5.0, 20: 3.0, 30: 4.0})
    base = {"train.steps": 30, "train.eval_every": 10, "train.lr": 0.05, "eval.parzen": False}
    report = Collect()
    train(_config(toy_algorithm, **base, **{"train.select_metric": "nll", "train.select_mode": "max"}), report)
    assert report.reports[-1][1]["test/mean0"] == seen[10] and report.reports[-1][1]["selection/step"] == 10
    report = Collect()
    train(_config(toy_algorithm, **base, **{"train.select_best": False}), report)
    assert report.reports[-1][1]["test/mean0"] == seen[30] and report.reports[-1][1]["selection/step"] == 30


def test_early_stop_after_patience_evaluations_without_improvement(toy_algorithm, monkeypatch):
    seen = _scripted_validation(monkeypatch, {10: 5.0, 20: 3.0, 30: 4.0, 40: 3.0, 50: 1.0, 60: 0.5})
    report = Collect()
    cfg = _config(toy_algorithm, **{"train.steps": 60, "train.eval_every": 10, "train.patience": 2,
                                    "eval.parzen": False})
    algo = train(cfg, report)
    # 30 and 40 do not improve on 20 (equal is not better): stop at 40, never see the better 50.
    assert sorted(seen) == [10, 20, 30, 40] and algo.updates == 40
    assert report.reports[-1][0] == 40 and report.reports[-1][1]["selection/step"] == 20
    assert [c for _, _, c, _ in report.reports if c is not None][-1]["selection"]["best_step"] == 20


def test_selection_survives_resume(toy_algorithm, monkeypatch):
    seen = _scripted_validation(monkeypatch, {10: 1.0, 20: 3.0, 30: 4.0, 40: 5.0})
    base = {"train.eval_every": 10, "train.checkpoint_every": 20, "train.lr": 0.05, "eval.parzen": False}
    first = Collect()
    train(_config(toy_algorithm, **base, **{"train.steps": 20, "eval.final": False}), first)
    checkpoint = [c for _, _, c, _ in first.reports if c is not None][-1]
    report = Collect()
    train(_config(toy_algorithm, **base, **{"train.steps": 40}), report, resume=checkpoint)
    assert report.reports[-1][1]["selection/step"] == 10 and report.reports[-1][1]["test/mean0"] == seen[10]


def test_unknown_select_metric_is_a_clear_error(toy_algorithm):
    with pytest.raises(ValueError, match="select_metric='bogus'.*reports \\['nll'\\]"):
        train(_config(toy_algorithm, **{"train.steps": 10, "train.eval_every": 10, "train.select_metric": "bogus"}),
              Collect())


def test_without_a_selection_metric_the_last_state_is_evaluated(toy_algorithm, monkeypatch):
    from tests.toy_algorithm import MeanFit

    def evaluate(self, data, split, *, full, generator):
        return {"mean0": float(self.mean[0])}  # nothing to select by (no lower_bound, nll or loss)

    monkeypatch.setattr(MeanFit, "evaluate", evaluate)
    report = Collect()
    algo = train(_config(toy_algorithm, **{"train.steps": 30, "train.eval_every": 10, "train.patience": 1,
                                           "eval.parzen": False}), report)
    assert algo.updates == 30 and report.reports[-1][1]["test/mean0"] == float(algo.mean[0])
    assert not any(k.startswith("selection/") for k in report.reports[-1][1])


def test_a_non_finite_validation_value_is_never_selected(toy_algorithm, monkeypatch):
    seen = _scripted_validation(monkeypatch, {10: float("nan"), 20: 3.0, 30: float("-inf")})
    report = Collect()
    train(_config(toy_algorithm, **{"train.steps": 30, "train.eval_every": 10, "train.lr": 0.05,
                                    "eval.parzen": False}), report)
    assert report.reports[-1][1]["selection/step"] == 20 and report.reports[-1][1]["test/mean0"] == seen[20]
