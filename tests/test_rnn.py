"""GRU generator and discriminators (raygen/nets/rnn.py), checked against torch's own GRU and closed forms."""

import math

import pytest
import torch
from torch import nn

from raygen.config import ConfigError
from raygen.nets.rnn import (
    BiGRUDiscriminator,
    ConvDiscriminator,
    DiscriminatorConfig,
    GeneratorConfig,
    GRUGenerator,
    GRULayer,
    build_discriminator,
    categorical,
    default_sampler,
)

V = 5


def _generator(**kw) -> GRUGenerator:
    torch.manual_seed(0)
    return GRUGenerator(V, GeneratorConfig(**{"layers": 2, "width": 6, "embed_dim": 3, **kw}))


def test_step_mode_matches_torch_gru_and_pre_tanh_is_the_candidate_argument():
    torch.manual_seed(0)
    layer = GRULayer(3, 4)
    x = torch.randn(2, 7, 3)
    h0 = torch.randn(2, 4)
    h_seq, a_seq = layer(x, h0)
    # Independent reference: torch's GRUCell with the same weights, stepped by hand.
    cell = nn.GRUCell(3, 4)
    cell.load_state_dict({k.replace("gru.", "").replace("_l0", ""): v for k, v in layer.state_dict().items()})
    h = h0
    W_iz, W_hz = layer.gru.weight_ih_l0[4:8], layer.gru.weight_hh_l0[4:8]
    b_iz, b_hz = layer.gru.bias_ih_l0[4:8], layer.gru.bias_hh_l0[4:8]
    for t in range(7):
        h_next = cell(x[:, t], h)
        assert torch.allclose(h_seq[:, t], h_next, atol=1e-6)
        step_h, step_a = layer.step(x[:, t], h)
        assert torch.allclose(step_h, h_next, atol=1e-6)
        assert torch.allclose(step_a, a_seq[:, t], atol=1e-6)
        # h_t = (1 - z) tanh(a_t) + z h_{t-1}: recover the candidate from torch's output, compare with tanh(a).
        z = torch.sigmoid(x[:, t] @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        candidate = (h_next - z * h) / (1 - z)
        assert torch.allclose(torch.tanh(a_seq[:, t]), candidate, atol=1e-5)
        h = h_next


def test_teacher_forced_equals_step_mode_fed_the_data():
    g = _generator(behaviour_softmax=True, behaviour_embedding=True)
    y = torch.randint(0, V, (3, 8))
    fused = g.teacher_forced(y)
    stepped = g.free_running(3, 8, truth=y, feed_truth=torch.ones(3, 8, dtype=torch.bool))
    for name in ("logits", "pre_tanh", "hidden", "embedded"):
        assert torch.allclose(getattr(fused, name), getattr(stepped, name), atol=1e-5), name
    assert torch.equal(fused.inputs, stepped.inputs)
    assert torch.allclose(g.behaviour(fused), g.behaviour(stepped), atol=1e-5)


def test_free_running_consumes_its_own_samples():
    g = _generator()
    out = g.free_running(4, 10, sampler=default_sampler(torch.Generator().manual_seed(1)))
    assert torch.all(out.inputs[:, 0] == V)  # begin symbol
    assert torch.equal(out.inputs[:, 1:], out.samples[:, :-1])
    assert out.samples.min() >= 0 and out.samples.max() < V


def test_behaviour_layout_and_size():
    g = _generator(behaviour_softmax=True, behaviour_embedding=True)
    out = g.teacher_forced(torch.randint(0, V, (2, 4)))
    b = g.behaviour(out)
    assert b.shape == (2, 4, g.behaviour_size) == (2, 4, 2 * 6 + V + 3)
    assert torch.equal(b[..., :12], out.pre_tanh)
    assert torch.allclose(b[..., 12 : 12 + V], torch.softmax(out.logits, -1))
    assert torch.equal(b[..., 12 + V :], out.embedded)
    top = _generator(behaviour_layers="top")
    assert top.behaviour_size == 6
    top_out = top.teacher_forced(torch.zeros(1, 3, dtype=torch.long))
    assert torch.equal(top.behaviour(top_out), top_out.pre_tanh[..., 6:])  # the last layer's a_t


def test_gradient_flows_through_free_running_states_not_samples():
    g = _generator()
    out = g.free_running(3, 6)
    assert not out.samples.requires_grad
    g.behaviour(out).pow(2).sum().backward()
    assert g.layers[0].gru.weight_hh_l0.grad.abs().sum() > 0
    assert g.embedding.weight.grad.abs().sum() > 0


def test_categorical_inverse_cdf_is_exact():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]])
    m = 1000
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m  # a uniform grid over [0, 1)
    draws = categorical(probs.expand(m, 4), u)
    counts = torch.bincount(draws, minlength=4).double() / m
    assert torch.allclose(counts, probs[0].double(), atol=1.5 / m)
    assert categorical(probs, torch.tensor([0.9999999])).item() == 3  # never past the last symbol


def test_sampler_draws_from_the_model_distribution():
    probs = torch.tensor([0.2, 0.5, 0.3])
    draw = default_sampler(torch.Generator().manual_seed(0))
    samples = draw(probs.expand(20000, 3))
    freq = torch.bincount(samples, minlength=3).double() / 20000
    assert torch.allclose(freq, probs.double(), atol=0.015)  # ~4 std of a binomial frequency


@pytest.mark.parametrize("bias", [1e3, -1e3])
def test_discriminator_outputs_are_clipped(bias):
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(width=4, clip=10.0, conv_channels=(3, 3))
    bigru = BiGRUDiscriminator(5, cfg)
    nn.init.constant_(bigru.mlp[-1].bias, bias)
    out = bigru(torch.randn(2, 7, 5))
    assert out.shape == (2, 7)
    assert torch.all(out == math.copysign(10.0, bias))
    conv = ConvDiscriminator(5, (2, 3), cfg)
    nn.init.constant_(conv.head.bias, bias)
    out = conv(torch.randn(2, 6, 5))
    assert out.shape == (2, 1) and torch.all(out == math.copysign(10.0, bias))


def test_unclipped_outputs_pass_unchanged():
    torch.manual_seed(0)
    d = BiGRUDiscriminator(5, DiscriminatorConfig(width=4, clip=10.0))
    x = torch.randn(2, 7, 5)
    states, _ = d.rnn(x)
    raw = d.mlp(states).squeeze(-1)
    assert raw.abs().max() < 10
    assert torch.equal(d(x), raw)


def test_conv_discriminator_sees_the_image_grid():
    """Step t of the raster order is pixel (t // W, t % W) and its F behaviour features are the channels."""
    d = ConvDiscriminator(2, (3, 4), DiscriminatorConfig(conv_channels=(2,), clip=10.0))
    seen = []
    d.conv[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    b = torch.randn(2, 12, 2)
    d(b)
    expected = torch.empty(2, 2, 3, 4)
    for t in range(12):
        for f in range(2):
            expected[:, f, t // 4, t % 4] = b[:, t, f]
    assert torch.equal(seen[0], expected)


def test_build_checks_input_size_and_names_keys():
    with pytest.raises(ConfigError, match=r"algo\.discriminator\.input_size.*algo\.generator\.width"):
        build_discriminator(DiscriminatorConfig(input_size=7), 12, seq_len=4)
    assert isinstance(
        build_discriminator(DiscriminatorConfig(input_size=12, width=2), 12, seq_len=4), BiGRUDiscriminator
    )
    with pytest.raises(ConfigError, match=r"algo\.discriminator\.arch.*image shape"):
        build_discriminator(DiscriminatorConfig(arch="conv"), 12, seq_len=4)
    with pytest.raises(ConfigError, match="H\\*W = 5"):
        build_discriminator(DiscriminatorConfig(arch="conv"), 12, seq_len=5, image_shape=(1, 2, 2))
    auto = build_discriminator(DiscriminatorConfig(conv_channels=(2,)), 12, seq_len=4, image_shape=(1, 2, 2))
    assert isinstance(auto, ConvDiscriminator)
