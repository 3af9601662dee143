"""Sweep spec validation and its translation into Optuna (no Ray is started here)."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from raygen.cli import app
from raygen.engine.sweep_spec import (
    DefineByRunSpace,
    SpecError,
    load_spec,
    parse_shorthand,
    resolve,
)

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))

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
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def params(**extra):
    return {**BASE["parameters"], **extra}


# ---------------------------------------------------------------------------------------------- shipped specs


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_specs_validate_with_their_header(path):
    full = load_spec(path)
    smoke = load_spec(path, smoke=True)
    assert smoke.sweep_id == f"{full.sweep_id}-smoke"
    assert smoke.num_samples <= 4 and smoke.max_concurrent <= 2
    assert smoke.base_config.train.steps <= 100
    assert smoke.resources.gpu == 0 and smoke.resources.workers == 1
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for word in ("Reproduces", "Published", "Command", "Expected time", "Smoke"):
        assert word in header, f"{path.name}: header lacks '{word}'"
    assert f"raygen sweep sweeps/{path.name}" in header


def test_one_spec_per_paper_experiment():
    names = {p.stem for p in SWEEPS}
    assert {"vw-annealing", "vw-walkback-steps", "infusion-rate-steps", "pf-gating"} <= names


def test_infusion_grid_is_table_a1_with_its_branches():
    s = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "infusion-rate-steps.yaml")
    points = list(s.points)
    # TAB. A.1 panels A-D (12 + 8 + 8 + 7 rates) plus Fig. A.1 e/f (5 constant rates for 10 and 15 steps).
    assert len(points) == 12 + 8 + 8 + 7 + 2 * 5 == s.num_samples
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    for p in points:
        cfg = s.trial_config(p)
        if p["algo.steps"] == 1:
            assert set(p) == {"algo.steps", "alpha0_1step"} and cfg.algo.alpha0 == p["alpha0_1step"]
        elif p["algo.steps"] == 5:
            assert set(p) == {"algo.steps", "omega_5steps"} and cfg.algo.omega == p["omega_5steps"]
        elif p["algo.schedule"] == "constant":
            assert cfg.algo.schedule == "constant" and cfg.algo.alpha0 == p["alpha_constant"]
        else:
            key = f"omega_{p['algo.steps']}steps"
            assert set(p) == {"algo.steps", "algo.schedule", key} and cfg.algo.omega == p[key]


# ---------------------------------------------------------------------------------------------- errors name keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (spec(paramters={}), r"unknown key 'paramters' \(did you mean 'parameters'\?\)"),
        (spec(parameters=params(**{"train.lr": {"min": 1e-4, "mx": 1e-2}})),
         r"unknown key 'parameters\.train\.lr\.mx'"),
        (spec(parameters=params(**{"train.lrr": {"min": 1e-4, "max": 1e-2}})),
         r"parameters\.train\.lrr.*unknown config key 'train\.lrr'.*did you mean 'train\.lr'"),
        (spec(parameters=params(**{"algo.walkback_steps": {"min": 0, "max": 4}})),
         r"parameters\.algo\.walkback_steps: value 0 is not valid for algo\.walkback_steps"),
        (spec(fixed={"train.stepz": 3}), r"fixed: unknown config key 'train\.stepz'"),
        (spec(metric=None), r"missing key 'metric'"),
        (spec(metric={"name": "lower_bound"}), r"'metric\.name'.*split/metric"),
        (spec(metrics=[{"name": "valid/a"}]), r"either `metric` or `metrics`"),
        (spec(method="annealing"), r"method: unknown method 'annealing'"),
        (spec(run_cap=None), r"missing key 'run_cap'"),
        (spec(program="train.py"), r"key 'program' is not supported"),
        (spec(run_cap=3, n_trials=3), r"mean the same thing"),
        (spec(resources={"cpu": 1, "gpu": 0.5, "workers": 2}), r"resources.*whole number"),
        (spec(parameters=params(**{"train.batch_size": {"min": 8, "max": 64, "q": 8, "log": True}})),
         r"parameters\.train\.batch_size: `q` cannot be combined with `log: true`"),
        (spec(parameters=params(**{"train.weight_decay": {"min": 0.0, "max": 1.0, "log": True}})),
         r"parameters\.train\.weight_decay: log scale needs min > 0"),
        (spec(parameters=params(**{"train.lr": {"min": -5, "max": -2, "distribution": "log_uniform"}})),
         r"log_uniform is refused.*exponents"),
        (spec(parameters=params(**{"train.lr": {"distribution": "normal", "mu": 0, "sigma": 1}})),
         r"normal"),
        (spec(parameters=params(**{"algo.factor": {"min": 1.1, "max": 2.0, "when": {"algo.schedule": "x"}}})),
         r"parameters\.algo\.factor\.when: 'algo\.schedule' is not a searched parameter"),
        (spec(parameters=params(**{"algo.factor": {"min": 1.1, "max": 2.0, "when": {"train.lr": 1e-3}}})),
         r"'train\.lr' must be a categorical parameter"),
        (spec(parameters={"train.lr": {"values": [[1, 2]]}}), r"parameters\.train\.lr\.values"),
        (spec(parameters={"train.lr": [1e-3, 1e-2]}), r"parameters\.train\.lr: write a list of choices"),
    ],
)
def test_bad_specs_fail_naming_the_key(raw, expected):
    with pytest.raises(SpecError, match=expected):
        resolve(raw)


def test_method_limits_are_checked_before_any_work():
    cat = params(**{"algo.schedule": {"values": ["geometric", "sqrt2"]}})
    with pytest.raises(SpecError, match="method cmaes: CMA-ES needs a flat numeric space.*algo.schedule"):
        resolve(spec(method="cmaes", parameters=cat))
    with pytest.raises(SpecError, match="method grid needs `values` or `q`"):
        resolve(spec(method="grid", parameters={"algo.alpha": {"min": 0.1, "max": 0.9}}))
    with pytest.raises(SpecError, match="run_cap: 5 exceeds the 2 points"):
        resolve(spec(method="grid", run_cap=5, parameters={"train.batch_size": {"values": [32, 64]}}))
    multi = spec(metric=None, metrics=[{"name": "valid/lower_bound", "goal": "maximize"},
                                       {"name": "train/loss", "goal": "minimize"}],
                 early_terminate={"type": "asha"})
    with pytest.raises(SpecError, match="early_terminate.metric: required with several objectives"):
        resolve(multi)
    both = params(**{"algo.schedule": {"values": ["geometric", "sqrt2"]},
                     "a": {"path": "algo.factor", "min": 1.1, "max": 1.5},
                     "b": {"path": "algo.factor", "min": 1.5, "max": 2.0}})
    with pytest.raises(SpecError, match="parameters.b: sets algo.factor like 'a' does"):
        resolve(spec(parameters=both))


def test_grid_points_are_checked_as_whole_configs():
    # Each omega alone is valid, but 15 steps with omega 0.1 makes the rate exceed 1 (InfusionConfig rule).
    raw = spec(algorithm="infusion", method="grid", run_cap=None,
               parameters={"algo.steps": {"values": [5, 15]}, "algo.omega": {"values": [0.05, 0.1]}})
    with pytest.raises(SpecError, match=r"grid point .*'algo.steps': 15.*'algo.omega': 0.1"):
        resolve(raw)


# ---------------------------------------------------------------------------------------------- meaning


def test_numeric_strings_are_coerced():
    text = """
name: coerce
algorithm: walkback
dataset: toy2d:swissroll
fixed: {train.weight_decay: 1e-6}
metric: {name: valid/lower_bound, goal: max}
run_cap: "4"
parameters:
  train.lr: {min: 1e-5, max: 1e-2, log: true}
"""
    raw = yaml.safe_load(text)
    assert raw["parameters"]["train.lr"]["min"] == "1e-5"  # PyYAML's YAML 1.1 behaviour (pyyaml#173)
    s = resolve(raw)
    (lr,) = s.params
    assert lr.low == pytest.approx(1e-5) and isinstance(lr.low, float) and lr.log
    assert s.fixed["train.weight_decay"] == pytest.approx(1e-6)
    assert s.base_config.train.weight_decay == pytest.approx(1e-6)
    assert s.num_samples == 4 and s.objectives[0].goal == "maximize"


def test_bounds_are_inclusive_and_kinds_follow_the_bounds():
    s = resolve(spec(parameters={
        "train.batch_size": {"min": 16, "max": 64, "q": 16},
        "algo.alpha": {"min": 0.25, "max": 0.75},
        "algo.walkback_steps": "range(2, 8, 2)",
    }))
    by = {p.name: p for p in s.params}
    assert (by["train.batch_size"].kind, by["train.batch_size"].grid_values()) == ("int", [16, 32, 48, 64])
    assert by["algo.alpha"].kind == "float"
    assert by["algo.walkback_steps"].grid_values() == [2, 4, 6]  # Python range: 8 excluded
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        s.space()(trial)
        seen.add(trial.params["train.batch_size"])
        assert 0.25 <= trial.params["algo.alpha"] <= 0.75
        study.tell(trial, 0.0)
    assert seen == {16, 32, 48, 64}


def test_hydra_shorthand():
    assert parse_shorthand("choice(64, 128)") == {"values": [64, 128]}
    assert parse_shorthand("choice(relu, tanh)") == {"values": ["relu", "tanh"]}
    assert parse_shorthand("tag(log, interval(1e-5, 1e-2))") == {"min": 1e-5, "max": 1e-2, "log": True}
    assert parse_shorthand("int(interval(1, 8))") == {"min": 1, "max": 8}
    assert parse_shorthand("range(10, 40, 10)") == {"min": 10, "max": 30, "q": 10}
    with pytest.raises(SpecError, match="unknown tag"):
        parse_shorthand("tag(sqrt, interval(1, 2))")
    with pytest.raises(SpecError, match="not a literal"):
        parse_shorthand("choice(__import__('os'))")


def test_conditional_parameters_are_suggested_only_in_their_branch():
    s = resolve(spec(parameters={
        "algo.schedule": {"values": ["geometric", "sqrt2"]},
        "algo.factor": {"min": 1.05, "max": 2.0, "when": {"algo.schedule": "geometric"}},
        "train.lr": {"min": 1e-4, "max": 1e-2, "log": True},
    }))
    space = pickle.loads(pickle.dumps(s.space()))  # Tune pickles the searcher with the experiment
    assert isinstance(space, DefineByRunSpace)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    branches = set()
    for i in range(30):
        trial = study.ask()
        assert space(trial) is None  # a returned dict would override suggestions (ray #35319)
        p = trial.params
        branches.add(p["algo.schedule"])
        assert ("algo.factor" in p) == (p["algo.schedule"] == "geometric")
        cfg = s.trial_config(p)
        assert cfg.algo.schedule == p["algo.schedule"]
        if "algo.factor" in p:
            assert cfg.algo.factor == p["algo.factor"]
        study.tell(trial, float(i))
    assert branches == {"geometric", "sqrt2"}


def test_smoke_shrinks_but_keeps_the_space():
    raw = spec(run_cap=50, max_concurrent=8, resources={"cpu": 4, "gpu": 1},
               parameters=params(**{"train.steps": {"values": [1000, 2000]}}))
    s = resolve(raw, smoke=True)
    assert s.sweep_id == "unit-smoke" and s.num_samples == 4 and s.max_concurrent == 2
    assert s.resources.gpu == 0 and s.resources.cpu == 1
    assert "train.steps" not in s.fixed  # a searched parameter is never shadowed by the smoke budget
    assert s.base_config.eval.repeats == 1
    assert [p.name for p in s.params] == ["train.lr", "train.steps"]


def test_resolved_json_has_what_the_dashboard_reads():
    s = resolve(spec(parameters={
        "algo.schedule": {"values": ["geometric", "sqrt2"]},
        "algo.factor": {"min": 1.05, "max": 2.0, "when": {"algo.schedule": ["geometric"]}},
        "train.lr": {"min": 1e-4, "max": 1e-2, "log": True},
    }, early_terminate={"type": "hyperband", "min_iter": 10, "eta": 2}))
    doc = s.to_json()
    assert doc["metric"] == {"name": "valid/lower_bound", "goal": "maximize"}
    assert doc["metrics"] == [doc["metric"]]
    lr = doc["parameters"]["train.lr"]
    assert (lr["kind"], lr["low"], lr["high"], lr["log"]) == ("float", 1e-4, 1e-2, True)
    assert doc["parameters"]["algo.factor"]["when"] == {"algo.schedule": ["geometric"]}
    assert doc["early_terminate"]["grace_period"] == 10 and doc["early_terminate"]["reduction_factor"] == 2


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_validate_prints_the_space_and_errors_name_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec(parameters={
        "algo.schedule": {"values": ["geometric", "sqrt2"]},
        "algo.factor": {"min": 1.05, "max": 2.0, "when": {"algo.schedule": "geometric"}}})))
    result = CliRunner().invoke(app, ["sweep", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert re.search(r"algo\.factor\s+float \[1\.05, 2\.0\] \(inclusive\) when algo\.schedule in \['geometric'\]",
                     result.output)
    assert "optuna: FloatDistribution(1.05, 2.0)" in result.output and "tune: tune.uniform(1.05, 2.0)" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec(max_concurent=2)))
    result = CliRunner().invoke(app, ["sweep", str(bad)])  # fails before Ray starts
    assert result.exit_code == 2
    assert "unknown key 'max_concurent' (did you mean 'max_concurrent'" in result.output
