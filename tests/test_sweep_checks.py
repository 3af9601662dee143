"""Sweeps that fail fast, stop at the right time and tell Optuna the truth (issue 11), without a Ray cluster:
resource preflight, metric names, stepped ranges, grid sizes, cross-field rules, ASHA at max_t, Optuna states,
divergence, null vs inactive, the failure cause, the live table and the one definition of "best"."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from raygen.engine import sweep as sw
from raygen.engine.resources import ClusterShape, ResourceError, check_request, train_bundles
from raygen.engine.sweep_spec import GRID_CAP, SpecError, grid_points, grid_size, load_spec, rankable, resolve
from raygen.results import read_metrics, read_runs

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
LAPTOP = ClusterShape([{"CPU": 2.0}])  # a 2-CPU machine without a GPU

BASE = {
    "name": "unit",
    "algorithm": "walkback",
    "dataset": "toy2d:swissroll",
    "fixed": {"algo.net.hidden": [16]},
    "metric": {"name": "valid/lower_bound", "goal": "maximize"},
    "run_cap": 8,
    "parameters": {"train.lr": {"min": 1.0e-4, "max": 1.0e-2, "log": True}},
}


def spec(**changes):
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


# ---------------------------------------------------------------------------------------------- 1 resources


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_specs_pass_preflight_on_a_laptop_in_smoke_mode(path):
    smoke = load_spec(path, smoke=True)
    check_request(smoke.resources.ray_bundles(), LAPTOP, what="each trial")
    full = load_spec(path)
    if full.resources.gpu > 0:
        with pytest.raises(ResourceError) as err:
            check_request(full.resources.ray_bundles(), LAPTOP, what="each trial")
        message = str(err.value)
        assert "\n" not in message and "no node has any GPU" in message
        assert f"GPU {full.resources.gpu:g}" in message and "CPU 2 (1 node)" in message


def test_requests_the_cluster_cannot_place_are_refused_with_what_was_asked_and_what_exists():
    two_workers = resolve(spec(resources={"workers": 2, "cpu": 1})).resources
    with pytest.raises(ResourceError, match=r"asks for CPU 2\.1 .*the cluster has CPU 2 \(1 node\): short of CPU 0\.1"):
        check_request(two_workers.ray_bundles(), LAPTOP, what="each trial")
    with pytest.raises(ResourceError, match="asks for CPU 1, GPU 0.25.*no node has any GPU"):
        check_request(resolve(spec(resources={"gpu": 0.25})).resources.ray_bundles(), LAPTOP, what="each trial")
    # `raygen train --workers 3` on 2 CPUs
    with pytest.raises(ResourceError, match=r"--workers 3 asks for CPU 3 .*short of CPU 1"):
        check_request(train_bundles(3, 1.0, 0.0), LAPTOP, what="--workers 3")
    # A bundle must fit one node, even when the totals would hold it.
    with pytest.raises(ResourceError, match="no node has"):
        check_request([{"CPU": 2}], ClusterShape([{"CPU": 1}, {"CPU": 1}]), what="x")
    check_request(two_workers.ray_bundles(), ClusterShape([{"CPU": 2}, {"CPU": 1}]), what="x")  # fits
    # An autoscaler that can launch GPU nodes makes a GPU request placeable.
    check_request([{"CPU": 1, "GPU": 1}], ClusterShape([{"CPU": 2}], [({"CPU": 8, "GPU": 1}, 4)]), what="x")


def test_a_sweep_refused_by_the_preflight_leaves_nothing_in_the_store(tmp_path, monkeypatch):
    """The resolved spec was written before the check: the refused sweep was listed (empty) by the dashboard
    and the report."""
    for name in ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
                 "TUNE_GLOBAL_CHECKPOINT_S", "RAY_AIR_NEW_OUTPUT"):  # run_sweep sets them; restored afterwards
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    monkeypatch.setattr(sw, "ensure_ray", lambda *a, **k: True)
    monkeypatch.setattr("raygen.engine.resources.cluster_shape", lambda: LAPTOP)
    with pytest.raises(SpecError, match="resources: each trial of unit asks for CPU 1, GPU 0.25.*no node has any GPU"):
        sw.run_sweep(resolve(spec(resources={"gpu": 0.25})), tmp_path)
    assert not sw.spec_path(tmp_path, "unit").exists()
    assert not any(p.is_file() for p in tmp_path.rglob("*")), sorted(tmp_path.rglob("*"))


def test_pending_timeout_is_a_spec_field_with_a_bound():
    assert resolve(spec()).pending_timeout_s == 300.0
    assert resolve(spec(pending_timeout_s=5)).pending_timeout_s == 5
    with pytest.raises(SpecError, match="pending_timeout_s"):
        resolve(spec(pending_timeout_s=0))


class _Trial(SimpleNamespace):
    pass


def test_a_trial_pending_too_long_while_nothing_runs_fails_and_stops_the_sweep(tmp_path, monkeypatch):
    resolved = resolve(spec(pending_timeout_s=0.05, fixed={"algo.net.hidden": [16], "train.steps": 10}))
    config = {sw.JOB_KEY: sw._job(resolved, tmp_path, str(tmp_path / "tune")), "train.lr": 1e-3}
    stop = sw.SweepStop()
    callback = sw.StoreCallback(str(tmp_path), resolved, stop)
    monkeypatch.setattr("raygen.engine.resources.cluster_shape", lambda: LAPTOP)
    running = _Trial(trial_id="r1", status="RUNNING", config=config, last_result={})
    pending = _Trial(trial_id="p1", status="PENDING", config=config, last_result={})
    callback.on_step_end(0, [running, pending])
    time.sleep(0.1)
    callback.on_step_end(1, [running, pending])
    assert not stop.stop_all()  # waiting behind the sweep's own running trial is normal
    callback.on_step_end(2, [pending])
    time.sleep(0.1)
    callback.on_step_end(3, [pending])
    assert stop.stop_all() and "waited" in stop.reason and "p1" in stop.reason
    row = read_runs(tmp_path).set_index("run_id").loc["unit-p1"]
    assert row["status"] == "failed" and row["error"].startswith("ResourceError: waited")


# ---------------------------------------------------------------------------------------------- 2 metric names


def test_unknown_metric_names_are_refused_with_a_suggestion():
    with pytest.raises(SpecError, match=r"metric\.name: 'valid/lowerbound' is not a metric walkback reports "
                                        r"\(did you mean 'valid/lower_bound'"):
        resolve(spec(metric={"name": "valid/lowerbound", "goal": "maximize"}))
    with pytest.raises(SpecError, match=r"early_terminate\.metric: 'valid/lowr_bound'.*did you mean 'valid/lower_bound'"):
        resolve(spec(early_terminate={"type": "asha", "metric": "valid/lowr_bound", "goal": "maximize"}))
    with pytest.raises(SpecError, match=r"'tset/lower_bound'.*its splits are"):
        resolve(spec(metric={"name": "tset/lower_bound", "goal": "maximize"}))
    # What the final evaluation reports is known too (importance only in the full evaluation).
    resolve(spec(metric={"name": "test/importance", "goal": "maximize"}))
    resolve(spec(metric={"name": "train_eval/lower_bound", "goal": "maximize"}))
    with pytest.raises(SpecError, match="test/importance"):
        resolve(spec(metric={"name": "test/importance", "goal": "maximize"}, fixed={"eval.splits": ["valid"]}))
    # the validation split's full evaluation is valid_eval/ (valid/ is the quick evaluation during training)
    resolve(spec(metric={"name": "valid_eval/importance", "goal": "maximize"}, fixed={"eval.splits": ["valid"]}))
    with pytest.raises(SpecError, match="valid/importance"):
        resolve(spec(metric={"name": "valid/importance", "goal": "maximize"}, fixed={"eval.splits": ["valid"]}))
    # an objective from a split the config does not evaluate says which setting is missing (it listed splits)
    with pytest.raises(SpecError, match=r"valid_eval/ comes from the final evaluation of the valid split, which "
                                        r"needs eval.final=true and valid in eval.splits \(now \['test'\]\)"):
        resolve(spec(metric={"name": "valid_eval/lower_bound", "goal": "maximize"}, fixed={"eval.splits": ["test"]}))
    with pytest.raises(SpecError, match=r"test/ comes from .* \(now off\)"):
        resolve(spec(metric={"name": "test/lower_bound", "goal": "maximize"}, fixed={"eval.final": False}))
    with pytest.raises(SpecError) as refused:  # a name reported under two patterns is suggested once
        resolve(spec(algorithm="infusion", dataset="digits", metric={"name": "valid/lowerbound", "goal": "maximize"},
                     parameters={"train.lr": {"min": 1e-4, "max": 1e-2}}))
    hint = str(refused.value).split("did you mean ")[1].split("?")[0].split(", ")
    assert "'valid/lower_bound'" in hint and len(hint) == len(set(hint))


def test_declared_metric_names_cover_what_a_real_run_reports(tmp_path):
    """The declaration is checked against a real (tiny) walkback run's store rows, not against itself."""
    from raygen.config import build_config
    from raygen.engine.local import run_local
    from raygen.engine.sweep_spec import metric_known, reported_metrics

    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll", overrides={
        "train.steps": 20, "train.log_every": 10, "train.eval_every": 10, "train.checkpoint_every": 20,
        "algo.net.hidden": [8], "algo.walkback_steps": 2, "algo.reversibility_steps": 0,
        "eval.test_examples": 20, "eval.train_examples": 10, "eval.likelihood_samples": 2, "eval.repeats": 2,
        "eval.parzen": False, "train.progress": False})
    run_local(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    names = {f"{s}/{m}" for s, m in zip(rows["split"], rows["metric"])}
    known = reported_metrics(cfg)
    assert ", ".join(sorted(n for n in names if not metric_known(n, known))) == ""


def _send_to(sent):
    return lambda payload, data: sent.append((payload, data))


def test_first_evaluation_fails_a_misnamed_objective_of_an_undeclared_algorithm(tmp_path, toy_algorithm):
    # meanfit declares no metric names: validation cannot know, the first valid/ evaluation can.
    resolved = resolve({**spec(algorithm="meanfit", parameters={"train.lr": {"min": 1e-3, "max": 1e-2}},
                               metric={"name": "valid/nl", "goal": "minimize"}),
                        "fixed": {"train.steps": 40, "train.eval_every": 10, "train.log_every": 10,
                                  "train.checkpoint_every": 20, "train.progress": False}})
    config = {sw.JOB_KEY: sw._job(resolved, tmp_path, str(tmp_path)), "train.lr": 1e-3}
    sent = []
    sw.run_trial(config, "t1", send=_send_to(sent))
    assert sent[-1][0][sw.FAILED_KEY] == sw.METRIC and "valid/nl" in sent[-1][0]["error"]
    row = read_runs(tmp_path).iloc[0]
    assert row["status"] == "failed" and row["steps"] == 10  # stopped at the first evaluation, not the last


# ---------------------------------------------------------------------------------------------- 3 stepped ranges


def test_stepped_ranges_state_and_store_the_bound_that_runs():
    resolved = resolve(spec(parameters={"algo.walkback_steps": {"min": 10, "max": 42, "q": 5},
                                        "algo.alpha": {"min": 0.1, "max": 1.0, "q": 0.25}}))
    by_name = {p.name: p for p in resolved.params}
    # Optuna's own distributions, independently, lower the bounds to the same values.
    assert by_name["algo.walkback_steps"].high == optuna.distributions.IntDistribution(10, 42, step=5).high == 40
    assert by_name["algo.alpha"].high == pytest.approx(
        optuna.distributions.FloatDistribution(0.1, 1.0, step=0.25).high) == pytest.approx(0.85)
    text = resolved.describe()
    assert "max 42 is not min + k*step: runs up to 40" in text and "runs up to 0.85" in text
    stored = resolved.to_json()["parameters"]
    assert stored["algo.walkback_steps"]["high"] == 40 and stored["algo.walkback_steps"]["written_max"] == 42
    assert resolve(spec(parameters={"algo.walkback_steps": {"min": 10, "max": 40, "q": 5}})).params[0].written_max is None


def test_the_tune_equivalent_shown_for_a_stepped_range_draws_what_optuna_draws():
    """Tune's qrandint/quniform draw multiples of q; a range starting off a multiple needs another equivalent."""
    from ray import tune

    param = resolve(spec(parameters={"algo.walkback_steps": {"min": 1, "max": 12, "q": 5}})).params[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    drawn = {study.ask().suggest_int("k", 1, 12, step=5) for _ in range(100)}
    assert drawn == {1, 6, 11}
    assert "tune.choice([1, 6, 11])" in param.tune_repr()
    naive = tune.qrandint(1, 11, 5)  # what validate used to print
    assert {naive.sample() for _ in range(100)} != drawn
    aligned = resolve(spec(parameters={"train.batch_size": {"min": 20, "max": 100, "q": 20}})).params[0]
    assert aligned.tune_repr() == "tune.qrandint(20, 100, 20)"


def test_spec_key_spelled_as_other_tools_spell_it_gets_the_right_name():
    with pytest.raises(SpecError, match=r"unknown key 'parameters.algo.walkback_steps.step' \(did you mean 'q'\?\)"):
        resolve(spec(parameters={"algo.walkback_steps": {"min": 10, "max": 40, "step": 5}}))
    with pytest.raises(SpecError) as refused:  # only a parameter's own keys: `step` at the top is no `q`
        resolve(spec(step=5))
    assert "unknown key 'step'" in str(refused.value) and "'q'" not in str(refused.value)


def test_gp_refuses_conditional_parameters_like_cmaes():
    conditional = {"algo.schedule": {"values": ["geometric", "sqrt2"]},
                   "algo.factor": {"min": 1.05, "max": 2.0, "when": {"algo.schedule": "geometric"}}}
    for method in ("gp", "cmaes"):
        with pytest.raises(SpecError, match=f"method {method}:.*algo.factor"):
            resolve(spec(method=method, parameters=conditional))
    resolve(spec(method="gp", parameters={"algo.factor": {"min": 1.05, "max": 2.0}}))


# ---------------------------------------------------------------------------------------------- 4 grid sizes


def test_grid_size_is_counted_without_enumerating_and_matches_the_enumeration():
    small = resolve(spec(method="grid", run_cap=None, parameters={
        "algo.schedule": {"values": ["geometric", "sqrt2", "span"]},
        "algo.factor": {"min": 1.1, "max": 1.5, "q": 0.1, "when": {"algo.schedule": ["geometric", "span"]}},
        "algo.k_mode": {"values": ["random", "fixed"]},
        "algo.walkback_steps": {"values": [2, 3, 4], "when": {"algo.k_mode": "fixed"}},
        "train.lr": {"values": [1e-3, 1e-4]}}))
    # Brute force over the full product, dropping the values of inactive parameters.
    names = [p.name for p in small.params]
    seen = set()
    for combo in itertools.product(*(p.choices for p in small.params)):
        point = dict(zip(names, combo))
        active = {n: v for n, v in point.items() if next(p for p in small.params if p.name == n).active(point)}
        seen.add(tuple(sorted(active.items())))
    assert grid_size(small.params) == len(grid_points(small.params)) == len(seen) == small.num_samples == 2 * (
        2 * 5 + 1) * (1 + 3)


def test_huge_grids_are_refused_before_anything_is_enumerated():
    huge = {f"p{i}": {"values": list(range(20))} for i in range(6)}  # 64 000 000 points
    huge = {f"algo.{k}": v for k, v in zip(["walkback_steps", "max_heating_steps", "n1", "noise_levels",
                                              "reversibility_steps", "reversibility_burn_in"], huge.values())}
    start = time.process_time()
    with pytest.raises(SpecError, match=f"more than {GRID_CAP:,} points"):
        resolve(spec(method="grid", run_cap=None, parameters=huge))
    assert time.process_time() - start < 60  # generous: a hang, not a speed check


# ---------------------------------------------------------------------------------------------- 5 cross-field


def test_gate_ranges_that_allow_a_generator_gate_above_the_discriminator_gate_are_refused():
    raw = {"name": "pf", "algorithm": "professor", "dataset": "text:embedded", "run_cap": 4,
           "metric": {"name": "valid/bpc", "goal": "minimize"},
           "parameters": {"algo.gate_generator": {"min": 0.5, "max": 0.95},
                          "algo.gate_discriminator": {"min": 0.9, "max": 1.0}}}
    with pytest.raises(SpecError, match=r"algo.gate_generator=0\.95 with algo.gate_discriminator=0\.9 is refused"):
        resolve(raw)
    raw["parameters"]["algo.gate_generator"]["max"] = 0.9
    resolve(raw)
    shipped = load_spec(next(p for p in SWEEPS if p.name == "pf-gating.yaml"))
    gates = {p.name: p for p in shipped.params}
    assert gates["algo.gate_generator"].high <= gates["algo.gate_discriminator"].low


# ---------------------------------------------------------------------------------------------- 6 ASHA at max_t


def _feed(scheduler, results):
    """results: [(trial_id, step, value, budget)] -> the scheduler's decision for each."""
    trials = {}
    out = []
    for trial_id, step, value, budget in results:
        if trial_id not in trials:
            trials[trial_id] = SimpleNamespace(trial_id=trial_id)
            scheduler.on_trial_add(None, trials[trial_id])
        result = {"step": step, "m": value}
        if budget:
            result[sw.BUDGET_KEY] = True
        out.append(scheduler.on_trial_result(None, trials[trial_id], result))
    return out


def test_asha_never_stops_a_trial_that_reached_its_budget_when_max_t_is_a_rung():
    # grace 2500, factor 2, 20 000 steps: rungs at 2500, 5000, 10 000 and 20 000 = max_t.
    kwargs = {"time_attr": "step", "metric": "m", "mode": "max", "grace_period": 2500, "max_t": 20000,
              "reduction_factor": 2, "stop_last_trials": False}
    history = [(f"t{i}", step, 10.0 + i, step == 20000) for i in range(3) for step in (2500, 5000, 10000, 20000)]
    # A trial that leads at every rung, then ends below the others at its budget.
    late = [("late", step, 20.0, False) for step in (2500, 5000, 10000)] + [("late", 20000, 1.0, True)]
    plain = _feed(ASHAScheduler(**kwargs), history + late)
    assert plain[-4:] == [TrialScheduler.CONTINUE] * 3 + [TrialScheduler.STOP]  # the bug: no final evaluation
    budget = _feed(sw.BudgetASHA(**kwargs), history + late)
    assert budget[-4:] == [TrialScheduler.CONTINUE] * 4
    # ... while a trial short of its budget is still cut at the rungs.
    weak = [("weak", 2500, 20.0, False), ("weak", 5000, 20.0, False), ("weak", 10000, 1.0, False)]
    assert _feed(sw.BudgetASHA(**kwargs), history + weak)[-1] == TrialScheduler.STOP


def test_budget_is_judged_from_the_step_for_nested_trials():
    resolved = resolve(spec(fixed={"algo.net.hidden": [16], "train.steps": 100}))
    config = {sw.JOB_KEY: sw._job(resolved, Path("/tmp"), "/tmp"), "train.lr": 1e-3}
    assert sw.budget_reached({"step": 100, "config": config})
    assert not sw.budget_reached({"step": 99, "config": config})
    assert sw.budget_reached({"step": 99, "config": {**config, "train.steps": 99}})
    # ASHA sees a nested trial's last training report (no BUDGET_KEY) through the trial's own config.
    kwargs = {"time_attr": "step", "metric": "m", "mode": "max", "grace_period": 25, "max_t": 100,
              "reduction_factor": 2, "stop_last_trials": False}
    scheduler = sw.BudgetASHA(**kwargs)
    trials = [SimpleNamespace(trial_id=f"t{i}", config=config) for i in range(4)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    for t, value in zip(trials[:3], (10.0, 11.0, 12.0)):
        scheduler.on_trial_result(None, t, {"step": 100, "m": value})
    assert scheduler.on_trial_result(None, trials[3], {"step": 100, "m": 1.0}) == TrialScheduler.CONTINUE
    plain = ASHAScheduler(**kwargs)
    for t in trials:
        plain.on_trial_add(None, t)
    for t, value in zip(trials[:3], (10.0, 11.0, 12.0)):
        plain.on_trial_result(None, t, {"step": 100, "m": value})
    assert plain.on_trial_result(None, trials[3], {"step": 100, "m": 1.0}) == TrialScheduler.STOP


# ---------------------------------------------------------------------------------------------- 7 Optuna truth


def _search(metric="m", mode="min"):
    def space(trial):
        trial.suggest_float("x", 0.0, 1.0)

    search = sw.RaygenOptunaSearch(
        space=space, metric=metric, mode=mode,
        sampler=optuna.samplers.RandomSampler(seed=0))
    return search


@pytest.mark.parametrize("multi", [False, True])
def test_optuna_is_told_pruned_complete_and_fail_truthfully(multi):
    metric, mode = (["m", "n"], ["min", "min"]) if multi else ("m", "min")
    search = _search(metric, mode)
    for trial_id in ("stopped", "done", "diverged", "crashed"):
        search.suggest(trial_id)
    values = {"m": 0.1, "n": 0.2}
    search.on_trial_result("stopped", {**values, "step": 30, "training_iteration": 1})
    search.on_trial_complete("stopped", {**values, "step": 30, "training_iteration": 1})
    search.on_trial_complete("done", {**values, "m": 0.5, "step": 100, sw.BUDGET_KEY: True})
    search.on_trial_complete("diverged", {sw.FAILED_KEY: sw.DIVERGENCE, "error": "DivergenceError: x"})
    search.on_trial_complete("crashed", {**values, "step": 40}, error=True)
    states = [t.state for t in search._ot_study.get_trials(deepcopy=False)]
    S = optuna.trial.TrialState
    assert states == [S.PRUNED, S.COMPLETE, S.FAIL, S.FAIL]
    done = search._ot_study.get_trials(deepcopy=False)[1]
    assert done.values[0] == 0.5
    if multi:  # the half-trained trial is not on the Pareto front although its values dominate
        assert [t.number for t in search._ot_study.best_trials] == [1]


def test_report_and_sweep_share_one_definition_of_best(tmp_path):
    """A trial ASHA stopped at a better half-trained value is best for neither `raygen sweep` nor the report."""
    from analysis.sweeps import best_trials as report_best
    from analysis.sweeps import completed_mask, sweep_trials

    resolved = resolve(spec())
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "run_id": ["s-a", "s-b", "s-c", "s-d"],
                           "status": ["completed", "stopped", "completed", "failed"],
                           "params": [{"train.lr": 1e-3}] * 4, "valid/lower_bound": [-5.0, -1.0, -4.0, -0.5]})
    best = sw.best_trials(trials, resolved)
    assert best[0]["trial_id"] == "c" and best[0]["value"] == -4.0
    runs = pd.DataFrame({"run_id": trials.run_id, "trial_id": trials.trial_id, "status": trials.status,
                         "sweep_id": "unit", "algorithm": "walkback", "params_json": json.dumps({"train.lr": 1e-3}),
                         "final.valid/lower_bound": trials["valid/lower_bound"]})
    specs = {"unit": resolved.to_json()}
    table = report_best(runs, specs)
    assert table.iloc[0]["best run"] == "s-c" and table.iloc[0]["best value"] == -4.0
    assert "best completed trial" in table.attrs["caption"]  # it said "(completed or stopped early)"
    rows, info = sweep_trials(runs, "unit", specs)
    assert list(completed_mask(rows, info)) == list(rankable(trials, ["valid/lower_bound"]))


# ---------------------------------------------------------------------------------------------- 8-10 trials


def _toy_job(tmp_path, toy, **fixed):
    resolved = resolve({**spec(algorithm=toy, metric={"name": "valid/nll", "goal": "minimize"},
                               parameters={"train.lr": {"min": 1e-3, "max": 1e-1},
                                           "train.grad_clip": {"values": [None, 5.0]},
                                           "algo.updates_per_step": {"values": [1, 2],
                                                                     "when": {"train.grad_clip": [5.0]}}}),
                        "fixed": {"train.steps": 20, "train.eval_every": 10, "train.log_every": 10,
                                  "train.checkpoint_every": 10, "train.progress": False, **fixed}})
    return resolved, {sw.JOB_KEY: sw._job(resolved, tmp_path, str(tmp_path))}


def test_divergence_of_any_kind_is_one_error_and_never_retried(tmp_path, toy_algorithm, monkeypatch):
    from raygen.metrics.likelihood import gaussian_log_prob
    from tests.toy_algorithm import MeanFit

    class ZeroStd(MeanFit):  # its noise scale underflows to 0, as walkback's does with train.lr=10
        def _nll(self, x):
            return -gaussian_log_prob(x.reshape(len(x), -1), self.mean, torch.zeros_like(self.mean)).mean()

    import tests.toy_algorithm as toy_module

    monkeypatch.setattr(toy_module, "ZeroStd", ZeroStd, raising=False)
    monkeypatch.setitem(__import__("raygen.algorithms", fromlist=["_ALGORITHMS"])._ALGORITHMS, "zerostd",
                        "tests.toy_algorithm:ZeroStd")
    for toy, fixed, cause in ((toy_algorithm, {"algo.explode_at": 3}, "NonFiniteLossError"),
                              ("zerostd", {}, "ValueError: gaussian_log_prob: std must be > 0")):
        results = tmp_path / toy
        _, config = _toy_job(results, toy, **fixed)
        config = {**config, "train.lr": 1e-2, "train.grad_clip": None}
        sent = []
        sw.run_trial(config, "t1", send=_send_to(sent))  # returns: Tune has no exception to retry
        assert sent[-1][0][sw.FAILED_KEY] == sw.DIVERGENCE
        row = read_runs(results).iloc[0]
        assert row["status"] == "failed" and row["error"].startswith("DivergenceError: ") and cause in row["error"]
        rows = len(read_metrics(results))
        sw.run_trial(config, "t1", send=_send_to(sent))  # resumed or retried anyway: nothing is trained again
        assert sent[-1][0][sw.FAILED_KEY] == sw.DIVERGENCE and len(read_metrics(results)) == rows


def test_a_chosen_null_is_stored_as_null_and_an_inactive_parameter_is_absent(tmp_path, toy_algorithm):
    resolved, config = _toy_job(tmp_path, toy_algorithm)
    sent = []
    sw.run_trial({**config, "train.lr": 1e-2, "train.grad_clip": None}, "null", send=_send_to(sent))
    sw.run_trial({**config, "train.lr": 1e-2, "train.grad_clip": 5.0, "algo.updates_per_step": 2}, "five",
                 send=_send_to(sent))
    runs = read_runs(tmp_path).set_index("trial_id")
    assert json.loads(runs.loc["null", "params_json"]) == {"train.lr": 1e-2, "train.grad_clip": None}
    assert json.loads(runs.loc["five", "params_json"]) == {"train.lr": 1e-2, "train.grad_clip": 5.0,
                                                           "algo.updates_per_step": 2}
    assert (runs["status"] == "completed").all()
    shown = sw.fmt_params({"train.lr": 0.01, "train.grad_clip": None}, resolved.param_names)
    assert shown == "train.lr=0.01  train.grad_clip=null  algo.updates_per_step=-"
    trials = sw.sweep_trials(tmp_path, resolved).set_index("trial_id")
    assert trials.loc["null", "params"] == {"train.lr": 1e-2, "train.grad_clip": None}
    # the trials table (raygen.sweep(...).trials): a chosen null is None, an inactive parameter NaN
    assert trials.loc["null", "train.grad_clip"] is None and trials.loc["five", "train.grad_clip"] == 5.0
    assert isinstance(trials.loc["null", "algo.updates_per_step"], float)
    assert math.isnan(trials.loc["null", "algo.updates_per_step"]) and trials.loc["five", "algo.updates_per_step"] == 2


def test_a_completed_trial_is_never_run_again_and_its_final_report_follows_its_evaluation(tmp_path, toy_algorithm):
    _, config = _toy_job(tmp_path, toy_algorithm)
    config = {**config, "train.lr": 1e-2, "train.grad_clip": None}
    sent = []
    sw.run_trial(config, "t1", send=_send_to(sent))
    last, data = sent[-1]
    assert last[sw.BUDGET_KEY] and data is not None and "test/nll" in last  # checkpoint after the evaluation
    assert all(sw.BUDGET_KEY not in p for p, _ in sent[:-1]) and all(p["step"] < 20 for p, _ in sent[:-1])
    before = read_metrics(tmp_path)
    again = []
    sw.run_trial(config, "t1", send=_send_to(again))  # Tune restarted it after a driver kill
    assert again == [({**{k: v for k, v in last.items() if "/" in k}, "step": 20, sw.BUDGET_KEY: True}, None)]
    pd.testing.assert_frame_equal(read_metrics(tmp_path), before)
    # Resumed from the final checkpoint (registered after the evaluation): completed, nothing recomputed.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / sw.CHECKPOINT_NAME).write_bytes(data)
    sw.mark_run(tmp_path, "unit-t1", "running")
    resumed = []
    sw.run_trial(config, "t1", send=_send_to(resumed), checkpoint_dir=str(ckpt))
    assert resumed[-1][0][sw.BUDGET_KEY] and read_runs(tmp_path).iloc[0]["status"] == "completed"
    pd.testing.assert_frame_equal(read_metrics(tmp_path).reset_index(drop=True), before.reset_index(drop=True))


def test_the_real_cause_of_a_trial_error_is_stored(tmp_path):
    import cloudpickle
    from ray.exceptions import ActorDiedError, RayTaskError

    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(ActorDiedError()))
    trial = SimpleNamespace(pickled_error_file=str(tmp_path / "error.pkl"), error_file=str(tmp_path / "error.txt"),
                            get_pickled_error=lambda: None, get_error=lambda: None)
    assert sw.tune_error_text(trial).startswith("ActorDiedError: ")
    wrapped = RayTaskError("trial_main", "Traceback ...", MemoryError("out of memory"))
    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(wrapped))
    assert sw.tune_error_text(trial).startswith("MemoryError: out of memory")
    (tmp_path / "error.pkl").unlink()
    (tmp_path / "error.txt").write_text("Traceback (most recent call last):\n ...\nray.exceptions.NodeDiedError: node lost\n")
    assert sw.tune_error_text(trial) == "ray.exceptions.NodeDiedError: node lost"


# ---------------------------------------------------------------------------------------------- 11-14 output


def test_live_table_and_summary_show_parameters_objective_and_next_commands(tmp_path):
    resolved = resolve(spec(parameters={"train.lr": {"min": 1e-4, "max": 1e-2, "log": True},
                                        "train.grad_clip": {"values": [None, 5.0]}}))
    config = {sw.JOB_KEY: sw._job(resolved, tmp_path, str(tmp_path)), "train.lr": 1e-3, "train.grad_clip": None}
    trial = SimpleNamespace(trial_id="abc_00001", status="RUNNING", config=config,
                            last_result={"step": 30, "valid/lower_bound": -3.25})
    head, row = sw.trial_table([trial], resolved.param_names, ["valid/lower_bound"])
    assert head.split()[:4] == ["trial", "status", "step", "valid/lower_bound"]
    assert row.split()[:4] == ["abc_00001", "running", f"30/{resolved.base_config.train.steps}", "-3.25"]
    assert row.endswith("train.lr=0.001  train.grad_clip=null")
    trials = pd.DataFrame({"trial_id": ["abc_00001"], "run_id": ["unit-abc_00001"], "status": ["completed"],
                           "params": [{"train.lr": 1e-3, "train.grad_clip": None}], "valid/lower_bound": [-3.25]})
    result = sw.SweepResult("unit-smoke", tmp_path, "x", "sqlite:///x.db", trials,
                            best=sw.best_trials(trials, resolved), statuses={"completed": 1})
    text = "\n".join(result.summary())
    assert "best valid/lower_bound (maximize): -3.25  trial abc_00001" in text
    assert "train.lr=0.001" in text and "train.grad_clip=null" in text
    assert f"raygen report {tmp_path}" in text and f"raygen dashboard {tmp_path}" in text
    assert "optuna-dashboard sqlite:///x.db" in text
    assert len(text.splitlines()) < 15


def test_a_failed_trial_is_one_line_and_tunes_traceback_of_it_shows_only_with_verbose(tmp_path, monkeypatch):
    """A trial whose process was killed printed raygen's line with Ray's 5-line ActorDiedError text, after
    Tune's own ~25-line "Trial task failed" traceback; the store keeps the whole text."""
    import logging

    resolved = resolve(spec())
    config = {sw.JOB_KEY: sw._job(resolved, tmp_path, str(tmp_path)), "train.lr": 1e-3}
    callback = sw.StoreCallback(str(tmp_path), resolved, sw.SweepStop())
    monkeypatch.setattr("raygen.engine.resources.cluster_shape", lambda: LAPTOP)
    trial = _Trial(trial_id="k1", status="ERROR", config=config, last_result={})
    callback._fail_pending(trial, 1.0)  # writes the trial's run row
    cause = ("ActorDiedError: The actor died unexpectedly before finishing this task.\n\tclass_name: ImplicitFunc\n"
             "\tpid: 13966\nThe actor is dead because its worker process has died.")
    sw.mark_run(tmp_path, "unit-k1", "failed", error=cause)
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    progress, tune_log = logging.getLogger("raygen.sweep.progress"), logging.getLogger("ray.tune.execution.tune_controller")
    keep = Keep()
    progress.addHandler(keep)
    tune_log.addHandler(keep)
    try:
        monkeypatch.setattr(progress, "level", logging.INFO)
        callback._line(trial)
        assert lines == ["trial k1 failed: -  (ActorDiedError: The actor died unexpectedly before finishing this task.)"]
        assert read_runs(tmp_path).iloc[0]["error"] == cause
        for verbose in (False, True):
            lines.clear()
            with sw._quiet(verbose):
                tune_log.error("Trial task failed for trial k1")
            assert lines == (["Trial task failed for trial k1"] if verbose else [])
    finally:
        progress.removeHandler(keep)
        tune_log.removeHandler(keep)


def test_smoke_sweeps_have_their_own_id_and_rows_say_smoke(tmp_path, toy_algorithm):
    raw = {**spec(algorithm=toy_algorithm, metric={"name": "valid/nll", "goal": "minimize"},
                  parameters={"train.lr": {"min": 1e-3, "max": 1e-1}}), "fixed": {}}
    smoke = resolve(raw, smoke=True)
    assert smoke.sweep_id == "unit-smoke" and resolve(raw).sweep_id == "unit"
    assert sw.optuna_url(smoke, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    sent = []
    sw.run_trial({sw.JOB_KEY: sw._job(smoke, tmp_path, str(tmp_path)), "train.lr": 1e-2}, "s1", send=_send_to(sent))
    extra = read_runs(tmp_path).iloc[0]
    assert extra["sweep_id"] == "unit-smoke" and extra["run_id"] == "unit-smoke-s1"
    assert bool(extra["smoke"]) is True
    sw.run_trial({sw.JOB_KEY: sw._job(resolve(raw), tmp_path, str(tmp_path)), "train.lr": 1e-2}, "s2",
                 send=_send_to(sent))
    assert not read_runs(tmp_path).set_index("run_id").loc["unit-s2", "smoke"]
    # report tables and figures title a sweep by its name: the smoke one by its own id
    from analysis.sweeps import param_effects

    runs = read_runs(tmp_path)
    specs = {"unit-smoke": smoke.to_json(), "unit": resolve(raw).to_json()}
    titles = {sid: param_effects(runs, sid, specs).attrs["title"] for sid in specs}
    assert titles == {"unit-smoke": "Effect of each parameter, sweep unit-smoke",
                      "unit": "Effect of each parameter, sweep unit"}


def test_python_entry_point_is_exported():
    import raygen

    assert callable(raygen.sweep) and "result_grid" in raygen.sweep.__doc__
    assert math.isfinite(GRID_CAP)


def test_report_tables_tell_a_chosen_null_from_an_inactive_parameter():
    from analysis.sweeps import best_trials as report_best
    from analysis.sweeps import param_effects, sweep_trials

    resolved = resolve(spec(parameters={"train.grad_clip": {"values": [None, 5.0]},
                                        "algo.walkback_steps": {"values": [2, 3], "when": {"train.grad_clip": [5.0]}}}))
    params = [{"train.grad_clip": None}, {"train.grad_clip": 5.0, "algo.walkback_steps": 2},
              {"train.grad_clip": None}, {"train.grad_clip": 5.0, "algo.walkback_steps": 3}]
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(4)], "trial_id": [str(i) for i in range(4)],
                         "status": "completed", "sweep_id": "unit", "algorithm": "walkback",
                         "params_json": [json.dumps(p) for p in params], "final.valid/lower_bound": [-1.0, -2, -3, -4]})
    specs = {"unit": resolved.to_json()}
    trials, _ = sweep_trials(runs, "unit", specs)
    assert list(trials["train.grad_clip"]) == ["null", 5.0, "null", 5.0]
    assert trials["algo.walkback_steps"].isna().tolist() == [True, False, True, False]
    effects = param_effects(runs, "unit", specs)
    levels = set(zip(effects["parameter"], effects["level"].astype(str)))
    assert ("train.grad_clip", "null") in levels and ("algo.walkback_steps", "n/a (inactive)") in levels
    assert report_best(runs, specs).iloc[0]["best params"] == "train.grad_clip=null"


def test_a_searcher_restored_after_a_killed_driver_does_not_tell_a_finished_trial_again(tmp_path):
    """The driver told Optuna a trial's end, then died before Tune's snapshot: the restored (older) searcher gets
    that trial's reports again. Telling a finished trial raises in Optuna and would crash the resumed sweep."""
    space = resolve(spec(parameters={"train.lr": {"min": 1e-4, "max": 1e-2}})).space()  # picklable, like Tune's

    def searcher():
        return sw.RaygenOptunaSearch(space=space, metric="m", mode="min", sampler=optuna.samplers.RandomSampler(0),
                                     storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"),
                                     study_name="s")

    first = searcher()
    first.suggest("a")
    first.on_trial_result("a", {"m": 0.3, "training_iteration": 1})
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot, before the trial ended
    first.on_trial_complete("a", {"m": 0.2, "step": 10, sw.BUDGET_KEY: True})
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"m": 0.2, "training_iteration": 2})
    restored.on_trial_complete("a", {"m": 0.2, "step": 10, sw.BUDGET_KEY: True})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 0.2)]


def test_snapshot_files_a_killed_driver_left_empty_are_moved_aside(tmp_path):
    import cloudpickle
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    for session, ok in (("2026-01-01_10-00-00", True), ("2026-01-01_11-00-00", False)):
        (tmp_path / f"experiment_state-{session}.json").write_text("" if not ok else json.dumps({"trials": []}))
        (tmp_path / f"search_gen_state-{session}.json").write_bytes(cloudpickle.dumps({"counter": 1}))  # as Tune
        (tmp_path / f"searcher-state-{session}.pkl").write_bytes(cloudpickle.dumps({"x": 1}))
    assert _find_newest_experiment_checkpoint(str(tmp_path)).endswith("11-00-00.json")  # Tune takes the empty one
    moved = sw.repair_snapshots(str(tmp_path))
    assert sorted(moved) == sorted(f"{k}-2026-01-01_11-00-00.{e}" for k, e in (
        ("experiment_state", "json"), ("search_gen_state", "json"), ("searcher-state", "pkl")))
    assert _find_newest_experiment_checkpoint(str(tmp_path)).endswith("10-00-00.json")
    assert sw.repair_snapshots(str(tmp_path)) == []


def test_a_sweep_whose_study_file_was_emptied_is_refused_not_restarted(tmp_path, monkeypatch):
    """A 0-byte RESULTS/optuna.db reads as an empty SQLite database: resuming or continuing the sweep made a new,
    empty study (`--more` said "continuing ... (2 trials so far)" and TPE re-ran its first point). Refused in one
    line before Ray starts, naming the study and the trials the store holds."""
    from analysis.synthetic import SyntheticRun, write_run

    resolved = resolve(spec(name="lost", method="tpe", run_cap=2))
    for i in range(2):
        write_run(tmp_path, SyntheticRun(f"lost-t{i}", "walkback", "toy2d:swissroll", sweep_id="lost",
                                         trial_id=f"t{i}", params={"train.lr": 1e-3 * (i + 1)},
                                         finals={"valid/lower_bound": -3.0 - i}))
    (tmp_path / "optuna.db").write_bytes(b"")
    monkeypatch.setattr(sw, "_parts", lambda *a: [str(tmp_path / "tune" / "lost")])  # the experiment exists
    monkeypatch.setattr(sw, "ensure_ray", lambda *a, **k: pytest.fail("Ray started for a sweep without its study"))
    with pytest.raises(SpecError, match="study 'lost' is not in .*optuna.db.* 2 trials"):
        sw.run_sweep(resolved, tmp_path, more=1)
    # the check leaves a kept study alone
    optuna.create_study(study_name="lost", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    sw._check_study_kept(resolved, tmp_path, f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_continuation_samples_its_own_points_not_the_sweeps_first_ones():
    """`raygen sweep SPEC --more 1` on a seeded TPE sweep (2 trials) drew algo.factor=1.297 again: the new
    experiment part's sampler restarted the spec's seed, so its startup draws repeated the sweep's. Part 0 keeps
    the spec's seed (a sweep draws what it always drew); part k draws its own."""
    resolved = resolve(spec(method="tpe", seed=0))
    distribution = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)

    def first_draws(sampler, n=3):
        study = optuna.create_study(sampler=sampler)
        return [study.ask({"lr": distribution}).params["lr"] for _ in range(n)]

    assert first_draws(sw._sampler(resolved)) == first_draws(optuna.samplers.TPESampler(seed=0))
    assert not set(first_draws(sw._sampler(resolved, 1))) & set(first_draws(sw._sampler(resolved)))


@pytest.mark.parametrize("resumable", [True, False])
def test_an_interrupted_trial_stays_running_in_optuna_so_its_resume_can_tell_its_end(tmp_path, resumable):
    """Ctrl-C, then the same command: Tune resumes the unfinished trial and it completes. Had the interrupted
    sweep told Optuna FAIL, the study would keep FAIL for a trial the store holds `completed` (a finished Optuna
    trial cannot be told again). A sweep that stopped itself (resumable=False) fails its unfinished trials."""
    from raygen.config import build_config
    from raygen.results import RunRecorder

    resolved = resolve(spec())
    url = f"sqlite:///{tmp_path / 'o.db'}"
    search = sw.RaygenOptunaSearch(space=resolved.space(), metric="valid/lower_bound", mode="max",
                                   sampler=optuna.samplers.RandomSampler(0),
                                   storage=optuna.storages.RDBStorage(url), study_name=resolved.sweep_id)
    for trial_id in ("cut", "lost"):  # "lost": drawn, never recorded by Tune (abandoned)
        search.suggest(trial_id)
        cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
        RunRecorder(tmp_path, cfg, run_id=sw.run_id_for(resolved.sweep_id, trial_id),
                    extra={"sweep_id": resolved.sweep_id, "trial_id": trial_id}).write_run("running")
    notes = sw._reconcile(tmp_path, resolved, {"cut"}, url, resumable=resumable)
    S = optuna.trial.TrialState
    study = optuna.load_study(study_name=resolved.sweep_id, storage=url)
    states = {t.user_attrs[sw.TUNE_TRIAL_ATTR]: t.state for t in study.trials}
    assert states == {"cut": S.RUNNING if resumable else S.FAIL, "lost": S.FAIL}
    rows = read_runs(tmp_path).set_index("trial_id")
    assert (rows.loc["cut", "status"], rows.loc["cut", "error"]) == ("stopped", sw.INTERRUPTED)
    assert rows.loc["lost", "status"] == "failed"
    assert any("run the same command again" in n for n in notes) == resumable
    if resumable:  # the rerun resumes it; the restored searcher tells its real end
        search.on_trial_complete("cut", {"valid/lower_bound": -3.0, "step": 8, sw.BUDGET_KEY: True})
        done = optuna.load_study(study_name=resolved.sweep_id, storage=url).trials[0]
        assert (done.state, done.value) == (S.COMPLETE, -3.0)
