import pytest
import yaml
from pydantic import ValidationError

from raygen.config import ConfigError, RunConfig, build_config, parse_override


def test_unknown_key_is_named(toy_algorithm):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.stepz'.*train\.steps"):
        build_config(algorithm=toy_algorithm, dataset="toy2d:circle", overrides={"train.stepz": 3})


def test_unknown_top_level_key_in_file_is_named(toy_algorithm, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: meanfit\ndataset: toy2d:circle\nseeed: 3\n")
    with pytest.raises(ConfigError, match="seeed"):
        build_config(file=path)


def test_wrong_type_names_key_and_value(toy_algorithm):
    with pytest.raises(ConfigError, match=r"train\.batch_size.*'many'"):
        build_config(algorithm=toy_algorithm, dataset="toy2d:circle", overrides=["train.batch_size=many"])


def test_impossible_value_rejected(toy_algorithm):
    with pytest.raises(ConfigError, match=r"train\.steps"):
        build_config(algorithm=toy_algorithm, dataset="toy2d:circle", overrides=["train.steps=0"])


def test_unknown_algorithm_and_dataset():
    with pytest.raises(ConfigError, match="unknown algorithm 'nope'"):
        build_config(algorithm="nope", dataset="digits")


def test_bare_key_resolves_when_unique_and_yaml_types(toy_algorithm):
    cfg = build_config(
        algorithm=toy_algorithm, dataset="toy2d:circle", overrides=["lr=1.0e-3", "updates_per_step=3", "seed=5"]
    )
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.algo.updates_per_step == 3
    assert cfg.seed == 5


def test_yaml_1_1_numeric_string_is_coerced(toy_algorithm):
    # PyYAML loads `1e-5` as the string "1e-5"; numeric fields must still accept it.
    key, value = parse_override("train.lr=1e-5")
    assert value == "1e-5"
    assert build_config(algorithm=toy_algorithm, dataset="digits", overrides={key: value}).train.lr == 1e-5


def test_precedence_file_then_overrides(toy_algorithm, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"algorithm": "meanfit", "dataset": "digits", "train": {"lr": 0.5, "steps": 7}}))
    cfg = build_config(file=path, overrides={"train.steps": 9})
    assert (cfg.train.lr, cfg.train.steps) == (0.5, 9)


def test_round_trip_yaml_and_frozen(toy_algorithm):
    cfg = build_config(algorithm=toy_algorithm, dataset="digits", overrides={"explode_at": 4})
    again = RunConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert type(again.algo).__name__ == "MeanFitConfig"
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 3


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("justakey")
