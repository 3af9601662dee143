"""The convolutional image operator (VW's architecture): exact output shapes for the usual image sizes,
per-step batch norm, and use as Infusion's operator and as the GSN's network."""

import pytest
import torch

from raygen.algorithms.gsn import GSN
from raygen.algorithms.infusion import Infusion
from raygen.config import build_config
from raygen.data.base import Dataset
from raygen.nets.conv import ConvConfig, ConvOperator

SMALL = ConvConfig(channels=(4, 8, 8), hidden=(16,))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_output_is_heads_images_of_the_input_shape(shape):
    net = ConvOperator(shape, 2, 3, SMALL)
    d = shape[0] * shape[1] * shape[2]
    out = net(torch.rand(5, d), 1)
    assert out.shape == (5, 2 * d)
    # layout [head 0 image | head 1 image]: the last deconvolution's channels c and C + c
    assert net.deconvs[-1].out_channels == 2 * shape[0]


def test_batch_norm_statistics_are_per_step():
    net = ConvOperator((1, 8, 8), 1, 2, SMALL)
    before = net.conv_norms[0].norms[0].running_mean.clone()
    net.train()
    net(torch.rand(6, 64) + 3.0, 1)  # step 1 only
    assert torch.equal(net.conv_norms[0].norms[0].running_mean, before)
    assert not torch.equal(net.conv_norms[0].norms[1].running_mean, before)


def _digits(n=40):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x})


def test_conv_operator_drives_infusion_and_the_gsn():
    data = _digits()
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={"algo.steps": 3, "train.batch_size": 20})
    algo = Infusion(cfg, data, net=ConvOperator((1, 8, 8), 2, 3, SMALL))
    algo.setup(data.splits["train"])
    metrics = algo.train_step(data.splits["train"][:20])
    assert algo.updates == 1 and torch.isfinite(torch.tensor(list(metrics.values()))).all()
    gsn = GSN(build_config(algorithm="gsn", dataset="digits", overrides={
        "algo.architecture": "conv", "algo.conv": {"channels": [4, 8], "hidden": [16]}}), data)
    gsn.setup(data.splits["train"])
    gsn.train_step(data.splits["train"][:20])
    assert gsn.updates == 1 and gsn.sample(3).shape == (3, 1, 8, 8)
