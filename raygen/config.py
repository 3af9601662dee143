"""Typed run configuration: one frozen pydantic model per component, composed into `RunConfig`.

Precedence (lowest first): class defaults < the algorithm's presets for the dataset kind (then for the named
dataset) < a YAML file
< `key=value` overrides. The resolved config is what gets stored with every result row and checkpoint.
Unknown keys, wrong types and impossible values fail here, before any work starts, naming the key.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the offending key."""


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected, defaults validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class TrainConfig(Section):
    """Budget, optimiser and cadence, shared by every algorithm (the loop owns these)."""

    steps: int = Field(2000, ge=1, description="training budget in optimizer updates")
    batch_size: int = Field(100, ge=1)
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (VW code and PF thesis: 1e-4)")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None disables clipping")
    log_every: int = Field(50, ge=1, description="report training metrics every N updates")
    eval_every: int = Field(500, ge=1, description="run the quick validation evaluation every N updates")
    eval_examples: int = Field(500, ge=1, description="validation examples used by the in-training evaluation")
    checkpoint_every: int = Field(1000, ge=1, description="write a checkpoint every N updates")
    select_metric: str | None = Field(
        None,
        description="validation metric (a valid/ key without the prefix) whose best value picks the model the "
        "final evaluation scores (VW Algorithm 1: early stopping on the validation bound; Infusion TAB A.1: "
        "'best lower bound value on the validation set'). None: the algorithm's validation objective "
        "(lower_bound for walkback/infusion, nll for sequence models)",
    )
    select_mode: Literal["max", "min"] | None = Field(
        None, description="whether a larger or smaller select_metric is better (None: the algorithm's default)"
    )
    select_best: bool = Field(
        True, description="evaluate the best-on-validation state; false: the last update (no model selection)"
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many validation evaluations without improvement (None: never)"
    )
    progress: bool = Field(
        True, description="show progress: a bar in a terminal or notebook, else a log line every progress_every updates"
    )
    progress_every: int | None = Field(
        None, ge=1, description="updates between progress log lines when stderr is not a terminal (None: eval_every)"
    )
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms on CPU runs")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads (None: torch's default). Use 1 when several runs share a machine: "
        "oversubscribed OpenMP threads spin and can make a step ten times slower",
    )


class EvalConfig(Section):
    """The evaluation suite run by `raygen evaluate` and at the end of training."""

    final: bool = Field(True, description="run the evaluation suite on the test split after training")
    splits: tuple[str, ...] = Field(("test", "train"), description="Table 3.1 reports test and train")
    test_examples: int | None = Field(1000, ge=1, description="IS/LB examples (Infusion TAB 3.1: 1000 test)")
    train_examples: int | None = Field(100, ge=1, description="IS/LB examples on train (Infusion TAB 3.1: 100)")
    likelihood_samples: int = Field(
        20, ge=1, description="k importance samples per example (footnote 4: LB=mean, IS=logsumexp-log k). The "
        "IS estimate grows with k; the papers used far more (VW §3.4.2: 'a large number of destructive paths', no "
        "number; Infusion §3.5.1: '20 000 intermediates samples'); 20 keeps CPU evaluation cheap. Every IS "
        "number is stored with its k (importance_k)"
    )
    repeats: int = Field(10, ge=1, description="repeated evaluations reported as mean ± std (Infusion TAB 3.1)")
    dequantize: bool = Field(True, description="add U(0,1/256) noise to scaled test points (Infusion §3.5)")
    isotropic: bool = Field(False, description="also report the isotropic-output IS variant (Table 3.1)")
    parzen: bool = True
    parzen_samples: int = Field(10_000, ge=1, description="generated samples for Parzen (Infusion §3.5.1)")
    parzen_sigmas: tuple[float, ...] = Field(
        (0.1, 0.1292, 0.1668, 0.2154, 0.2783, 0.3594, 0.4642, 0.5995, 0.7743, 1.0),
        description="σ grid searched on the validation split (10 log-spaced values in [0.1, 1], Goodfellow)",
    )
    parzen_valid_examples: int = Field(1000, ge=1, description="validation points used to choose σ")
    parzen_batch: int = Field(100, ge=1)
    sample_count: int = Field(64, ge=1, description="samples drawn for the picture artifacts")
    chain_count: int = Field(8, ge=1, description="chains drawn for the chain picture artifacts")
    chain_steps: int | None = Field(
        None, ge=1, description="length of the long T=1 chain pictures (None: the algorithm's default)"
    )
    inception_path: str | None = Field(
        None,
        description="TorchScript feature network mapping images (N, 3, H, W) in [0, 1] to (logits, pool features), "
        "e.g. the user's own Inception-v3 export (raygen downloads none): when set, test/inception_score(_std) "
        "and test/fid (against the test split) are reported for image datasets",
    )
    inception_samples: int = Field(
        50_000, ge=2, description="samples scored by IS and FID (Salimans et al. 2016: 50 000 in 10 splits)"
    )
    inception_splits: int = Field(10, ge=1, description="IS is the mean ± std over this many splits (Salimans: 10)")
    classifier_score: bool = Field(
        False,
        description="offline stand-in for IS/FID: an MLP classifier trained on the dataset's own labels scores "
        "the samples as test/classifier_score(_std) and test/classifier_fid: different scores from IS and FID, "
        "comparable only between models of the same dataset",
    )
    classifier_steps: int = Field(2000, ge=1, description="Adam updates (batch 100) of the classifier_score classifier")


class LogConfig(Section):
    """Where a run's metrics and pictures go besides the results store (which stays the source of truth):
    each switch turns on an adapter on the report path that mirrors every metric and image the run writes."""

    tensorboard: bool = Field(False, description="write TensorBoard event files (tensorboardX, installed with Ray)")
    tensorboard_dir: str | None = Field(
        None, description="TensorBoard log directory; each run writes <dir>/<run_id> (None: <results>/tensorboard)"
    )
    mlflow: bool = Field(False, description="log to MLflow (extra: pip install 'raygen[mlflow]')")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (None: MLflow's default, $MLFLOW_TRACKING_URI or ./mlruns)"
    )
    mlflow_experiment: str = Field("raygen", description="MLflow experiment name")
    wandb: bool = Field(False, description="log to Weights & Biases (extra: pip install 'raygen[wandb]')")
    wandb_project: str = Field("raygen", description="W&B project")
    wandb_entity: str | None = Field(None, description="W&B entity (None: the logged-in user's default)")
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B mode (None: W&B's default, $WANDB_MODE)"
    )
    send_images: bool = Field(True, description="send image artifacts (samples, chains) too, not only metrics")


class AlgoConfig(Section):
    """Base of the per-algorithm configs; each algorithm module defines its subclass beside its code."""


def _data_config_cls():
    from raygen.data.base import DataConfig

    return DataConfig


def _validate_section(name: str, cls: type[Section], value: Any) -> Section:
    """Validate a section inside RunConfig's before-validator, keeping the section name in error locations
    (without it an error would name 'operator' instead of 'algo.operator')."""
    try:
        return cls.model_validate(value if value is not None else {})
    except ValidationError as err:
        details = []
        for e in err.errors():
            detail = {"type": e["type"], "loc": (name, *e["loc"]), "input": e["input"]}
            if "ctx" in e:
                detail["ctx"] = e["ctx"]
            details.append(detail)
        raise ValidationError.from_exception_data(err.title, details) from None


class RunConfig(Section):
    """Everything that describes one run. `algo` is the config class registered for `algorithm`."""

    algorithm: str
    dataset: str
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()
    data: SerializeAsAny[Section] = Field(default_factory=lambda: _data_config_cls()())
    algo: SerializeAsAny[AlgoConfig] = Field(default_factory=AlgoConfig)

    @model_validator(mode="before")
    @classmethod
    def _typed_sections(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        from raygen.algorithms import algorithm_class

        values = dict(values)
        if "algorithm" not in values:
            return values
        algo_cls = algorithm_class(values["algorithm"]).Config
        algo = values.get("algo", {})
        if not isinstance(algo, algo_cls):
            values["algo"] = _validate_section("algo", algo_cls, algo)
        data = values.get("data", {})
        data_cls = _data_config_cls()
        if not isinstance(data, data_cls):
            data = _validate_section("data", data_cls, data)
        # What the dataset itself fixes (binarized MNIST's binarization) is recorded in the stored config.
        from raygen.data.registry import with_dataset_defaults

        values["data"] = with_dataset_defaults(values.get("dataset"), data)
        return values

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        return build_config(self.to_dict(), overrides=overrides)


# ---------------------------------------------------------------------------------------------- building


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _section_fields(name: str, algorithm: str | None) -> dict[str, Any]:
    """Field names of each section, for resolving bare override keys and suggesting fixes."""
    from raygen.algorithms import algorithm_class

    sections = {"train": TrainConfig, "eval": EvalConfig, "log": LogConfig, "data": _data_config_cls()}
    if algorithm:
        sections["algo"] = algorithm_class(algorithm).Config
    return sections if name == "*" else {name: sections[name]}


def _resolve_key(key: str, algorithm: str | None) -> list[str]:
    """Turn an override key into a path. `train.lr` stays; a bare `lr` is accepted when unique."""
    parts = key.split(".")
    if len(parts) > 1 or key in RunConfig.model_fields:
        return parts
    matches = [sec for sec, cls in _section_fields("*", algorithm).items() if key in cls.model_fields]
    if len(matches) == 1:
        return [matches[0], key]
    if len(matches) > 1:
        raise ConfigError(f"config key '{key}' is ambiguous: use one of {', '.join(m + '.' + key for m in matches)}")
    raise ConfigError(f"unknown config key '{key}'{_suggest(key, algorithm)}")


def _all_paths(algorithm: str | None) -> list[str]:
    paths = [k for k in RunConfig.model_fields]
    for sec, cls in _section_fields("*", algorithm).items():
        paths += [f"{sec}.{k}" for k in cls.model_fields]
        paths += list(cls.model_fields)
    return paths


def _suggest(key: str, algorithm: str | None) -> str:
    close = difflib.get_close_matches(key, _all_paths(algorithm), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (so `3`, `1.0e-4`, `[1, 2]`, `true` get their types)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse the value of override '{text}': {err}") from None
    return key, value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{'.'.join(path)}': '{part}' is not a section")
    node[path[-1]] = value


def _format_validation_error(err: ValidationError, algorithm: str | None) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{key}'{_suggest(key, algorithm)}")
        else:
            lines.append(f"config key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def build_config(
    base: Mapping[str, Any] | None = None,
    *,
    algorithm: str | None = None,
    dataset: str | None = None,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
) -> RunConfig:
    """Compose a validated `RunConfig` (see the module docstring for the precedence)."""
    from raygen.algorithms import algorithm_class
    from raygen.data import dataset_kind

    tree: dict[str, Any] = dict(base or {})
    if file is not None:
        loaded = load_yaml(file)
        written_for = loaded.get("algorithm")
        if algorithm is not None and written_for and written_for != algorithm and loaded.get("algo"):
            # its algo.* keys belong to the other algorithm: say so, not one "unknown key" per field
            raise ConfigError(f"{file} is a config for {written_for} (its algo.* keys are {written_for}'s), but "
                              f"{algorithm} was asked for: use `raygen config {algorithm}` to write one")
        tree = _deep_merge(tree, loaded)
    if algorithm is not None:
        tree["algorithm"] = algorithm
    if dataset is not None:
        tree["dataset"] = dataset
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    algorithm = tree.get("algorithm")
    override_tree: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in ("algorithm",):
            algorithm = value
        _set_path(override_tree, _resolve_key(key, algorithm), value)
    tree = _deep_merge(tree, override_tree)
    algorithm = tree.get("algorithm")
    if not algorithm:
        raise ConfigError("config key 'algorithm' is missing")
    if not tree.get("dataset"):
        raise ConfigError("config key 'dataset' is missing")
    try:
        cls = algorithm_class(algorithm)
        presets = _deep_merge(cls.presets(dataset_kind(tree["dataset"])), cls.dataset_presets(tree["dataset"]))
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None
    tree = _deep_merge(presets, tree)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, algorithm)) from None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used for Parquet columns and sweep parameter paths."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def explain_config(
    *,
    algorithm: str,
    dataset: str,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any, str, str]]:
    """(dotted key, value, source, description) of every field of the resolved config, `source` being where the
    value came from under `build_config`'s precedence: default, preset (the algorithm's for the dataset kind
    or the named dataset), file, argument (`algorithm` / `dataset` given here: ALGORITHM and --dataset on the
    command line) or override. `raygen config --explain` prints it."""
    from raygen.algorithms import algorithm_class
    from raygen.data import dataset_kind

    config = build_config(algorithm=algorithm, dataset=dataset, file=file, overrides=overrides)
    cls = algorithm_class(config.algorithm)
    layers = [
        ("preset", flatten(_deep_merge(cls.presets(dataset_kind(config.dataset)), cls.dataset_presets(config.dataset)))),
        ("file", flatten(load_yaml(file)) if file is not None else {}),
        ("argument", {k: v for k, v in (("algorithm", algorithm), ("dataset", dataset)) if v is not None}),
        ("override", {".".join(_resolve_key(k, config.algorithm)): v for k, v in (overrides or {}).items()}),
    ]
    rows: list[tuple[str, Any, str, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value, key = getattr(model, name), f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, key + ".")
                continue
            source = "default"
            for layer, keys in layers:  # lowest precedence first: the last layer naming the key wins
                if key in keys or any(k.startswith(key + ".") for k in keys):
                    source = layer
            rows.append((key, value, source, info.description or ""))

    walk(config, "")
    return rows
