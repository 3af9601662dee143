"""GRU generator and the two Professor Forcing discriminators (Goyal thesis ch. 2, §2.4.1).

One generator serves teacher forcing, scheduled sampling and Professor Forcing: the algorithms decide what
is fed back, this file only runs the recurrence. Read top to bottom: `GRULayer` (one GRU layer that also
exposes its pre-tanh activations), `GeneratorConfig` + `GRUGenerator`, then `DiscriminatorConfig`,
`BiGRUDiscriminator`, `ConvDiscriminator` and `build_discriminator` (which checks that the discriminator
fits the generator's behaviour before any work starts).

The behaviour sequence B (§2.4.1: "the pre-tanh activation of the GRU states for the whole sequence, and
optionally the softmax outputs for the next-step prediction") is, at step t and per layer l,

    a_t^l = W_in x_t^l + b_in + r_t^l ⊙ (W_hn h_{t-1}^l + b_hn)        (PyTorch's GRU gate layout)
    h_t^l = (1 − z_t^l) ⊙ tanh(a_t^l) + z_t^l ⊙ h_{t-1}^l

i.e. the argument of the GRU's only tanh, the candidate state before its non-linearity. B_t concatenates
a_t^l over the layers (`behaviour_layers`), then optionally softmax(logits_t) (the distribution of y_{t+1})
and the embedding of the input symbol (§2.4.2: "We feed both the hidden states and char level embeddings
into the discriminator").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from raygen.config import ConfigError, Section

# ------------------------------------------------------------------------------------------------ blocks


class GRULayer(nn.Module):
    """One GRU layer (torch's nn.GRU weights) that also exposes its pre-tanh candidate activations a_t.

    `cell` is one step from precomputed input gates, written like torch's own CPU GRU cell (gates r, z, n
    in torch's order) and returning a_t as well; free running, scheduled sampling and teacher forcing with
    behaviour all run it. Teacher forcing without behaviour (plain NLL) uses the fused nn.GRU kernel.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gru = nn.GRU(input_size, hidden_size, num_layers=1, batch_first=True)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., I) -> W_ih x + b_ih (..., 3H): the part of every gate that does not depend on h."""
        return F.linear(x, self.gru.weight_ih_l0, self.gru.bias_ih_l0)

    def cell(self, gi: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gi (B, 3H) input gates, h (B, H) previous state -> next state (B, H), pre-tanh activation (B, H)."""
        sizes = [2 * self.hidden_size, self.hidden_size]
        gi_rz, gi_n = gi.split(sizes, -1)
        gh = F.linear(h, self.gru.weight_hh_l0, self.gru.bias_hh_l0)  # (B, 3H)
        gh_rz, gh_n = gh.split(sizes, -1)  # (B, 2H), (B, H)
        r, z = torch.sigmoid(gi_rz + gh_rz).chunk(2, -1)
        a = torch.addcmul(gi_n, r, gh_n)  # i_n + r ⊙ h_n
        n = torch.tanh(a)
        return torch.lerp(n, h, z), a  # (1 − z) ⊙ n + z ⊙ h

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, I), h (B, H) -> next state (B, H), pre-tanh activation (B, H)."""
        return self.cell(self.input_gates(x), h)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, *, pre_tanh: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, I), h0 (B, H) -> states h (B, T, H), pre-tanh activations a (B, T, H) (None unless
        `pre_tanh`)."""
        if not pre_tanh:
            return self.gru(x, h0.unsqueeze(0).contiguous())[0], None
        if x.device.type == "cpu":
            return self._loop(x, h0)
        return self._fused_then_pre_tanh(x, h0)

    def _loop(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU: torch's CPU nn.GRU is itself a per-step loop, so stepping `cell` costs about the same and
        yields a_t directly. Input gates for all steps in one matmul, time-major so that `unbind`'s backward
        is one stack (indexing [:, t] would materialise a full-size gradient per step)."""
        gates = self.input_gates(x.transpose(0, 1))  # (T, B, 3H)
        h, states, pre = h0, [], []
        for gi in gates.unbind(0):
            h, a = self.cell(gi, h)
            states.append(h)
            pre.append(a)
        return torch.stack(states, 1), torch.stack(pre, 1)

    def _fused_then_pre_tanh(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GPU: keep the fused (cuDNN) kernel and recompute a_t = i_n + r ⊙ h_n for all steps in parallel
        from the returned states (a_t depends only on x_t and h_{t-1}); only the r and n rows are needed."""
        h, _ = self.gru(x, h0.unsqueeze(0).contiguous())  # (B, T, H)
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)  # (B, T, H): h_{t-1}
        size, g = self.hidden_size, self.gru
        r_rows, n_rows = slice(0, size), slice(2 * size, 3 * size)
        r = torch.sigmoid(
            F.linear(x, g.weight_ih_l0[r_rows], g.bias_ih_l0[r_rows])
            + F.linear(h_prev, g.weight_hh_l0[r_rows], g.bias_hh_l0[r_rows])
        )
        i_n = F.linear(x, g.weight_ih_l0[n_rows], g.bias_ih_l0[n_rows])
        return h, torch.addcmul(i_n, r, F.linear(h_prev, g.weight_hh_l0[n_rows], g.bias_hh_l0[n_rows]))


# ------------------------------------------------------------------------------------------------ generator


class GeneratorConfig(Section):
    """GRU generator (§2.4.1). Defaults: the char-PTB model (§2.4.2); seq-MNIST used 3 layers × 512 (§2.4.3)."""

    layers: int = Field(1, ge=1, description="GRU layers (PTB: 1; sequential MNIST: 3)")
    width: int = Field(1024, ge=1, description="GRU units per layer (PTB: 1024; sequential MNIST: 512)")
    embed_dim: int = Field(128, ge=1, description="input symbol embedding size (not given in the thesis)")
    behaviour_layers: Literal["all", "top"] = Field(
        "all",
        description="pre-tanh activations of every layer (B of §2.4.1 for a multi-layer GRU) or the top one",
    )
    behaviour_softmax: bool = Field(
        False, description="append the next-step softmax to B (§2.4.1 'optionally')"
    )
    behaviour_embedding: bool = Field(
        False,
        description="append the input symbol's embedding to B (§2.4.2, PTB: 'hidden states and char "
        "level embeddings')",
    )


@dataclass
class GRUStep:
    """One time step of the generator; every field has a leading batch dimension B."""

    logits: torch.Tensor  # (B, V): distribution of the next symbol
    pre_tanh: torch.Tensor  # (B, layers*H): a_t of every layer
    hidden: torch.Tensor  # (B, layers*H): h_t of every layer
    inputs: torch.Tensor  # (B,) int64: the symbol fed at this step
    sample: torch.Tensor  # (B,) int64: the model's own draw y_t ~ P(· | inputs so far)


@dataclass
class SequenceOutput:
    """A whole run of the generator; per-step fields with a time axis after the batch."""

    logits: torch.Tensor  # (B, T, V)
    pre_tanh: torch.Tensor | None  # (B, T, layers*H); None when not asked for (plain NLL)
    hidden: torch.Tensor  # (B, T, layers*H)
    embedded: torch.Tensor  # (B, T, E)
    inputs: torch.Tensor  # (B, T) int64
    samples: torch.Tensor | None = None  # (B, T) int64: free-running mode's own samples y_1..y_T


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-layer features; a single layer is returned as is (no copy in the step loop)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


Sampler = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V) -> symbols (B,)


class GumbelSampler:
    """Draws symbols from Categorical(softmax(logits)) at temperature 1 by the Gumbel-max trick:
    argmax_v(logits_v + g_v) with g = −log(−log u), u ~ U[0, 1), is exactly a categorical draw.

    Temperature 1 is the model's own distribution; a lower or higher one would not be the free-running
    behaviour §2.2 defines. The noise for up to `block` steps (at most `max_elements` numbers) is drawn at
    once: one RNG call and two logs per block, two small ops per step. With `generator` the uniforms come
    from it (a CPU generator, so draws are reproducible on any device), else from torch's global RNG on the
    logits' device.
    """

    def __init__(
        self, generator: torch.Generator | None = None, block: int = 64, max_elements: int = 1 << 20
    ) -> None:
        self.generator = generator
        self.block = block
        self.max_elements = max_elements
        self._noise: torch.Tensor | None = None  # (block, B, V)
        self._next = 0

    def _draw(self, like: torch.Tensor) -> torch.Tensor:
        """Gumbel noise (steps, *like.shape) on like's device."""
        steps = max(1, min(self.block, self.max_elements // max(1, like.numel())))
        shape = (steps, *like.shape)
        if self.generator is None:
            u = torch.rand(shape, device=like.device)
        else:
            u = torch.rand(shape, generator=self.generator).to(like.device)
        return u.log_().neg_().log_().neg_()  # u = 0 gives −inf: that draw can never win

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        noise = self._noise
        if noise is None or self._next == len(noise) or noise.shape[1:] != logits.shape:
            noise = self._noise = self._draw(logits)
            self._next = 0
        g = noise[self._next]
        self._next += 1
        return (logits.detach().float() + g).argmax(-1)


def default_sampler(generator: torch.Generator | None = None) -> Sampler:
    """The sampler of free-running mode: exact draws at temperature 1 (`GumbelSampler`)."""
    return GumbelSampler(generator)


class GRUGenerator(nn.Module):
    """Autoregressive GRU over symbols 0..V-1: embedding → GRU layers → affine → softmax (§2.4.1).

    Step t reads y_{t-1} (y_0 = a begin symbol, index V, so P(y_1) is modelled too) and outputs
    P(y_t | y_<t). Teacher-forced mode reads the data; free-running mode reads its own samples.
    The network returns outputs only: every loss belongs to the algorithm.
    """

    def __init__(self, vocab_size: int, config: GeneratorConfig) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"the generator needs a vocabulary of at least 2 symbols, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        self.begin = vocab_size  # index of the begin-of-sequence input symbol
        self.embedding = nn.Embedding(vocab_size + 1, config.embed_dim)
        widths = [config.embed_dim] + [config.width] * config.layers
        self.layers = nn.ModuleList(GRULayer(i, o) for i, o in itertools.pairwise(widths))
        self.head = nn.Linear(config.width, vocab_size)

    @property
    def behaviour_size(self) -> int:
        """Features per step of B (module docstring)."""
        c = self.config
        size = c.width * (c.layers if c.behaviour_layers == "all" else 1)
        size += self.vocab_size if c.behaviour_softmax else 0
        size += c.embed_dim if c.behaviour_embedding else 0
        return size

    def initial_state(self, n: int, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(n, self.config.width, device=device) for _ in self.layers]

    def behaviour(self, out: SequenceOutput) -> torch.Tensor:
        """B (B, T, F) of a run: pre-tanh activations [+ softmax] [+ embedding]."""
        if out.pre_tanh is None:
            raise ValueError("behaviour needs the pre-tanh activations: run teacher_forced(y, pre_tanh=True)")
        c = self.config
        pre = out.pre_tanh if c.behaviour_layers == "all" else out.pre_tanh[..., -c.width :]
        parts = [pre]
        if c.behaviour_softmax:
            parts.append(torch.softmax(out.logits, -1))
        if c.behaviour_embedding:
            parts.append(out.embedded)
        return torch.cat(parts, -1) if len(parts) > 1 else pre

    def teacher_forced(
        self,
        y: torch.Tensor,
        *,
        pre_tanh: bool = True,
        state: list[torch.Tensor] | None = None,
        previous: torch.Tensor | None = None,
    ) -> SequenceOutput:
        """y (B, T) int64 data -> outputs with logits[:, t] = log-odds of P(y_t | y_<t). Without `pre_tanh`
        (plain NLL) the fused GRU kernel runs and `pre_tanh` is None.

        By default every sequence starts afresh (zero states, begin symbol). To continue a stream, pass the
        per-layer `state` the previous piece ended in (`final_state`) and the symbol `previous` (B,) that
        preceded y[:, 0]: the result is then that of one run over the concatenated pieces."""
        n, _ = y.shape
        if (state is None) != (previous is None):
            raise ValueError("pass both `state` and `previous` (continuing a stream) or neither")
        if previous is None:
            previous = torch.full((n,), self.begin, dtype=y.dtype, device=y.device)
        inputs = torch.cat([previous.reshape(n, 1).to(y.dtype), y[:, :-1]], 1)  # (B, T): y_0, y_1 .. y_{T-1}
        embedded = self.embedding(inputs)  # (B, T, E)
        x, pre, hidden = embedded, [], []
        for layer, h0 in zip(self.layers, state or self.initial_state(n, y.device)):
            x, a = layer(x, h0, pre_tanh=pre_tanh)  # (B, T, H) each
            pre.append(a)
            hidden.append(x)
        return SequenceOutput(
            self.head(x), _concat(pre) if pre_tanh else None, _concat(hidden), embedded, inputs
        )

    def final_state(self, out: SequenceOutput) -> list[torch.Tensor]:
        """The per-layer states (B, H) a run ended in: the `state` that continues it (`teacher_forced`)."""
        return list(out.hidden[:, -1].split(self.config.width, -1))

    def steps(
        self,
        n: int,
        length: int,
        *,
        sampler: Sampler | None = None,
        truth: torch.Tensor | None = None,
        feed_truth: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> Iterator[GRUStep]:
        """Run `length` steps one at a time, yielding each step with its sample (B,) ~ P(y_t | inputs).

        Input at step t > 0: truth[:, t-1] where feed_truth[:, t-1] is True (scheduled sampling), otherwise
        the model's own sample of the previous step (free-running mode). Gradients flow through the states,
        never through the discrete samples (§2.3: no backprop through discrete spaces is needed).
        """
        device = device or self.head.weight.device
        sampler = sampler or default_sampler()
        if (truth is None) != (feed_truth is None):
            raise ValueError(
                "pass both `truth` and `feed_truth` (scheduled sampling) or neither (free running)"
            )
        first = self.layers[0]
        # Input gates of layer 1 for every symbol at once, (V+1, 3H): each step then looks its row up
        # instead of embedding + matmul (the same values and gradients); worth it unless V > steps × B.
        table = first.input_gates(self.embedding.weight) if self.vocab_size < n * length else None
        states = self.initial_state(n, device)
        token = torch.full((n,), self.begin, dtype=torch.long, device=device)
        for t in range(length):
            if t > 0 and truth is not None and feed_truth is not None:
                token = torch.where(feed_truth[:, t - 1], truth[:, t - 1], token)
            if table is not None:
                gi = F.embedding(token, table)  # (B, 3H)
            else:
                gi = first.input_gates(self.embedding(token))
            pre = []
            for i, layer in enumerate(self.layers):
                if i > 0:
                    gi = layer.input_gates(states[i - 1])
                states[i], a = layer.cell(gi, states[i])
                pre.append(a)
            logits = self.head(states[-1])  # (B, V)
            sample = sampler(logits.detach())
            yield GRUStep(logits, _concat(pre), _concat(states), token, sample)
            token = sample

    def free_running(
        self,
        n: int,
        length: int,
        *,
        sampler: Sampler | None = None,
        truth: torch.Tensor | None = None,
        feed_truth: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> SequenceOutput:
        """`steps` collected into one SequenceOutput (samples included); see `steps` for the arguments."""
        logits, pre, hidden, inputs, samples = [], [], [], [], []
        for s in self.steps(n, length, sampler=sampler, truth=truth, feed_truth=feed_truth, device=device):
            logits.append(s.logits)
            pre.append(s.pre_tanh)
            hidden.append(s.hidden)
            inputs.append(s.inputs)
            samples.append(s.sample)
        inputs_t = torch.stack(inputs, 1)  # (B, T)
        return SequenceOutput(
            torch.stack(logits, 1),
            torch.stack(pre, 1),
            torch.stack(hidden, 1),
            self.embedding(inputs_t),  # one lookup for the whole run (behaviour / SequenceOutput only)
            inputs_t,
            torch.stack(samples, 1),
        )


# ------------------------------------------------------------------------------------------------ discriminators


class DiscriminatorConfig(Section):
    """Professor Forcing discriminator (§2.4.1): bidirectional GRU + shared MLP, or a conv net for images."""

    arch: Literal["auto", "bigru", "conv"] = Field(
        "auto", description="auto: conv for sequential images (§2.4.3), bidirectional GRU otherwise (§2.4.1)"
    )
    width: int = Field(
        2048, ge=1, description="GRU and MLP width (PTB: 'All the layers ... 2048 hidden units')"
    )
    output: Literal["sequence", "step"] = Field(
        "sequence",
        description="sequence: one probability D(B) per behaviour sequence (eq 2.1's D; the bi-GRU states "
        "are averaged over time before the MLP, as in the authors' code); step: one per time step (the MLP "
        "applied at every step, each output seeing the whole sequence through the bi-GRU)",
    )
    mlp_layers: int = Field(
        3, ge=0, description="affine+ReLU layers of the MLP shared across time (§2.4.1: 3)"
    )
    clip: float = Field(10.0, gt=0, description="pre-sigmoid output clipped to [-clip, clip] (§2.4.2: 10)")
    conv_channels: tuple[int, ...] = Field(
        (64, 128, 128),
        min_length=1,
        description="conv discriminator channels, 3x3 kernels (not given in the thesis)",
    )
    input_size: int | None = Field(
        None, ge=1, description="expected features per step of B; None = take the generator's behaviour size"
    )


def _mlp(in_dim: int, width: int, layers: int) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*blocks, nn.Linear(in_dim, 1))


class BiGRUDiscriminator(nn.Module):
    """B (N, T, F) -> clipped pre-sigmoid outputs: (N, 1) with `output="sequence"`, (N, T) with "step".

    Forward and backward GRU states are concatenated at each step (§2.4.1). Per sequence (default): the
    thesis' D(B) is one probability per behaviour sequence (eq 2.1), and §2.4.1 does not say how the
    time steps are pooled; we average the concatenated states over time and apply the MLP once, as the
    authors' code (LM_GANS) does. Per step: the MLP, shared across time, gives every step its own
    output, each of which sees the whole sequence through the two GRUs.
    """

    def __init__(self, input_size: int, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.input_size = input_size
        self.rnn = nn.GRU(input_size, config.width, batch_first=True, bidirectional=True)
        self.mlp = _mlp(2 * config.width, config.width, config.mlp_layers)

    def forward(self, behaviour: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(behaviour)  # (N, T, 2W)
        if self.config.output == "sequence":
            states = states.mean(1, keepdim=True)  # (N, 1, 2W): pooled over time, then one MLP output
        logits = self.mlp(states).squeeze(-1)  # (N, 1) or (N, T)
        return logits.clamp(-self.config.clip, self.config.clip)


class ConvDiscriminator(nn.Module):
    """B (N, H*W, F) of a sequential image -> clipped pre-sigmoid output (N, 1) (§2.4.3).

    The behaviour of each pixel step becomes the F channels of that pixel (raster order), so the
    convolutions see the 2-D neighbourhoods the pixels came from.
    """

    def __init__(self, input_size: int, grid: tuple[int, int], config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.input_size = input_size
        self.grid = grid
        layers: list[nn.Module] = []
        in_ch = input_size
        for i, ch in enumerate(config.conv_channels):
            layers += [nn.Conv2d(in_ch, ch, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            in_ch = ch
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, 1)

    def forward(self, behaviour: torch.Tensor) -> torch.Tensor:
        n, _t, f = behaviour.shape
        h, w = self.grid
        x = behaviour.reshape(n, h, w, f).permute(0, 3, 1, 2)  # (N, F, H, W)
        x = self.conv(x).mean((2, 3))  # (N, C)
        return self.head(x).clamp(-self.config.clip, self.config.clip)  # (N, 1)


def build_discriminator(
    config: DiscriminatorConfig,
    behaviour_size: int,
    *,
    seq_len: int,
    image_shape: tuple[int, ...] | None = None,
    prefix: str = "algo",
) -> nn.Module:
    """The discriminator for a generator whose B has `behaviour_size` features per step.

    Fails before any work starts, naming the config keys, when the sizes do not fit (STYLE §6).
    """
    if config.input_size is not None and config.input_size != behaviour_size:
        raise ConfigError(
            f"config key '{prefix}.discriminator.input_size' is {config.input_size} but the generator's "
            f"behaviour has {behaviour_size} features per step (from '{prefix}.generator.width', "
            f"'{prefix}.generator.layers', '{prefix}.generator.behaviour_layers', "
            f"'{prefix}.generator.behaviour_softmax', '{prefix}.generator.behaviour_embedding', "
            f"'{prefix}.generator.embed_dim'); set '{prefix}.discriminator.input_size' to {behaviour_size} "
            "or leave it unset"
        )
    arch = config.arch
    if arch == "auto":
        arch = "conv" if image_shape is not None else "bigru"
    if arch == "bigru":
        return BiGRUDiscriminator(behaviour_size, config)
    if arch != "conv":
        raise NotImplementedError(arch)
    if image_shape is None:
        raise ConfigError(
            f"config key '{prefix}.discriminator.arch' is 'conv' but the dataset has no image shape "
            "(meta['image_shape']); use arch 'bigru' for non-image sequences"
        )
    if config.output != "sequence":
        raise ConfigError(
            f"config key '{prefix}.discriminator.output' is '{config.output}' but the convolutional "
            "discriminator judges whole images (one output per sequence); use output 'sequence' or arch "
            "'bigru'"
        )
    c, h, w = image_shape
    if c != 1 or h * w != seq_len:
        raise ConfigError(
            f"config key '{prefix}.discriminator.arch' is 'conv' but sequences of length {seq_len} are not the "
            f"pixels of one {tuple(image_shape)} image (need 1 channel and H*W = {seq_len})"
        )
    return ConvDiscriminator(behaviour_size, (h, w), config)
