"""algo.architecture=conv selects VW's convolutional image operator for Walkback and Infusion: a tiny run of
each on digits (8×8) from the CLI, the init_noise start of the conv F_σ head, and a clear refusal at build
for data that are not images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from raygen.cli import app
from raygen.config import ConfigError, build_config
from raygen.data import load_dataset
from raygen.engine.local import read_checkpoint
from raygen.engine.loop import build
from raygen.nets.conv import ConvOperator
from raygen.results import read_runs

runner = CliRunner()
CONV = ["algo.architecture=conv", "algo.conv.channels=[4, 8]", "algo.conv.hidden=[16]"]
TINY = ["train.batch_size=20", "train.eval_every=2", "train.eval_examples=20", "train.progress=false",
        "eval.splits=[test]", "eval.test_examples=20", "eval.repeats=1", "eval.likelihood_samples=2",
        "eval.parzen_samples=40", "eval.parzen_valid_examples=20", "eval.sample_count=4"]
ALGOS = {
    "walkback": ["algo.walkback_steps=2", "algo.k_mode=fixed", "eval.chain_steps=3",
                 "algo.reversibility_steps=0"],
    "infusion": ["algo.steps=3", "algo.sampling_steps=4", "algo.omega=0.1"],
}


@pytest.mark.parametrize("algorithm", list(ALGOS))
def test_conv_operator_trains_from_the_cli_on_digits(tmp_path, algorithm):
    res = runner.invoke(app, ["train", algorithm, "--dataset", "digits", "--steps", "3", "--results",
                              str(tmp_path), *CONV, *TINY, *ALGOS[algorithm]])
    assert res.exit_code == 0, res.output
    row = read_runs(tmp_path).iloc[0]
    assert int(row["steps"]) == 3
    payload = read_checkpoint(tmp_path / "files" / row["run_id"] / "checkpoint.pt")
    state = payload["algorithm"]["model"]
    # the stored operator is the conv one: 5×5 convolutions of 1 → 4 → 8 channels, one BN per step
    assert tuple(state["net.convs.0.weight"].shape) == (4, 1, 5, 5)
    assert tuple(state["net.convs.1.weight"].shape) == (8, 4, 5, 5)
    assert tuple(state["net.deconvs.1.weight"].shape) == (4, 2, 5, 5)  # 2 heads × 1 channel out
    assert not any(k.startswith("net.layers.") for k in state)
    steps = 3 if algorithm == "infusion" else None
    if steps is not None:
        assert {k for k in state if k.startswith("net.conv_norms.0.norms.") and k.endswith(".weight")} == {
            f"net.conv_norms.0.norms.{i}.weight" for i in range(steps)}


def test_conv_walkback_init_noise_starts_the_sigma_head_at_its_value():
    cfg = build_config(algorithm="walkback", dataset="digits",
                       overrides={"algo.architecture": "conv", "algo.conv": {"channels": [4, 8], "hidden": [16]},
                                  "algo.init_noise": 0.1})
    algo, data = build(cfg, load_dataset("digits"))
    assert isinstance(algo.net, ConvOperator)
    train = data.splits["train"]
    algo.setup(train)
    want = 0.1 * math.sqrt(float(train.reshape(len(train), -1).var(0, unbiased=False).mean()))
    algo.net.eval()
    with torch.no_grad():
        out = algo.net(torch.rand(5, 64, generator=torch.Generator().manual_seed(1)), 0)
    torch.testing.assert_close(F.softplus(out[:, 64:]), torch.full((5, 64), want), rtol=1e-5, atol=1e-7)
    assert out[:, :64].std() > 0  # the F_μ head is untouched


@pytest.mark.parametrize("algorithm", list(ALGOS))
def test_conv_refused_at_build_for_points(algorithm):
    cfg = build_config(algorithm=algorithm, dataset="toy2d:circle", overrides={"algo.architecture": "conv"})
    with pytest.raises(ConfigError, match=rf"{algorithm}: algo.architecture=conv needs image data .*"
                                          r"toy2d:circle' is of kind 'points' .*use algo.architecture=mlp"):
        build(cfg, load_dataset("toy2d:circle"))


def test_conv_refusal_is_one_line_from_the_cli(tmp_path):
    res = runner.invoke(app, ["train", "infusion", "--dataset", "toy2d:circle", "--steps", "1", "--results",
                              str(tmp_path), "algo.architecture=conv"])
    assert res.exit_code != 0
    assert "algo.architecture=conv needs image data" in res.output and "Traceback" not in res.output
