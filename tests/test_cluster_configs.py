"""cluster.yaml and cluster-onprem.yaml pass the checks `ray up` runs before it contacts any machine.

`ray up` calls prepare_config (fills the provider's defaults, synthesises the local provider's node types)
and then validate_config (Ray's JSON schema, which rejects unknown keys). Both are offline; this is how Ray's
own test_autoscaler_yaml.py checks its example configs. They are private API, which is why Ray is pinned.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click
import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def check(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_up_offline_validation(name):
    prepared = check(load(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    commands = " ".join(prepared["setup_commands"])
    assert "pip install" in commands and "raygen" in commands
    assert any("RAY_AUTH_MODE=token" in c for c in prepared["head_start_ray_commands"])
    assert any("RAY_AUTH_MODE=token" in c for c in prepared["worker_start_ray_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in prepared["head_start_ray_commands"])


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.__setitem__("setup_command", c.pop("setup_commands")),
        lambda c: c.__setitem__("file_mount", c.pop("file_mounts")),
        lambda c: c["auth"].__setitem__("ssh_usr", c["auth"].pop("ssh_user")),
    ],
    ids=["setup_command", "file_mount", "auth.ssh_usr"],
)
def test_misspelled_key_is_rejected(name, mutate):
    config = load(name)
    mutate(config)
    with pytest.raises(jsonschema.ValidationError, match="was unexpected"):
        check(config)


def test_cloud_config_node_types():
    config = load("cluster.yaml")
    # The image must exist for this Ray version: rayproject/ray:<ray version>-py311-gpu.
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"]  # the head is on-demand
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU")]
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in gpu)
    assert any("InstanceMarketOptions" not in t["node_config"] for t in gpu)  # an on-demand fallback
    assert "driver" in head["resources"]  # trial drivers can be pinned to on-demand capacity
    # No shared file system: the results store is in S3, which every worker type reaches through an instance
    # profile (the head gets Ray's default one); nothing mounts a share that a new user would not have.
    assert all("IamInstanceProfile" in types[t]["node_config"] for t in ("gpu_spot", "gpu_on_demand"))
    assert not config["initialization_commands"] and not any("/mnt" in o for o in config["docker"]["run_options"])
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_spot"]["min_worker"] = bad["available_node_types"]["gpu_spot"].pop(
        "min_workers")
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        check(bad)


def test_onprem_config_uses_the_local_provider():
    config = load("cluster-onprem.yaml")
    prepared = check(config)
    assert prepared["provider"]["type"] == "local"
    # The local provider synthesises its node type from head_ip/worker_ips: every listed worker is started ...
    (node_type,) = prepared["available_node_types"].values()
    workers = len(config["provider"]["worker_ips"])
    assert node_type["min_workers"] == node_type["max_workers"] == prepared["max_workers"] == workers
    # ... and refuses node types written by hand (`ray up` stops with this message).
    bad = copy.deepcopy(config)
    bad["available_node_types"] = {"x": {"resources": {}, "node_config": {}, "max_workers": 1}}
    with pytest.raises(click.ClickException, match="available_node_types is not supported"):
        check(bad)
