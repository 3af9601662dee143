"""Convolutional transition operator for images, after VW's image architecture (Goyal et al. 2017, appendix;
the public code's CIFAR operator): a strided-convolution encoder, a fully connected middle, and transposed
convolutions back to the image, whose output channels hold `heads` images (e.g. the mean and the scale of a
Gaussian operator), with batch norm that has its own parameters and statistics per step (`StepBatchNorm`,
as the MLP operator).

Interface as `StepMLP`: forward(x (B, D), step) -> (B, heads·D) with D = C·H·W, so it can replace the MLP
wherever an operator maps a flattened image to per-pixel outputs: `algo.architecture=conv` selects it for VW,
Infusion and the GSN (`build_step_operator`), and Infusion's `net=` takes any such module.
Defaults: 5×5 kernels with stride 2, channels 64-128-256 and leaky ReLU 0.02 as the VW code; the fully
connected middle is configurable (VW CIFAR: 4096 → 2048×4 → 4096; smaller by default here).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import nn

from raygen.config import ConfigError, Section
from raygen.nets.mlp import MLPConfig, StepBatchNorm, StepMLP

if TYPE_CHECKING:
    from raygen.data.base import Dataset


class ConvConfig(Section):
    channels: tuple[int, ...] = Field((64, 128, 256), description="encoder channels, one 5×5 stride-2 conv each (VW)")
    kernel: int = Field(5, ge=1, description="kernel size (VW: 5)")
    hidden: tuple[int, ...] = Field((1024,), description="fully connected middle widths (VW CIFAR: 2048 ×4)")
    negative_slope: float = Field(0.02, ge=0, description="leaky ReLU slope (VW code: 0.02)")
    batch_norm: bool = Field(True, description="per-step batch norm after every conv and hidden layer")


class _StepBN2d(nn.Module):
    def __init__(self, channels: int, steps: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(steps))

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.norms[min(step, len(self.norms) - 1)](x)


class ConvOperator(nn.Module):
    """(B, C·H·W), step -> (B, heads·C·H·W)."""

    def __init__(self, image_shape: tuple[int, int, int], heads: int, num_steps: int, config: ConvConfig) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape, self.heads = (c, h, w), heads
        k, pad = config.kernel, config.kernel // 2
        sizes = [(h, w)]
        for _ in config.channels:
            hh, ww = sizes[-1]
            sizes.append(((hh + 2 * pad - k) // 2 + 1, (ww + 2 * pad - k) // 2 + 1))
        self.sizes = sizes
        chans = (c, *config.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, k, 2, pad) for a, b in itertools.pairwise(chans))
        flat = chans[-1] * sizes[-1][0] * sizes[-1][1]
        widths = (flat, *config.hidden, flat)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        # transposed convs back up; output_padding makes every size match the encoder's exactly
        out_chans = (*reversed(config.channels), heads * c)
        self.deconvs = nn.ModuleList()
        for i, (a, b) in enumerate(itertools.pairwise(out_chans)):
            (hi, wi), (ho, wo) = sizes[-1 - i], sizes[-2 - i]
            op = (ho - ((hi - 1) * 2 - 2 * pad + k), wo - ((wi - 1) * 2 - 2 * pad + k))
            self.deconvs.append(nn.ConvTranspose2d(a, b, k, 2, pad, output_padding=op))
        bn = config.batch_norm
        self.conv_norms = nn.ModuleList(_StepBN2d(ch, num_steps) if bn else nn.Identity() for ch in config.channels)
        self.fc_norms = nn.ModuleList(StepBatchNorm(wd, num_steps) if bn else nn.Identity() for wd in widths[1:])
        self.deconv_norms = nn.ModuleList(
            _StepBN2d(ch, num_steps) if bn else nn.Identity() for ch in out_chans[1:-1]
        )
        self.act = nn.LeakyReLU(config.negative_slope)

    @staticmethod
    def _norm(norm: nn.Module, x: torch.Tensor, step: int) -> torch.Tensor:
        return norm(x, step) if isinstance(norm, (_StepBN2d, StepBatchNorm)) else x

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        b = len(x)
        h = x.reshape(b, *self.image_shape)
        for conv, norm in zip(self.convs, self.conv_norms):
            h = self.act(self._norm(norm, conv(h), step))
        shape = h.shape
        h = h.flatten(1)
        for fc, norm in zip(self.fcs, self.fc_norms):
            h = self.act(self._norm(norm, fc(h), step))
        h = h.reshape(shape)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = self.act(self._norm(self.deconv_norms[i], h, step))
        # (B, heads·C, H, W) -> (B, heads·C·H·W) as [head 0 image | head 1 image | ...]
        return h.reshape(b, -1)

    @torch.no_grad()
    def start_head(self, head: int, bias: float) -> None:
        """Make output head `head` start at the constant `bias` for every input: its channels of the last
        transposed convolution get zero weights (they still receive gradients) and that bias. The conv
        counterpart of zeroing rows of an MLP's Linear head (VW's algo.init_noise)."""
        last = self.deconvs[-1]
        c = self.image_shape[0]
        if not 0 <= head < self.heads:
            raise ValueError(f"head {head} of an operator with {self.heads} head(s)")
        last.weight[:, head * c : (head + 1) * c].zero_()  # ConvTranspose2d weight: (in, out, k, k)
        last.bias[head * c : (head + 1) * c].fill_(bias)


def build_step_operator(
    who: str, architecture: str, dataset: Dataset, out_dim: int, num_steps: int, mlp: MLPConfig, conv: ConvConfig
) -> nn.Module:
    """The operator network `algo.architecture` names, mapping (B, D), step -> (B, out_dim): `mlp` (StepMLP on
    the flattened data) or `conv` (ConvOperator, images only; out_dim must be a multiple of D: one image per
    head). Data that are not images are refused here, at build, with the reason."""
    if architecture == "mlp":
        return StepMLP(dataset.dim, out_dim, num_steps, mlp)
    if architecture != "conv":
        raise ConfigError(f"{who}: algo.architecture={architecture!r} (known: mlp, conv)")
    if dataset.kind != "image" or len(dataset.shape) != 3:
        raise ConfigError(
            f"{who}: algo.architecture=conv needs image data of shape (C, H, W); dataset '{dataset.name}' is "
            f"of kind '{dataset.kind}' with shape {tuple(dataset.shape)}; use algo.architecture=mlp"
        )
    heads, rest = divmod(out_dim, math.prod(dataset.shape))
    if rest or heads < 1:
        raise ConfigError(f"{who}: the conv operator outputs whole images; {out_dim} values is not a multiple "
                          f"of D = {math.prod(dataset.shape)}")
    return ConvOperator(tuple(dataset.shape), heads, num_steps, conv)
