"""Sweep specs: the YAML format, its validation, and its translation into an Optuna define-by-run space.

Everything here runs before Ray starts, so a bad spec fails in milliseconds with the offending key named.
The format follows W&B's sweep YAML (keys `name, method, metric, parameters, run_cap, early_terminate`) with
Optuna's semantics (bounds inclusive, `log: true`, conditional parameters) and Hydra's override shorthand;
see docs/cluster.md for the full reference:

    name: vw-annealing                    # the sweep id in the results store
    algorithm: walkback
    dataset: mnist
    fixed: {train.steps: 20000}           # constants merged into every trial's RunConfig
    metric: {name: valid/lower_bound, goal: maximize}   # or `metrics: [...]` (multi-objective)
    method: tpe                           # tpe | random | cmaes | gp | nsga2 | grid  (bayes = tpe)
    run_cap: 32                           # aliases n_trials, num_samples
    max_concurrent: 4                     # aliases n_jobs, max_concurrent_trials
    resources: {cpu: 1, gpu: 0.25, workers: 1}
    early_terminate: {type: asha, grace_period: 2000, reduction_factor: 3}
    parameters:
      train.lr:          {min: 1.0e-5, max: 1.0e-3, log: true}
      algo.schedule:     {values: [double, sqrt2, x1.1]}
      algo.factor:       {min: 1.05, max: 2.0, when: {algo.schedule: x1.1}}
      train.batch_size:  "choice(64, 128)"

Parameter paths are RunConfig paths (`train.lr`, `algo.<field>`, `seed`, ...). Bounds are always inclusive.
A parameter with `when:` is suggested only in trials where the named earlier categorical parameter has one
of the listed values; it is absent (stored as null) otherwise.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raygen.config import ConfigError, RunConfig, build_config, flatten, load_yaml


class SpecError(ValueError):
    """A sweep spec problem; the message names the offending key."""


METHODS = ("tpe", "random", "cmaes", "gp", "nsga2", "grid")
METHOD_ALIASES = {"bayes": "tpe", "nsgaii": "nsga2", "cma": "cmaes", "cma-es": "cmaes", "qmc": None}
GOALS = {"minimize": "minimize", "maximize": "maximize", "min": "minimize", "max": "maximize"}

# W&B `distribution:` names and what they mean here. Names with no Optuna counterpart are refused with the
# reason instead of being approximated (notes §1.2: never reinterpret silently).
_DISTRIBUTIONS = {
    "constant": "constant",
    "categorical": "categorical",
    "int_uniform": "int",
    "uniform": "float",
    "q_uniform": "float",
    "log_uniform_values": "float",
    "q_log_uniform_values": "float",
}
_REFUSED_DISTRIBUTIONS = {
    "log_uniform": "W&B's log_uniform takes natural-log *exponents* as min/max; write the values themselves "
    "with `log: true` (or distribution: log_uniform_values)",
    "q_log_uniform": "W&B's q_log_uniform takes exponents; use log: true with values as bounds",
    "inv_log_uniform": "no Optuna distribution corresponds to inv_log_uniform",
    "inv_log_uniform_values": "no Optuna distribution corresponds to inv_log_uniform_values",
    "normal": "Optuna has no normal distribution; use min/max bounds",
    "q_normal": "Optuna has no normal distribution; use min/max bounds",
    "log_normal": "Optuna has no log-normal distribution; use min/max with log: true",
    "q_log_normal": "Optuna has no log-normal distribution; use min/max with log: true",
    "beta": "Optuna has no beta distribution; use min/max bounds",
}
_RESERVED_TOP = {
    "program": "raygen runs its own trainer; name the algorithm with `algorithm:` instead",
    "command": "raygen runs its own trainer; use `fixed:` for constant settings",
    "entity": "W&B's entity has no meaning here",
    "project": "W&B's project has no meaning here; the results store is chosen with --results",
}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Generic miniature applied by --smoke before the spec's own `smoke:` block: few updates, cheap evaluation.
SMOKE_FIXED: dict[str, Any] = {
    "train.steps": 60,
    "train.log_every": 10,
    "train.eval_every": 30,
    "train.checkpoint_every": 30,
    "train.eval_examples": 100,
    "train.progress": False,
    "eval.test_examples": 50,
    "eval.train_examples": 20,
    "eval.repeats": 1,
    "eval.likelihood_samples": 2,
    "eval.parzen_samples": 200,
    "eval.parzen_valid_examples": 100,
    "eval.sample_count": 16,
    "eval.chain_count": 2,
}
SMOKE_RUN_CAP = 4
SMOKE_CONCURRENCY = 2
# The most points `method: grid` may have. The size is computed before anything is enumerated; a larger grid is
# refused (it would take hours to validate and years to run): sample it with `method: random` and `run_cap`.
GRID_CAP = 10_000
# How long a trial may wait for resources while none of the sweep's trials runs (nothing would free them).
PENDING_TIMEOUT_S = 300.0


def coerce_number(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads `1e-5` as the string "1e-5" (pyyaml#173): turn numeric strings into numbers."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        return float(text)
    return value


def _coerce_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _coerce_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce_tree(v) for v in value]
    return coerce_number(value)


# ---------------------------------------------------------------------------------------------- raw models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricSpec(_Strict):
    name: str
    goal: Literal["minimize", "maximize"] = "minimize"

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, Mapping) and "mode" in value:
            value = dict(value)
            mode = value.pop("mode")
            if "goal" in value:
                raise ValueError("give either `goal` or `mode`, not both")
            value["goal"] = GOALS.get(str(mode), mode)
        if isinstance(value, Mapping) and isinstance(value.get("goal"), str):
            value = {**value, "goal": GOALS.get(value["goal"], value["goal"])}
        return value

    @field_validator("name")
    @classmethod
    def _split_metric(cls, name: str) -> str:
        if "/" not in name:
            raise ValueError(
                f"metric '{name}' must be 'split/metric' as the training loop reports it "
                "(e.g. valid/lower_bound, test/nll_bits, train/loss)"
            )
        return name


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial (per worker when workers > 1); fractions allowed")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial (per worker when workers > 1); fractions share a GPU")
    workers: int = Field(1, ge=1, description="data-parallel Ray Train workers per trial (>1 nests a TorchTrainer)")
    driver_cpu: float = Field(0.1, ge=0, description="CPU of the trial driver when workers > 1 (it only waits)")
    custom: dict[str, float] = Field(
        default_factory=dict, description="custom resources of each trial's driver, e.g. {on_demand: 0.01}"
    )

    @model_validator(mode="after")
    def _fraction_only_single(self) -> ResourcesSpec:
        if self.workers > 1 and 0 < self.gpu < 1:
            raise ValueError("resources.gpu must be 0 or a whole number when workers > 1 (one nccl rank per GPU)")
        return self


class EarlyTerminateSpec(_Strict):
    type: Literal["asha", "hyperband"] = "asha"
    metric: str | None = None
    goal: Literal["minimize", "maximize"] | None = None
    time_attr: Literal["step", "training_iteration"] = Field(
        "step", description="'step' counts optimizer updates (raygen's budget); 'training_iteration' counts reports"
    )
    grace_period: int = Field(1, ge=1)
    max_t: int | None = Field(None, ge=1, description="default: the trial's train.steps (time_attr step)")
    reduction_factor: float = Field(3.0, gt=1)
    brackets: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        value = dict(value)
        for wandb, tune in (("min_iter", "grace_period"), ("max_iter", "max_t"), ("eta", "reduction_factor"),
                            ("s", "brackets")):
            if wandb in value:
                if tune in value:
                    raise ValueError(f"give either `{wandb}` or `{tune}`, not both")
                value[tune] = value.pop(wandb)
        if "mode" in value:
            if "goal" in value:
                raise ValueError("give either `goal` or `mode`, not both")
            value["goal"] = value.pop("mode")
        if isinstance(value.get("goal"), str):
            value["goal"] = GOALS.get(value["goal"], value["goal"])
        if "strict" in value:
            raise ValueError("`strict` (W&B hyperband) is not supported: ASHA stops trials asynchronously")
        return value


class ParamSpec(_Strict):
    values: list[Any] | None = None
    value: Any = None
    min: float | int | None = None
    max: float | int | None = None
    q: float | int | None = None
    log: bool = False
    distribution: str | None = None
    when: dict[str, Any] | None = None
    path: str | None = Field(None, description="RunConfig path when the parameter's name is not one (two "
                             "conditional branches may then set the same path with different ranges)")

    @model_validator(mode="before")
    @classmethod
    def _no_probabilities(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "probabilities" in value:
            raise ValueError("`probabilities` is not supported: Optuna's categorical sampling has no weights")
        for key in ("mu", "sigma", "a", "b"):
            if isinstance(value, Mapping) and key in value:
                raise ValueError(f"`{key}` belongs to W&B's normal/beta distributions, which Optuna lacks")
        return value


class SmokeSpec(_Strict):
    run_cap: int = Field(SMOKE_RUN_CAP, ge=1)
    max_concurrent: int = Field(SMOKE_CONCURRENCY, ge=1)
    dataset: str | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict, description="replacement parameter specs")
    resources: ResourcesSpec = Field(default_factory=lambda: ResourcesSpec(cpu=1, gpu=0, workers=1))
    grace_period: int | None = Field(None, ge=1)


class SweepSpec(_Strict):
    name: str
    description: str = ""
    algorithm: str
    dataset: str
    fixed: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any]
    metric: MetricSpec | None = None
    metrics: list[MetricSpec] | None = None
    method: str | None = None
    seed: int = 0
    run_cap: int | None = Field(None, ge=1)
    max_concurrent: int = Field(1, ge=1)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    early_terminate: EarlyTerminateSpec | None = None
    storage: str | None = Field(None, description="Tune experiment storage: a local path or s3://, gs://, ...")
    optuna_storage: str | None = Field(None, description="Optuna RDB URL (sqlite:///x.db) for optuna-dashboard")
    max_failures: int = Field(2, ge=-1, description="Tune retries of a failed trial (node loss)")
    train_max_failures: int = Field(2, ge=-1, description="Ray Train worker-group restarts inside a trial")
    pending_timeout_s: float = Field(PENDING_TIMEOUT_S, gt=0, description="a trial that waits this long for "
                                     "resources while no trial of the sweep runs fails, and the sweep stops")
    smoke: SmokeSpec = Field(default_factory=SmokeSpec)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("a sweep spec must be a mapping at the top level")  # noqa: TRY004 (pydantic)
        value = dict(value)
        for key, why in _RESERVED_TOP.items():
            if key in value:
                raise ValueError(f"key '{key}' is not supported: {why}")
        for canonical, aliases in (("run_cap", ("n_trials", "num_samples")),
                                   ("max_concurrent", ("n_jobs", "max_concurrent_trials"))):
            given = [k for k in (canonical, *aliases) if k in value]
            if len(given) > 1:
                raise ValueError(f"keys {', '.join(given)} mean the same thing; give one")
            if given and given[0] != canonical:
                value[canonical] = value.pop(given[0])
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"name '{name}' may hold only letters, digits, '_', '.', '-' (it names directories)")
        return name


# ---------------------------------------------------------------------------------------------- resolved


@dataclass(frozen=True)
class Param:
    """One resolved search dimension. `when` is a tuple of (parent name, allowed values) that must all hold."""

    name: str
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    path: str = ""  # the RunConfig path it sets ("" = its name)
    written_max: float | int | None = None  # the spec's `max` when the step made it unreachable (high is what runs)

    @property
    def target(self) -> str:
        return self.path or self.name

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (or Ray's suggest-capturing wrapper of one) for this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices or ()))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_count(self) -> int:
        """len(grid_values()) without building the list."""
        if self.kind == "categorical":
            return len(self.choices or ())
        if self.kind == "int":
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.step is None:
            raise SpecError(f"parameters.{self.name}: method grid needs `values` or `q` for a float range")
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices or ())
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise SpecError(f"parameters.{self.name}: method grid needs `values` or `q` for a float range")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def candidates(self) -> list[Any]:
        """Values checked against the RunConfig when the spec is validated (ends of a range, every choice)."""
        if self.kind == "categorical":
            return list(self.choices or ())
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            text = f"categorical {list(self.choices or ())}"
        else:
            text = f"{self.kind} [{self.low}, {self.high}] (inclusive)"
            if self.log:
                text += " log"
            if self.step is not None:
                text += f" step {self.step}"
            if self.written_max is not None:
                text += f" (max {self.written_max} is not min + k*step: runs up to {self.high})"
        if self.when:
            text += " when " + " and ".join(f"{p} in {list(v)}" for p, v in self.when)
        if self.path and self.path != self.name:
            text += f" -> sets {self.path}"
        return text

    def tune_repr(self) -> str:
        if self.kind == "categorical":
            return f"tune.choice({list(self.choices or ())!r})"
        if self.step is not None and not self.log and not _is_multiple(self.low, self.step):
            # Tune's qrandint/quniform draw multiples of q (0, q, 2q, ...), not low + k*q as Optuna does
            values = self.grid_values()
            shown = values if len(values) <= 8 else [*values[:3], "...", *values[-2:]]
            return f"tune.choice([{', '.join(str(v) for v in shown)}])  ({len(values)} values)"
        if self.kind == "int":
            if self.log:
                return f"tune.lograndint({self.low}, {int(self.high) + 1})"
            return f"tune.qrandint({self.low}, {self.high}, {self.step or 1})"
        if self.log:
            return f"tune.loguniform({self.low}, {self.high})"
        if self.step is not None:
            return f"tune.quniform({self.low}, {self.high}, {self.step})"
        return f"tune.uniform({self.low}, {self.high})"

    def optuna_repr(self) -> str:
        if self.kind == "categorical":
            return f"CategoricalDistribution({list(self.choices or ())!r})"
        cls = "IntDistribution" if self.kind == "int" else "FloatDistribution"
        extra = ", log=True" if self.log else (f", step={self.step}" if self.step is not None else "")
        return f"{cls}({self.low}, {self.high}{extra})"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["choices"] = list(self.choices) if self.choices is not None else None
        out["when"] = {parent: list(values) for parent, values in self.when}
        out["path"] = self.target
        return out


def trial_config(algorithm: str, dataset: str, fixed: Mapping[str, Any], paths: Mapping[str, str],
                 params: Mapping[str, Any]) -> RunConfig:
    """fixed settings, then each sampled (active) parameter at its RunConfig path."""
    overrides = dict(fixed)
    for name, value in params.items():
        overrides[paths.get(name, name)] = value
    return build_config(algorithm=algorithm, dataset=dataset, overrides=overrides)


def grid_points(params: Sequence[Param]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}]
    for param in params:
        grown = []
        for point in points:
            if param.active(point):
                grown += [{**point, param.name: value} for value in param.grid_values()]
            else:
                grown.append(point)
        points = grown
    return points


def grid_size(params: Sequence[Param], cap: int = GRID_CAP) -> int:
    """The number of points `grid_points(params)` would enumerate, counted without enumerating them: only the
    parameters that others are conditioned on are expanded; every other one multiplies a count. Returns a
    number above `cap` as soon as the count is known to exceed it."""
    parents = {parent for p in params for parent, _ in p.when}
    partial: list[tuple[dict[str, Any], int]] = [({}, 1)]
    for param in params:
        grown: list[tuple[dict[str, Any], int]] = []
        for point, count in partial:
            if not param.active(point):
                grown.append((point, count))
            elif param.name in parents:
                grown += [({**point, param.name: value}, count) for value in param.grid_values()]
            else:
                grown.append((point, count * param.grid_count()))
        partial = grown
        if len(partial) > cap:
            return len(partial)
    return sum(count for _, count in partial)


# ---------------------------------------------------------------------------------------------- metric names

# The store's splits: train/ = training means (train_step), valid/ = the quick evaluation during training, and
# after training one split per eval.splits entry from the full evaluation (the training and validation splits'
# final evaluations are named train_eval and valid_eval, so they never share a key with the training means or
# the quick validation; evaluate.final_split_label).
_PARZEN = ("parzen_ll", "parzen_ll_se", "parzen_sigma")


def reported_metrics(config: RunConfig) -> dict[str, tuple[str, ...]]:
    """split -> metric-name patterns a run of `config` reports, from its algorithm's `metric_names`
    ({} when the algorithm declares none)."""
    from raygen.algorithms import algorithm_class
    from raygen.engine.evaluate import final_split_label

    declared = getattr(algorithm_class(config.algorithm), "metric_names", None) or {}
    if not declared:
        return {}
    train, quick, full = (tuple(declared.get(k, ())) for k in ("train", "quick", "full"))
    out: dict[str, tuple[str, ...]] = {"train": train, "valid": quick, "selection": ("step", *quick)}
    for split in config.eval.splits if config.eval.final else ():
        # importance_k: the evaluation suite stores k beside every importance-sampling estimate
        names = full + ("importance_k",) + (_PARZEN if split == "test" and config.eval.parzen else ())
        if split == "test":  # the suite's sample scores, when asked for (evaluate.sample_score_metrics)
            names += ("inception_score", "inception_score_std", "fid") if config.eval.inception_path else ()
            names += ("classifier_score", "classifier_score_std", "classifier_fid") if config.eval.classifier_score else ()
        label = final_split_label(split)
        out[label] = out.get(label, ()) + names
        if split == "train":  # stores written before train_eval existed name it train/
            out["train"] = out["train"] + names
    return out


def metric_known(name: str, known: Mapping[str, Sequence[str]]) -> bool:
    import fnmatch

    split, _, metric = name.partition("/")
    return any(fnmatch.fnmatchcase(metric, pattern) for pattern in known.get(split, ()))


def check_metric(key: str, name: str, config: RunConfig) -> None:
    """SpecError when `name` (split/metric) is not something a run of `config` reports, with a suggestion."""
    known = reported_metrics(config)
    if not known or metric_known(name, known):
        return
    split, _, _metric = name.partition("/")
    concrete = list(dict.fromkeys(f"{s}/{m}" for s, names in known.items() for m in names
                                  if not any(c in m for c in "*?[")))
    close = difflib.get_close_matches(name, concrete, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    evaluated = {"test": "test", "valid_eval": "valid", "train_eval": "train"}.get(split)
    if split not in known and evaluated is not None:  # a full-evaluation split this config does not evaluate
        listing = (f"{split}/ comes from the final evaluation of the {evaluated} split, which needs eval.final=true "
                   f"and {evaluated} in eval.splits (now {list(config.eval.splits) if config.eval.final else 'off'})")
    elif split not in known:
        listing = f"its splits are {', '.join(known)}"
    else:
        listing = f"{split}/ holds {', '.join(known[split])}"
    raise SpecError(f"{key}: '{name}' is not a metric {config.algorithm} reports{hint}; {listing}")


class DefineByRunSpace:
    """Optuna define-by-run space: `OptunaSearch(space=DefineByRunSpace(params))`.

    A module-level class so its instances pickle (Tune pickles the searcher with the experiment state and
    `Tuner.restore` needs it back). It suggests each parameter whose `when` holds and returns None: a returned
    dict would override suggested values (ray issue #35319), and constants live in the trial config instead.
    """

    def __init__(self, params: tuple[Param, ...]) -> None:
        self.params = params

    def __call__(self, trial: Any) -> None:
        values: dict[str, Any] = {}
        for param in self.params:
            if param.active(values):
                values[param.name] = param.suggest(trial)


@dataclass(frozen=True)
class Objective:
    name: str
    goal: Literal["minimize", "maximize"]

    @property
    def mode(self) -> str:
        return "min" if self.goal == "minimize" else "max"


@dataclass(frozen=True)
class EarlyTerminate:
    metric: str
    mode: str
    time_attr: str
    grace_period: int
    max_t: int
    reduction_factor: float
    brackets: int


@dataclass(frozen=True)
class Resources:
    cpu: float
    gpu: float
    workers: int
    driver_cpu: float
    custom: dict[str, float] = field(default_factory=dict)

    def trial_bundle(self) -> dict[str, float]:
        """What Tune reserves for the trial itself (`tune.with_resources`)."""
        if self.workers > 1:  # the trial only drives a TorchTrainer whose workers get their own placement group
            return {"cpu": self.driver_cpu, **self.custom}
        return {"cpu": self.cpu, "gpu": self.gpu, **self.custom}

    def ray_bundles(self) -> list[dict[str, float]]:
        """Everything one trial holds in Ray (Ray's names): its own bundle, plus its Train workers' bundles."""
        if self.workers > 1:
            return [{"CPU": self.driver_cpu, **self.custom}] + [
                {"CPU": self.cpu, "GPU": self.gpu} for _ in range(self.workers)]
        return [{"CPU": self.cpu, "GPU": self.gpu, **self.custom}]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedSweep:
    """A validated sweep, ready for the runner; `to_json()` is what RESULTS/sweeps/<id>.json holds."""

    name: str
    sweep_id: str
    description: str
    algorithm: str
    dataset: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    method: str
    seed: int
    num_samples: int
    max_concurrent: int
    resources: Resources
    early_terminate: EarlyTerminate | None
    storage: str | None
    optuna_storage: str | None
    max_failures: int
    train_max_failures: int
    smoke: bool
    base_config: RunConfig
    source: str | None = None
    points: tuple[dict[str, Any], ...] | None = None  # method grid: every trial's parameters, in order
    pending_timeout_s: float = PENDING_TIMEOUT_S

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def space(self) -> DefineByRunSpace:
        return DefineByRunSpace(self.params)

    @property
    def paths(self) -> dict[str, str]:
        return {p.name: p.target for p in self.params}

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        """The RunConfig of one trial: fixed settings, then the sampled (active) parameters."""
        return trial_config(self.algorithm, self.dataset, self.fixed, self.paths, params)


    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "name": self.name,
            "description": self.description,
            "algorithm": self.algorithm,
            "dataset": self.dataset,
            "method": self.method,
            "seed": self.seed,
            "metric": asdict(self.objectives[0]) if not self.multi_objective else None,
            "metrics": [asdict(o) for o in self.objectives],
            "parameters": {p.name: p.to_json() for p in self.params},
            "fixed": self.fixed,
            "num_samples": self.num_samples,
            "max_concurrent": self.max_concurrent,
            "resources": self.resources.to_json(),
            "early_terminate": asdict(self.early_terminate) if self.early_terminate else None,
            "storage": self.storage,
            "optuna_storage": self.optuna_storage,
            "smoke": self.smoke,
            "source": self.source,
            "points": list(self.points) if self.points is not None else None,
            "pending_timeout_s": self.pending_timeout_s,
        }

    def fingerprint(self) -> str:
        """What must not change when a sweep is resumed (Tune cannot change a search space on restore)."""
        keep = {k: v for k, v in self.to_json().items()
                if k not in ("description", "source", "storage", "pending_timeout_s", "num_samples")}
        return json.dumps(keep, sort_keys=True, default=str)

    def describe(self) -> str:
        lines = [
            f"sweep {self.sweep_id}: {self.algorithm} on {self.dataset}" + (" (smoke)" if self.smoke else ""),
            "  objective: " + ", ".join(f"{o.name} ({o.goal})" for o in self.objectives),
            (f"  method: {self.method} (seed {self.seed}); trials: {self.num_samples}; "
             f"concurrent: {self.max_concurrent}"),
            f"  resources per trial: {self.resources.to_json()} (Tune bundle {self.resources.trial_bundle()})",
        ]
        if self.early_terminate:
            e = self.early_terminate
            lines.append(
                f"  early_terminate: ASHA on {e.metric} ({e.mode}), time_attr={e.time_attr}, "
                f"grace_period={e.grace_period}, max_t={e.max_t}, reduction_factor={e.reduction_factor}, "
                f"brackets={e.brackets}"
            )
        lines.append("  parameters:")
        width = max((len(p.name) for p in self.params), default=0)
        for p in self.params:
            lines.append(f"    {p.name:<{width}}  {p.describe()}")
            lines.append(f"    {'':<{width}}    optuna: {p.optuna_repr()}   tune: {p.tune_repr()}")
        if self.fixed:
            lines.append("  fixed:")
            for key, value in sorted(self.fixed.items()):
                lines.append(f"    {key} = {value!r}")
        lines.append(f"  storage: {self.storage or '<results>/tune'}"
                     + (f"; optuna storage: {self.optuna_storage}" if self.optuna_storage else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- parsing


def _format_pydantic(err: ValidationError, prefix: str = "") -> str:
    out = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "<spec>"
        if item["type"] == "extra_forbidden":
            out.append(f"unknown key '{key}'{_suggest_key(key)}")
        elif item["type"] == "missing":
            out.append(f"missing key '{key}'")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            out.append(f"'{key}': {msg}" + (f" (got {item['input']!r})" if "input" in item and
                                             not isinstance(item["input"], Mapping) else ""))
    return "; ".join(out)


def _is_multiple(x: float, step: float) -> bool:
    ratio = x / step
    return abs(ratio - round(ratio)) < 1e-9


def _known_keys() -> list[str]:
    keys = ["n_trials", "num_samples", "n_jobs", "max_concurrent_trials", "min_iter", "max_iter", "eta", "mode"]
    for model in (SweepSpec, ParamSpec, MetricSpec, ResourcesSpec, EarlyTerminateSpec, SmokeSpec):
        keys += list(model.model_fields)
    return list(dict.fromkeys(keys))


# Names other sweep tools (W&B, Hydra, Tune) give to a key of a parameter that this spec spells otherwise
PARAM_KEY_SYNONYMS = {"step": "q", "low": "min", "high": "max", "lower": "min", "upper": "max",
                      "choices": "values", "log_scale": "log"}


def _suggest_key(path: str) -> str:
    """A hint for the unknown key at dotted `path` (parameters.<name>.<key> for a parameter's keys)."""
    key = path.rsplit(".", 1)[-1]
    if (path.startswith("parameters.") or ".parameters." in path) and key in PARAM_KEY_SYNONYMS:
        return f" (did you mean {PARAM_KEY_SYNONYMS[key]!r}?)"
    close = difflib.get_close_matches(key, _known_keys(), n=2, cutoff=0.7)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


_SHORTHAND = re.compile(r"^\s*(choice|interval|range|tag|int)\s*\(")


def parse_shorthand(text: str) -> dict[str, Any]:
    """Hydra's override grammar for a sweep dimension, e.g. `choice(64, 128)`, `tag(log, interval(1e-5, 1e-2))`,
    `int(interval(1, 8))`, `range(10, 40, 10)`. `range(a, b, s)` means Python's range: b is excluded, so it
    becomes an int parameter from a to the last value below b with step s."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise SpecError(f"cannot parse '{text}': {err.msg}") from None

    def literal(n: ast.AST) -> Any:
        if isinstance(n, ast.Name):  # bare words inside choice(...) are strings, as in Hydra
            return n.id
        try:
            return ast.literal_eval(n)
        except ValueError:
            raise SpecError(f"'{text}': {ast.unparse(n)} is not a literal") from None

    def build(n: ast.AST) -> dict[str, Any]:
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
            raise SpecError(f"'{text}': expected choice(...), interval(...), range(...), tag(...) or int(...)")
        fn, args = n.func.id, n.args
        if n.keywords and fn != "range":
            raise SpecError(f"'{text}': keyword arguments are supported only for range(step=...)")
        if fn == "choice":
            return {"values": [literal(a) for a in args]}
        if fn == "interval":
            if len(args) != 2:
                raise SpecError(f"'{text}': interval takes two bounds")
            low, high = literal(args[0]), literal(args[1])
            return {"min": float(low), "max": float(high)}  # Hydra: interval is always a float range
        if fn == "range":
            nums = [literal(a) for a in args] + [literal(k.value) for k in n.keywords if k.arg == "step"]
            if not 1 <= len(nums) <= 3 or not all(isinstance(x, int) for x in nums):
                raise SpecError(f"'{text}': range takes 1 to 3 integers (start, stop, step)")
            values = list(range(*nums))
            if not values:
                raise SpecError(f"'{text}': the range is empty")
            step = nums[2] if len(nums) == 3 else 1
            return {"min": values[0], "max": values[-1], "q": step}
        if fn == "int":
            if len(args) != 1:
                raise SpecError(f"'{text}': int(...) wraps one interval")
            inner = build(args[0])
            if "min" not in inner:
                raise SpecError(f"'{text}': int(...) wraps an interval")
            return {**inner, "min": int(inner["min"]), "max": int(inner["max"])}
        if fn == "tag":
            tags = [literal(a) for a in args[:-1]]
            inner = build(args[-1])
            if "log" in tags:
                inner["log"] = True
            unknown = [t for t in tags if t != "log"]
            if unknown:
                raise SpecError(f"'{text}': unknown tag(s) {unknown} (only 'log' has a meaning)")
            return inner
        raise SpecError(f"'{text}': unknown function {fn}")

    return build(node)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _resolve_param(name: str, raw: Any, earlier: Mapping[str, Param]) -> Param | tuple[str, Any]:
    """A Param, or (path, value) for a parameter that is really a constant."""
    key = f"parameters.{name}"
    if isinstance(raw, str) and _SHORTHAND.match(raw):
        try:
            raw = parse_shorthand(raw)
        except SpecError as err:
            raise SpecError(f"{key}: {err}") from None
    if isinstance(raw, list):
        raise SpecError(f"{key}: write a list of choices as {{values: [...]}}")
    if not isinstance(raw, Mapping):
        return (name, raw)
    try:
        spec = ParamSpec.model_validate(_coerce_tree(dict(raw)))
    except ValidationError as err:
        raise SpecError(_format_pydantic(err, f"{key}.")) from None

    kind_hint = None
    log = spec.log
    if spec.distribution is not None:
        if spec.distribution in _REFUSED_DISTRIBUTIONS:
            raise SpecError(f"{key}.distribution: {spec.distribution} is refused: "
                            f"{_REFUSED_DISTRIBUTIONS[spec.distribution]}")
        if spec.distribution not in _DISTRIBUTIONS:
            raise SpecError(f"{key}.distribution: unknown distribution '{spec.distribution}' "
                            f"(known: {', '.join(_DISTRIBUTIONS)})")
        kind_hint = _DISTRIBUTIONS[spec.distribution]
        log = log or spec.distribution in ("log_uniform_values", "q_log_uniform_values")
        if spec.distribution.startswith("q_") and spec.q is None:
            raise SpecError(f"{key}: distribution {spec.distribution} needs `q`")

    given = [k for k in ("values", "value") if getattr(spec, k) is not None]
    has_range = spec.min is not None or spec.max is not None
    if len(given) + has_range > 1:
        raise SpecError(f"{key}: give one of `values`, `value` or `min`/`max`")
    if spec.value is not None or kind_hint == "constant":
        if spec.when:
            raise SpecError(f"{key}: a constant cannot have `when`; put it in `fixed` or use `values: [x]`")
        return (spec.path or name, spec.value)

    when: list[tuple[str, tuple[Any, ...]]] = []
    for parent, allowed in (spec.when or {}).items():
        if parent not in earlier:
            raise SpecError(f"{key}.when: '{parent}' is not a searched parameter of this sweep (or the "
                            "conditions form a cycle)")
        parent_param = earlier[parent]
        if parent_param.kind != "categorical":
            raise SpecError(f"{key}.when: '{parent}' must be a categorical parameter (`values:`)")
        allowed_t = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        bad = [v for v in allowed_t if v not in (parent_param.choices or ())]
        if bad:
            raise SpecError(f"{key}.when: {bad} not among the values of '{parent}' {list(parent_param.choices or ())}")
        when.append((parent, allowed_t))

    if spec.values is not None:
        if kind_hint not in (None, "categorical"):
            raise SpecError(f"{key}: distribution {spec.distribution} takes min/max, not values")
        if not spec.values:
            raise SpecError(f"{key}.values: empty list")
        for v in spec.values:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise SpecError(f"{key}.values: {v!r} is not a number, string, bool or null (Optuna's "
                                "categorical choices must be)")
        if len(set(map(json.dumps, spec.values))) != len(spec.values):
            raise SpecError(f"{key}.values: duplicate choices")
        if spec.q is not None or spec.log:
            raise SpecError(f"{key}: `q`/`log` apply to min/max ranges, not to values")
        return Param(name, "categorical", choices=tuple(spec.values), when=tuple(when), path=spec.path or "")

    if spec.min is None or spec.max is None:
        raise SpecError(f"{key}: give `values`, `value`, or both `min` and `max`")
    low, high, q = spec.min, spec.max, spec.q
    for label, v in (("min", low), ("max", high), ("q", q)):
        if v is not None and not math.isfinite(v):
            raise SpecError(f"{key}.{label}: must be finite")
    if not low < high:
        raise SpecError(f"{key}: min ({low}) must be below max ({high}); for one value use `value:`")
    is_int = (kind_hint == "int") or (kind_hint is None and _is_int(low) and _is_int(high)
                                     and (q is None or _is_int(q)))
    if kind_hint == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpecError(f"{key}: int_uniform needs integer min/max")
    if log and low <= 0:
        raise SpecError(f"{key}: log scale needs min > 0 (got {low})")
    if q is not None:
        if q <= 0:
            raise SpecError(f"{key}.q: must be positive")
        if log:
            # Optuna forbids step together with log=True (FloatDistribution/IntDistribution raise).
            raise SpecError(f"{key}: `q` cannot be combined with `log: true` (Optuna forbids step with log)")
        if q > high - low:
            raise SpecError(f"{key}.q: step {q} exceeds the range [{low}, {high}]")
    # Optuna (and Tune's q* domains) silently lower `high` to the last value min + k*step; say so, and store
    # the bound that actually runs, keeping the written one only as a note.
    written_max = None
    if q is not None:
        last = low + math.floor((high - low) / q + 1e-9) * q
        last = round(last) if is_int else round(float(last), 12)
        if abs(last - high) > 1e-9 * max(1.0, abs(high)):
            written_max, high = high, last
    if is_int:
        return Param(name, "int", low=int(low), high=int(high), log=log, step=int(q) if q else None,
                     when=tuple(when), path=spec.path or "", written_max=written_max)
    return Param(name, "float", low=float(low), high=float(high), log=log, step=float(q) if q else None,
                 when=tuple(when), path=spec.path or "", written_max=written_max)


def _parents(raw: Any) -> list[str]:
    when = raw.get("when") if isinstance(raw, Mapping) else None
    return list(when) if isinstance(when, Mapping) else []


def _flat_fixed(fixed: Mapping[str, Any], key: str) -> dict[str, Any]:
    out = flatten(_coerce_tree(dict(fixed)))
    for path in out:
        if path in ("algorithm", "dataset"):
            raise SpecError(f"{key}.{path}: set the top-level `{path}:` key instead")
    return out


def _field_at(algorithm: str, path: str) -> Any:
    """The pydantic FieldInfo a RunConfig path leads to; SpecError naming the path when there is none."""
    from pydantic import BaseModel as _Model

    from raygen.algorithms import algorithm_class
    from raygen.config import EvalConfig, TrainConfig
    from raygen.data.base import DataConfig

    parts = path.split(".")
    sections: dict[str, type[_Model]] = {"train": TrainConfig, "eval": EvalConfig, "data": DataConfig,
                                         "algo": algorithm_class(algorithm).Config}
    if len(parts) == 1:
        if parts[0] in ("seed", "device"):
            return RunConfig.model_fields[parts[0]]
        raise SpecError(f"'{path}' is not a config path (use section.key, e.g. train.lr or algo.{path})"
                        f"{_suggest_path(algorithm, path)}")
    model = sections.get(parts[0])
    if model is None:
        raise SpecError(f"unknown config section '{parts[0]}' in '{path}' (sections: {', '.join(sections)}, seed)")
    for i, part in enumerate(parts[1:], start=1):
        info = model.model_fields.get(part)
        if info is None:
            raise SpecError(f"unknown config key '{'.'.join(parts[: i + 1])}'{_suggest_path(algorithm, path)}")
        if i == len(parts) - 1:
            return info
        nested = info.annotation
        if not (isinstance(nested, type) and issubclass(nested, _Model)):
            raise SpecError(f"'{'.'.join(parts[: i + 1])}' is a value, not a section, in '{path}'")
        model = nested
    raise AssertionError(path)


def _suggest_path(algorithm: str, path: str) -> str:
    try:
        from raygen.algorithms import algorithm_class
        from raygen.config import EvalConfig, TrainConfig
        from raygen.data.base import DataConfig

        candidates = ["seed", "device"]
        for section, model in (("train", TrainConfig), ("eval", EvalConfig), ("data", DataConfig),
                               ("algo", algorithm_class(algorithm).Config)):
            candidates += [f"{section}.{k}" for k in model.model_fields]
    except Exception:  # noqa: BLE001 - a suggestion is best effort
        return ""
    close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_value(algorithm: str, key: str, path: str, value: Any) -> None:
    """Validate one value against the field at `path` alone (type and bounds; cross-field rules are checked
    on whole trial configs: every point of a grid here, sampled points when their trial starts)."""
    from typing import Annotated

    from pydantic import TypeAdapter

    info = _field_at(algorithm, path)
    adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
    try:
        adapter.validate_python(value)
    except ValidationError as err:
        msg = "; ".join(e["msg"] for e in err.errors())
        raise SpecError(f"{key}: value {value!r} is not valid for {path}: {msg}") from None


def _check_space(algorithm: str, dataset: str, fixed: dict[str, Any], params: tuple[Param, ...],
                 points: list[dict[str, Any]] | None) -> RunConfig:
    """Fail now, naming the parameter, on wrong paths, types and out-of-range bounds."""
    try:
        base = build_config(algorithm=algorithm, dataset=dataset, overrides=fixed)
    except (ConfigError, KeyError) as err:
        raise SpecError(f"fixed: {err.args[0] if isinstance(err, KeyError) else err}") from None
    for p in params:
        if p.target in ("algorithm", "dataset"):
            raise SpecError(f"parameters.{p.name}: sweeping the {p.target} is not supported; write one spec each")
        for value in p.candidates():
            try:
                _check_value(algorithm, f"parameters.{p.name}", p.target, value)
            except SpecError as err:
                raise SpecError(str(err) if str(err).startswith("parameters.") else
                                f"parameters.{p.name}: {err}") from None
    # Two parameters may set one path only in branches that exclude each other.
    by_path: dict[str, list[Param]] = {}
    for p in params:
        by_path.setdefault(p.target, []).append(p)
    for path, group in by_path.items():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                exclusive = any(pa == pb and not set(va) & set(vb) for pa, va in a.when for pb, vb in b.when)
                if not exclusive:
                    raise SpecError(f"parameters.{b.name}: sets {path} like '{a.name}' does; give them `when` "
                                    "conditions on one parameter with disjoint values")
    if points is None:
        _check_pairs(algorithm, dataset, fixed, params)
    if points is not None:
        paths = {p.name: p.target for p in params}
        for point in points:
            try:
                trial_config(algorithm, dataset, fixed, paths, point)
            except (ConfigError, KeyError) as err:
                msg = err.args[0] if isinstance(err, KeyError) else str(err)
                raise SpecError(f"grid point {point}: {msg}") from None
    return base


def _check_pairs(algorithm: str, dataset: str, fixed: dict[str, Any], params: tuple[Param, ...]) -> None:
    """Cross-field rules of the config (e.g. professor's gate_generator <= gate_discriminator) on every pair
    of parameters at the ends of their ranges: a space in which a sampler can draw a refused combination is
    refused now, not as failed trials later. (A grid checks each of its points instead.)"""
    by_name = {p.name: p for p in params}
    paths = {p.name: p.target for p in params}

    def branch(p: Param) -> dict[str, Any]:
        """Parent values that make `p` active (the last allowed value of each condition)."""
        return {parent: allowed[-1] for parent, allowed in p.when}

    for i, a in enumerate(params):
        for b in params[i + 1:]:
            if a.target == b.target:
                continue
            for va in a.candidates()[:12]:
                for vb in b.candidates()[:12]:
                    point = {**branch(a), **branch(b), a.name: va, b.name: vb}
                    if not (a.active(point) and b.active(point)) or not set(point) <= set(by_name):
                        continue  # never active together (or conditioned on a constant)
                    try:
                        trial_config(algorithm, dataset, fixed, paths, point)
                    except (ConfigError, KeyError) as err:
                        msg = err.args[0] if isinstance(err, KeyError) else str(err)
                        raise SpecError(f"parameters.{a.name} and parameters.{b.name}: {a.name}={va!r} with "
                                        f"{b.name}={vb!r} is refused ({msg}); define the ranges so that the "
                                        "combination cannot occur") from None


def _resolve_method(method: str | None, multi: bool) -> str:
    if method is None:
        return "nsga2" if multi else "tpe"
    name = METHOD_ALIASES.get(method, method)
    if name not in METHODS:
        raise SpecError(f"method: unknown method '{method}' (known: {', '.join(METHODS)}; bayes = tpe)")
    return name


def resolve(raw: Mapping[str, Any], *, smoke: bool = False, source: str | None = None) -> ResolvedSweep:
    """Validate a loaded spec mapping and resolve it (optionally as its --smoke miniature)."""
    if not isinstance(raw, Mapping):
        raise SpecError("a sweep spec must be a mapping at the top level")
    top = {k: (_coerce_tree(v) if k not in ("name", "description", "storage", "optuna_storage",
                                             "algorithm", "dataset", "fixed", "parameters", "smoke") else v)
           for k, v in raw.items()}
    try:
        spec = SweepSpec.model_validate(top)
    except ValidationError as err:
        raise SpecError(_format_pydantic(err)) from None

    if spec.metric is not None and spec.metrics is not None:
        raise SpecError("give either `metric` or `metrics`, not both")
    objectives = [spec.metric] if spec.metric is not None else list(spec.metrics or [])
    if not objectives:
        raise SpecError("missing key 'metric' (e.g. metric: {name: valid/lower_bound, goal: maximize})")
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise SpecError(f"metrics: duplicate metric names {names}")
    multi = len(objectives) > 1
    method = _resolve_method(spec.method, multi)

    dataset = spec.dataset
    fixed = _flat_fixed(spec.fixed, "fixed")
    raw_params = dict(spec.parameters)
    resources = spec.resources
    run_cap, concurrency = spec.run_cap, spec.max_concurrent
    if smoke:
        dataset = spec.smoke.dataset or dataset
        fixed = {**fixed, **SMOKE_FIXED, **_flat_fixed(spec.smoke.fixed, "smoke.fixed")}
        for name, replacement in spec.smoke.parameters.items():
            if name not in raw_params:
                raise SpecError(f"smoke.parameters.{name}: not a parameter of the sweep")
            raw_params[name] = replacement
        resources = spec.smoke.resources
        concurrency = spec.smoke.max_concurrent

    if not raw_params:
        raise SpecError("parameters: at least one parameter is needed")
    params: list[Param] = []
    by_name: dict[str, Param] = {}
    # Resolve parents before the parameters conditioned on them (YAML writers may sort keys); otherwise keep
    # the written order, which is the order Optuna is asked in.
    pending = list(raw_params.items())
    while pending:
        ready = [item for item in pending if all(parent in by_name for parent in _parents(item[1]))]
        for name, raw_param in ready or pending[:1]:  # nothing ready: the first one reports why
            if not isinstance(name, str) or not name:
                raise SpecError(f"parameters: bad parameter name {name!r}")
            resolved_param = _resolve_param(name, raw_param, by_name)
            pending.remove((name, raw_param))
            if isinstance(resolved_param, tuple):
                fixed[resolved_param[0]] = resolved_param[1]
                continue
            params.append(resolved_param)
            by_name[name] = resolved_param
    if not params:
        raise SpecError("parameters: every parameter is a constant; nothing to search")
    for name in by_name:
        if name in fixed and not smoke:
            raise SpecError(f"parameters.{name}: also set in `fixed`; keep one")
        fixed.pop(name, None)  # a smoke fixed value never shadows a searched parameter
    params_t = tuple(params)

    # Sampler-specific limits, checked here rather than discovered mid-sweep.
    points: list[dict[str, Any]] | None = None
    if method == "grid":
        for p in params_t:
            if p.kind == "float" and p.step is None:
                raise SpecError(f"parameters.{p.name}: method grid needs `values` or `q` for a float range")
            if p.log:
                raise SpecError(f"parameters.{p.name}: method grid cannot enumerate a log range; list `values`")
        size = grid_size(params_t)
        if size > GRID_CAP:
            raise SpecError(f"method grid: the grid has more than {GRID_CAP:,} points (at least {size:,}); "
                            "list fewer values, or use method: random with a run_cap")
        # Every dimension becomes the list of its values; conditional branches are enumerated, and the points
        # are queued in Optuna (enqueue_trial), which GridSampler cannot do for conditional spaces.
        params_t = tuple(replace(p, kind="categorical", choices=tuple(p.grid_values()), low=None, high=None,
                                 step=None) for p in params_t)
        points = grid_points(params_t)
        if run_cap is not None and run_cap > len(points):
            raise SpecError(f"run_cap: {run_cap} exceeds the {len(points)} points of the grid")
        cap = min(run_cap or len(points), spec.smoke.run_cap if smoke else len(points))
        if cap < len(points):  # a seeded subset rather than the first rows of the product
            points = sorted(random.Random(spec.seed).sample(points, cap), key=points.index)
        num_samples = len(points)
    else:
        if run_cap is None:
            raise SpecError("missing key 'run_cap' (number of trials; aliases n_trials, num_samples)")
        num_samples = min(run_cap, spec.smoke.run_cap) if smoke else run_cap
    if method == "cmaes":
        bad = [p.name for p in params_t if p.kind == "categorical" or p.when]
        if bad:
            raise SpecError(f"method cmaes: CMA-ES needs a flat numeric space; categorical or conditional "
                            f"parameters: {', '.join(bad)} (use tpe)")
        if multi:
            raise SpecError("method cmaes: CMA-ES is single-objective (use nsga2 or tpe for `metrics`)")
    if method == "gp" and multi:
        raise SpecError("method gp: use nsga2 or tpe for several objectives")
    if method == "gp":
        bad = [p.name for p in params_t if p.when]
        if bad:
            # GPSampler models only the parameters of every trial; conditional ones it samples at random.
            raise SpecError(f"method gp: Optuna's GP sampler draws conditional parameters at random; "
                            f"conditional parameters: {', '.join(bad)} (use tpe)")

    base = _check_space(spec.algorithm, dataset, fixed, params_t, points)
    for i, o in enumerate(objectives):
        check_metric("metric.name" if spec.metric is not None else f"metrics.{i}.name", o.name, base)

    early = None
    if spec.early_terminate is not None:
        e = spec.early_terminate
        if e.metric is None and multi:
            raise SpecError("early_terminate.metric: required with several objectives (ASHA needs one metric)")
        metric = e.metric or objectives[0].name
        if e.metric is not None:
            check_metric("early_terminate.metric", metric, base)
        goal = e.goal or next((o.goal for o in objectives if o.name == metric), None)
        if goal is None:
            raise SpecError("early_terminate.goal: required when early_terminate.metric is not an objective")
        max_t = e.max_t or (base.train.steps if e.time_attr == "step" else 100)
        grace = e.grace_period
        if smoke:
            grace = spec.smoke.grace_period or max(1, min(grace, base.train.steps // 4))
            max_t = base.train.steps if e.time_attr == "step" else max_t
        if grace > max_t:
            raise SpecError(f"early_terminate.grace_period ({grace}) exceeds max_t ({max_t})")
        early = EarlyTerminate(metric, "min" if goal == "minimize" else "max", e.time_attr, grace, max_t,
                               e.reduction_factor, e.brackets)

    if spec.optuna_storage is not None and "://" not in spec.optuna_storage:
        raise SpecError(f"optuna_storage: '{spec.optuna_storage}' is not a database URL (e.g. sqlite:///optuna.db)")
    if resources.workers > 1 and resources.gpu == 0 and base.device == "cuda":
        raise SpecError("fixed.device is cuda but resources.gpu is 0")

    return ResolvedSweep(
        name=spec.name,
        sweep_id=f"{spec.name}-smoke" if smoke else spec.name,
        description=spec.description,
        algorithm=spec.algorithm,
        dataset=dataset,
        fixed=fixed,
        params=params_t,
        objectives=tuple(Objective(o.name, o.goal) for o in objectives),
        method=method,
        seed=spec.seed,
        num_samples=num_samples,
        max_concurrent=concurrency,
        resources=Resources(resources.cpu, resources.gpu, resources.workers, resources.driver_cpu,
                            dict(resources.custom)),
        early_terminate=early,
        storage=spec.storage,
        optuna_storage=spec.optuna_storage,
        max_failures=spec.max_failures,
        train_max_failures=spec.train_max_failures,
        smoke=smoke,
        base_config=base,
        source=source,
        points=tuple(points) if points is not None else None,
        pending_timeout_s=spec.pending_timeout_s,
    )


def load_spec(path: str | Path, *, smoke: bool = False) -> ResolvedSweep:
    """Read and resolve a sweep YAML file; every problem raises SpecError naming the key."""
    try:
        raw = load_yaml(path)
    except ConfigError as err:
        raise SpecError(str(err).replace("config file", "sweep spec", 1)) from None
    if not raw:
        raise SpecError(f"{path} is empty")
    return resolve(raw, smoke=smoke, source=str(path))


# ---------------------------------------------------------------------------------------------- best trial

# Statuses a trial may be ranked with. A trial stopped early by the scheduler holds half-trained values (and
# Optuna is told it was PRUNED), so it is never "best", in the sweep's summary, the report or the dashboard.
RANKED_STATUSES = ("completed",)


def rankable(trials: Any, objective_columns: Sequence[str]) -> Any:
    """Boolean Series over a trials frame (a `status` column and one column per objective): the trials that may
    be called best — completed (trained their whole budget, then evaluated) with every objective finite. The one
    definition `raygen sweep`, `raygen report` and the dashboard share."""
    import numpy as np
    import pandas as pd

    ok = trials["status"].isin(RANKED_STATUSES) if "status" in trials.columns else pd.Series(True, index=trials.index)
    for column in objective_columns:
        if column not in trials.columns:
            return pd.Series(False, index=trials.index)
        ok &= np.isfinite(pd.to_numeric(trials[column], errors="coerce").astype(float))
    return ok
