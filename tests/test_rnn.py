"""GRU generator and discriminators (raygen/nets/rnn.py), checked against torch's own GRU and closed forms."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from raygen.config import ConfigError
from raygen.nets.rnn import (
    BiGRUDiscriminator,
    ConvDiscriminator,
    DiscriminatorConfig,
    GeneratorConfig,
    GRUGenerator,
    GRULayer,
    GumbelSampler,
    build_discriminator,
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


def test_both_sequence_paths_give_torch_states_and_the_same_pre_tanh_and_gradients():
    """CPU runs the step loop, GPU the fused kernel + recomputed a_t; both are checked here on CPU, against
    torch's nn.GRU for the states and against each other for a_t and the gradients."""
    torch.manual_seed(0)
    layer = GRULayer(3, 4)
    x = torch.randn(2, 7, 3, requires_grad=True)
    h0 = torch.randn(2, 4)
    reference, _ = layer.gru(x, h0[None])
    plain, none = layer(x, h0, pre_tanh=False)
    assert none is None and torch.equal(plain, reference)
    outputs, grads = [], []
    for path in (layer._loop, layer._fused_then_pre_tanh):
        h, a = path(x, h0)
        assert torch.allclose(h, reference, atol=1e-6)
        outputs.append(a)
        grads.append(torch.autograd.grad(h.sin().sum() + a.cos().sum(), [x, *layer.parameters()]))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for g_loop, g_fused in zip(*grads):
        assert torch.allclose(g_loop, g_fused, atol=1e-5)


@pytest.mark.parametrize("n, length", [(3, 8), (1, 4)])  # (1, 4): V=5 > 1×4 steps, no input-gate table
def test_teacher_forced_equals_step_mode_fed_the_data(n, length):
    g = _generator(behaviour_softmax=True, behaviour_embedding=True)
    y = torch.randint(0, V, (n, length))
    truth = torch.ones(n, length, dtype=torch.bool)
    fused = g.teacher_forced(y)
    stepped = g.free_running(n, length, truth=y, feed_truth=truth)
    for name in ("logits", "pre_tanh", "hidden", "embedded"):
        assert torch.allclose(getattr(fused, name), getattr(stepped, name), atol=1e-5), name
    assert torch.equal(fused.inputs, stepped.inputs)
    assert torch.allclose(g.behaviour(fused), g.behaviour(stepped), atol=1e-5)
    # the same gradients reach every parameter through either mode
    grads = [
        torch.autograd.grad(g.behaviour(out).sin().sum() + out.logits.cos().sum(), list(g.parameters()))
        for out in (fused, stepped)
    ]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)
    plain = g.teacher_forced(y, pre_tanh=False)
    assert plain.pre_tanh is None and torch.allclose(plain.logits, fused.logits, atol=1e-5)
    with pytest.raises(ValueError, match="pre_tanh=True"):
        g.behaviour(plain)


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


def test_gumbel_sampler_draws_from_the_model_distribution():
    """Chi-square goodness of fit (scipy) of 20000 seeded draws; a zero-probability symbol is never drawn."""
    probs = torch.tensor([0.2, 0.5, 0.0, 0.3])
    draw = default_sampler(torch.Generator().manual_seed(0))
    samples = torch.cat([draw(probs.log().expand(500, 4)) for _ in range(40)])  # crosses noise blocks
    counts = torch.bincount(samples, minlength=4)
    assert counts[2] == 0
    observed = counts[[0, 1, 3]].double().numpy()
    expected = (probs[[0, 1, 3]] * len(samples)).double().numpy()
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_gumbel_sampler_is_reproducible_and_follows_the_batch_size():
    def run(sizes):
        draw = GumbelSampler(torch.Generator().manual_seed(3), block=4)
        return [draw(torch.zeros(m, 6)) for m in sizes]

    a, b = run([5, 5, 5, 5, 5, 2]), run([5, 5, 5, 5, 5, 2])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [len(x) for x in a] == [5, 5, 5, 5, 5, 2]  # a new batch size draws a fresh block
    big = GumbelSampler(torch.Generator().manual_seed(3), block=64, max_elements=100)
    big(torch.zeros(5, 6))
    assert big._noise is not None and big._noise.shape == (3, 5, 6)  # 3 steps of 30 numbers fit in 100


@pytest.mark.parametrize("bias", [1e3, -1e3])
def test_discriminator_outputs_are_clipped(bias):
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(width=4, clip=10.0, conv_channels=(3, 3), output="step")
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
    d = BiGRUDiscriminator(5, DiscriminatorConfig(width=4, clip=10.0, output="step"))
    x = torch.randn(2, 7, 5)
    states, _ = d.rnn(x)
    raw = d.mlp(states).squeeze(-1)
    assert raw.abs().max() < 10
    assert torch.equal(d(x), raw)


def test_per_sequence_discriminator_gives_one_output_per_sequence_from_time_averaged_states():
    """Default (thesis' D(B)): (N, 1), the MLP applied once to the bi-GRU states averaged over time; the
    per-step option gives (N, T). Both on the same weights."""
    torch.manual_seed(0)
    per_sequence = BiGRUDiscriminator(5, DiscriminatorConfig(width=4, clip=10.0))
    assert DiscriminatorConfig().output == "sequence"
    per_step = BiGRUDiscriminator(5, DiscriminatorConfig(width=4, clip=10.0, output="step"))
    per_step.load_state_dict(per_sequence.state_dict())
    x = torch.randn(3, 7, 5)
    out = per_sequence(x)
    assert out.shape == (3, 1) and per_step(x).shape == (3, 7)
    forward = nn.GRU(5, 4, batch_first=True)
    backward = nn.GRU(5, 4, batch_first=True)
    rnn = per_sequence.rnn
    forward.load_state_dict(
        {k.replace("_reverse", ""): v for k, v in rnn.state_dict().items() if "reverse" not in k}
    )
    backward.load_state_dict(
        {k.replace("_reverse", ""): v for k, v in rnn.state_dict().items() if "reverse" in k}
    )
    with torch.no_grad():
        states = torch.cat([forward(x)[0], backward(x.flip(1))[0].flip(1)], -1)  # (3, 7, 8)
        expected = per_sequence.mlp(states.mean(1))  # (3, 1)
    assert torch.allclose(out, expected.clamp(-10, 10), atol=1e-6)


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
    with pytest.raises(ConfigError, match=r"algo\.discriminator\.output"):
        build_discriminator(DiscriminatorConfig(output="step"), 12, seq_len=4, image_shape=(1, 2, 2))


def test_teacher_forced_with_a_carried_state_continues_the_run():
    """Two pieces, the second started from the first's final_state and last symbol, give the logits and
    states of one teacher-forced run over the concatenation."""
    g = _generator()
    y = torch.randint(0, V, (2, 9))
    whole = g.teacher_forced(y)
    first = g.teacher_forced(y[:, :4])
    second = g.teacher_forced(y[:, 4:], state=g.final_state(first), previous=y[:, 3])
    assert torch.allclose(torch.cat([first.logits, second.logits], 1), whole.logits, atol=1e-6)
    assert torch.allclose(torch.cat([first.hidden, second.hidden], 1), whole.hidden, atol=1e-6)
    fresh = g.teacher_forced(y[:, 4:])
    assert not torch.allclose(fresh.logits, second.logits, atol=1e-3)
    with pytest.raises(ValueError, match="previous"):
        g.teacher_forced(y, state=g.final_state(first))
