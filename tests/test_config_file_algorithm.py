"""A config file written for one algorithm, used with another (`raygen config walkback > my.yaml`, then
`raygen train infusion --config my.yaml`), is refused with one message naming both algorithms rather than a
list of "unknown config key" errors, one per walkback field."""

from __future__ import annotations

import pytest
import yaml

from raygen.config import ConfigError, build_config


def test_a_config_file_for_another_algorithm_names_both(tmp_path):
    path = tmp_path / "my.yaml"
    tree = build_config(algorithm="walkback", dataset="toy2d:swissroll").model_dump(mode="json")
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as err:
        build_config(algorithm="infusion", file=path)
    message = str(err.value)
    assert "walkback" in message and "infusion" in message and "unknown config key" not in message
    assert "\n" not in message
    # the same file with its own algorithm, or with none named, still builds
    assert build_config(algorithm="walkback", file=path).algorithm == "walkback"
    assert build_config(file=path).algorithm == "walkback"
