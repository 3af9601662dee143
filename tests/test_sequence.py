"""Teacher forcing, scheduled sampling and Professor Forcing (raygen/algorithms/sequence.py).

Tiny GRUs on hand-made datasets, CPU, seeded. Gates are driven through a fake worker context whose
all_reduce_mean returns a fixed accuracy, so each test knows which branch must be taken.
"""

import copy
import math

import pytest
import torch

from raygen.algorithms.sequence import (
    PAPER_SETTINGS,
    ProfessorForcing,
    ScheduledSampling,
    TeacherForcing,
    sequence_nll,
)
from raygen.config import ConfigError, RunConfig, build_config
from raygen.data import Dataset
from raygen.distributed import LocalContext
from raygen.engine.loop import train

TINY_NET = {"generator": {"layers": 1, "width": 8, "embed_dim": 4}}
TINY_EVAL = {
    "drift_sequences": 4,
    "generate_factor": 3,
    "hidden_sequences": 6,
    "eval_batch": 8,
    "long_samples": 1,
}


def text_dataset(n: int = 24, length: int = 10) -> Dataset:
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 3, (3 * n, 1), generator=g)
    seqs = (offsets + torch.arange(length)) % 3  # "abcabc…" from a random phase
    seqs[:, ::4] = torch.randint(0, 3, seqs[:, ::4].shape, generator=g)  # some noise
    return Dataset(
        name="tiny-text",
        kind="sequence",
        shape=(length,),
        splits={"train": seqs[:n], "valid": seqs[n : 2 * n], "test": seqs[2 * n :]},
        vocab=["a", "b", "c"],
    )


def image_dataset(n: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(1)
    seqs = (torch.rand(3 * n, 16, generator=g) > 0.5).long()
    return Dataset(
        name="tiny-digits",
        kind="sequence",
        shape=(16,),
        splits={"train": seqs[:n], "valid": seqs[n : 2 * n], "test": seqs[2 * n :]},
        binary=True,
        vocab=["0", "1"],
        meta={"image_shape": (1, 4, 4)},
    )


def config(algorithm: str, algo: dict | None = None, **train_kw) -> RunConfig:
    algo_cfg = {**TINY_NET, **TINY_EVAL, **(algo or {})}
    if algorithm == "professor":
        algo_cfg.setdefault("discriminator", {"width": 6, "conv_channels": (4, 4)})
    return RunConfig.model_validate(
        {
            "algorithm": algorithm,
            "dataset": "tiny",
            "seed": 0,
            "train": {
                "steps": 4,
                "batch_size": 6,
                "lr": 1e-2,
                "grad_clip": 5.0,
                "log_every": 2,
                "eval_every": 4,
                "eval_examples": 8,
                **train_kw,
            },
            "eval": {"test_examples": 8, "sample_count": 4},
            "algo": algo_cfg,
        }
    )


class FixedAccuracy(LocalContext):
    """A worker context whose reduction returns a fixed value: what every worker would see after reducing."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.reduced: list[float] = []

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        self.reduced.append(float(value))
        return torch.tensor(self.value, dtype=torch.float64)


def professor(ctx_accuracy: float | None = None, dataset: Dataset | None = None, **algo) -> ProfessorForcing:
    torch.manual_seed(0)
    model = ProfessorForcing(config("professor", algo), dataset or text_dataset())
    if ctx_accuracy is not None:
        model.ctx = FixedAccuracy(ctx_accuracy)
    return model


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def batch(dataset: Dataset | None = None) -> torch.Tensor:
    return (dataset or text_dataset()).splits["train"][:6]


def nll_only_step(model: ProfessorForcing, y: torch.Tensor) -> list[torch.Tensor]:
    """The generator parameters after one NLL-only Adam step from `model`'s current state (independent path:
    teacher forcing's step). Its teacher-forced run is the one Professor Forcing uses (with the pre-tanh
    activations, the step loop on CPU) rather than the fused kernel, so that equality can be exact."""
    torch.manual_seed(0)
    tf = TeacherForcing(config("teacher"), text_dataset())
    tf.generator.load_state_dict(model.generator.state_dict())
    tf.training_logits = lambda y: (tf.generator.teacher_forced(y, pre_tanh=True).logits, {})
    tf.train_step(y)
    return params(tf.generator)


# ------------------------------------------------------------------------------------------------ metrics


def test_bpc_of_a_uniform_model_is_log2_vocab():
    data = text_dataset()
    model = TeacherForcing(config("teacher"), data)
    with torch.no_grad():
        model.generator.head.weight.zero_()
        model.generator.head.bias.zero_()  # softmax over V=3 symbols is uniform
    out = model.evaluate(data.splits["test"], "test", full=False, generator=torch.Generator())
    assert out["nll"] == pytest.approx(math.log(3), rel=1e-6)
    assert out["bpc"] == pytest.approx(math.log2(3), rel=1e-6)
    assert "nll_image" not in out


def test_nll_matches_torch_distributions_and_image_nll_is_per_image():
    data = image_dataset()
    torch.manual_seed(0)
    model = TeacherForcing(config("teacher"), data)
    x = data.splits["test"]
    out = model.evaluate(x, "test", full=False, generator=torch.Generator())
    logits = model.generator.teacher_forced(x).logits
    expected = -torch.distributions.Categorical(logits=logits.detach()).log_prob(x).double().mean()
    assert out["nll"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert out["bpc"] == pytest.approx(float(expected) / math.log(2), rel=1e-5)
    assert out["nll_image"] == pytest.approx(16 * float(expected), rel=1e-5)
    with torch.no_grad():
        model.generator.head.weight.zero_()
        model.generator.head.bias.zero_()
    uniform = model.evaluate(x, "test", full=False, generator=torch.Generator())
    assert uniform["nll_image"] == pytest.approx(16 * math.log(2), rel=1e-6)  # 16 fair coins


def test_full_evaluation_reports_drift_and_hidden_state_distances():
    data = text_dataset()
    model = TeacherForcing(config("teacher"), data)
    out = model.evaluate(data.splits["test"], "test", full=True, generator=torch.Generator().manual_seed(0))
    assert {"nll", "bpc", "early_drift", "late_drift", "centroid_distance", "nearest_free_distance"} <= set(
        out
    )
    assert {"centroid_distance_rel", "centroid_distance_rel_std", "nearest_baseline_rel", "spread"} <= set(
        out
    )
    assert all(math.isfinite(v) and v >= 0 for v in out.values())


def test_hidden_distances_are_relative_to_the_spread_with_a_teacher_baseline_over_repeats():
    """hidden_distances = mean and std over repeats of scipy-computed distances on the clouds each repeat
    used (recorded by spies): two disjoint random subsets of the data, teacher forced, and a free cloud."""
    from scipy.spatial.distance import cdist

    data = text_dataset()
    torch.manual_seed(0)
    model = TeacherForcing(config("teacher", {"hidden_repeats": 3, "hidden_sequences": 5}), data)
    x = torch.tensor([[(i // 3**k) % 3 for k in range(10)] for i in range(24)])  # 24 distinct sequences
    subsets, clouds = [], []
    teacher_states, free_states = model._teacher_states, model._free_states
    model._teacher_states = lambda d, t: subsets.append(d) or teacher_states(d, t)
    model._free_states = lambda n, t, sampler: clouds.append(free_states(n, t, sampler)) or clouds[-1]
    out = model.hidden_distances(x, torch.Generator().manual_seed(3))
    assert len(subsets) == 6 and len(clouds) == 3 and clouds[0].shape == (5, 8)
    expected = {
        k: []
        for k in (
            "centroid_distance_rel",
            "nearest_free_distance_rel",
            "centroid_baseline_rel",
            "nearest_baseline_rel",
        )
    }
    for i, free in enumerate(clouds):
        sa, sb = subsets[2 * i], subsets[2 * i + 1]
        assert len(sa) == len(sb) == 5
        assert not {tuple(r.tolist()) for r in sa} & {tuple(r.tolist()) for r in sb}  # disjoint
        with torch.no_grad():
            a = model.generator.teacher_forced(sa).hidden[:, -1].double().numpy()
            b = model.generator.teacher_forced(sb).hidden[:, -1].double().numpy()
        f = free.detach().double().numpy()
        spread = ((a - a.mean(0)) ** 2).sum(1).mean() ** 0.5
        expected["centroid_distance_rel"].append(((a.mean(0) - f.mean(0)) ** 2).sum() ** 0.5 / spread)
        expected["nearest_free_distance_rel"].append(cdist(a, f).min(1).mean() / spread)
        expected["centroid_baseline_rel"].append(((a.mean(0) - b.mean(0)) ** 2).sum() ** 0.5 / spread)
        expected["nearest_baseline_rel"].append(cdist(a, b).min(1).mean() / spread)
    assert not all(torch.equal(subsets[0], s) for s in subsets[2::2])  # fresh subsets per repeat
    for key, values in expected.items():
        v = torch.tensor(values, dtype=torch.float64)
        assert out[key] == pytest.approx(float(v.mean()), rel=1e-6), key
        assert out[f"{key}_std"] == pytest.approx(float(v.std()), rel=1e-6), key


def test_stream_evaluation_carries_the_state_and_differs_from_resetting():
    """On a tiny stream of 3 sequences: nll_stream equals one hand-stepped run over the concatenated text
    (the cell-by-cell path fed the data, begin symbol only at the start), and differs from the reset nll."""
    data = text_dataset(n=3, length=5)
    torch.manual_seed(0)
    model = TeacherForcing(config("teacher", {"eval_stream": True, "eval_batch": 2}), data)
    x = data.splits["test"]  # (3, 5): chunks of 2 sequences, so the state crosses a chunk boundary too
    out = model.evaluate(x, "test", full=False, generator=torch.Generator())
    stream = x.reshape(1, -1)
    with torch.no_grad():
        steps = model.generator.steps(
            1, stream.shape[1], truth=stream, feed_truth=torch.ones_like(stream, dtype=torch.bool)
        )
        logits = torch.stack([s.logits for s in steps], 1)
    expected = -torch.distributions.Categorical(logits=logits).log_prob(stream).double().mean()
    assert out["nll_stream"] == pytest.approx(float(expected), rel=1e-5)
    assert out["bpc_stream"] == pytest.approx(float(expected) / math.log(2), rel=1e-5)
    assert abs(out["nll_stream"] - out["nll"]) > 1e-4
    with pytest.raises(ConfigError, match=r"algo\.eval_stream"):
        TeacherForcing(config("teacher", {"eval_stream": True}), image_dataset())


def test_drift_is_zero_when_free_running_cannot_differ_from_teacher_forcing():
    """A model whose recurrence ignores its inputs behaves identically in both modes: drift = 0 exactly
    in expectation; with input weights zeroed the free-running states equal the teacher-forced ones."""
    data = text_dataset()
    model = TeacherForcing(config("teacher"), data)
    with torch.no_grad():
        model.generator.embedding.weight.zero_()
    out = model.drift(data.splits["test"], torch.Generator().manual_seed(0))
    assert out["early_drift"] == pytest.approx(0.0, abs=1e-6)
    # late states differ from early ones (the state keeps evolving), so late drift needs no special value
    assert math.isfinite(out["late_drift"])


# ------------------------------------------------------------------------------------------------ scheduled sampling


@pytest.mark.parametrize(
    "schedule, settings, formula",
    [
        (
            "linear",
            {"linear_start": 1.0, "linear_slope": 0.01, "min_truth_prob": 0.2},
            lambda i: max(0.2, 1 - 0.01 * i),
        ),
        ("exponential", {"exponential_base": 0.97}, lambda i: 0.97**i),
        ("inverse_sigmoid", {"inverse_sigmoid_k": 10.0}, lambda i: 10 / (10 + math.exp(i / 10))),
    ],
)
def test_scheduled_sampling_probability_follows_its_schedule(schedule, settings, formula):
    model = ScheduledSampling(config("scheduled", {"schedule": schedule, **settings}), text_dataset())
    for i in (0, 1, 7, 50, 79, 80, 81, 500):
        assert model.truth_prob(i) == pytest.approx(formula(i), rel=1e-12, abs=1e-300)
    # the training step uses ε at the current update count and reports it
    model.updates = 7
    assert model.train_step(batch())["truth_prob"] == pytest.approx(formula(7), rel=1e-12)


def test_scheduled_sampling_extremes_are_teacher_forcing_and_free_running():
    data = text_dataset()
    y = batch(data)
    always = ScheduledSampling(
        config("scheduled", {"schedule": "exponential", "exponential_base": 1.0}), data
    )
    logits, _ = always.training_logits(y)
    assert torch.allclose(logits, always.generator.teacher_forced(y).logits, atol=1e-5)
    never = ScheduledSampling(config("scheduled", {"schedule": "linear", "linear_start": 0.0}), data)
    assert never.truth_prob(0) == 0.0
    seen = []
    original = never.generator.free_running

    def spy(*args, **kw):
        out = original(*args, **kw)
        seen.append(out)
        return out

    never.generator.free_running = spy
    never.training_logits(y)
    assert torch.equal(seen[0].inputs[:, 1:], seen[0].samples[:, :-1])  # fed its own samples only


# ------------------------------------------------------------------------------------------------ professor forcing: gates


def test_closed_generator_gate_blocks_the_adversarial_gradient():
    model = professor(ctx_accuracy=0.5)  # ≤ 0.75: no adversarial gradient
    y = batch()
    expected = nll_only_step(model, y)
    metrics = model.train_step(y)
    assert metrics["gate_generator_open"] == 0.0
    assert same(params(model.generator), expected)


def test_open_generator_gate_lets_the_adversarial_gradient_through():
    model = professor(ctx_accuracy=0.8)
    y = batch()
    nll_only = nll_only_step(model, y)
    metrics = model.train_step(y)
    assert metrics["gate_generator_open"] == 1.0
    assert not same(params(model.generator), nll_only)


@pytest.mark.parametrize("accuracy, updated", [(0.995, False), (0.99, True), (0.6, True)])
def test_discriminator_gate_blocks_its_update(accuracy, updated):
    model = professor(ctx_accuracy=accuracy)
    before = params(model.discriminator)
    metrics = model.train_step(batch())
    assert metrics["gate_discriminator_open"] == float(updated)
    assert same(params(model.discriminator), before) == (not updated)


def test_thresholds_are_config_fields():
    """Forcing the gates with the thresholds alone (no fake context): gate_generator=1.0 never opens the
    generator's gate (accuracy > 1 is impossible); gate_discriminator=1.0 never pauses the discriminator."""
    closed = professor(gate_generator=1.0, gate_discriminator=1.0)
    y = batch()
    expected = nll_only_step(closed, y)
    d_before = params(closed.discriminator)
    closed.train_step(y)
    assert same(params(closed.generator), expected)
    assert not same(params(closed.discriminator), d_before)  # accuracy ≤ 1.0 always: updated


def test_gate_decision_uses_the_reduced_accuracy():
    model = professor(ctx_accuracy=0.9)
    calls: list[str] = []
    update = model.update
    model.update = lambda opt, loss, **kw: (calls.append("update"), update(opt, loss, **kw))[1]
    original = model.ctx.all_reduce_mean
    model.ctx.all_reduce_mean = lambda v: (calls.append("reduce"), original(v))[1]
    metrics = model.train_step(batch())
    local = model.ctx.reduced[0]
    assert calls[0] == "reduce" and calls.count("reduce") == 1  # reduced once, before any update
    assert local != 0.9  # the local value differs: an untrained discriminator is near chance
    assert metrics["disc_accuracy"] == 0.9
    assert metrics["gate_generator_open"] == 1.0 and metrics["gate_discriminator_open"] == 1.0


def test_local_accuracy_is_the_balanced_classification_accuracy():
    model = professor(ctx_accuracy=0.5)
    with torch.no_grad():
        head = model.discriminator.mlp[-1]
        head.weight.zero_()
        head.bias.fill_(1.0)  # says "teacher forced" for everything: right on half the inputs
    model.train_step(batch())
    assert model.ctx.reduced[0] == pytest.approx(0.5)


def test_held_out_discriminator_accuracy():
    model = professor()
    valid = text_dataset().splits["valid"]
    with torch.no_grad():
        head = model.discriminator.mlp[-1]
        head.weight.zero_()
        head.bias.fill_(-1.0)  # "free running" for everything: right on exactly half
    out = model.evaluate(valid, "valid", full=False, generator=torch.Generator().manual_seed(0))
    assert out["disc_accuracy"] == 0.5
    model = professor()
    out = model.evaluate(valid, "valid", full=False, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= out["disc_accuracy"] <= 1.0


def test_moving_average_gate_follows_the_original_code():
    model = professor(ctx_accuracy=1.0, gate="moving_average", ema_decay=0.5, ema_threshold=0.9)
    y = batch()
    # EMA from 0.5: 0.75, 0.875 (≤ 0.9: update), 0.9375 (> 0.9: discriminator pauses)
    for expected_ema, d_updates in ((0.75, True), (0.875, True), (0.9375, False)):
        before_d = params(model.discriminator)
        nll_only = nll_only_step(model, y)
        metrics = model.train_step(y)
        assert metrics["disc_accuracy_ema"] == pytest.approx(expected_ema)
        assert metrics["gate_generator_open"] == 1.0
        assert not same(params(model.generator), nll_only)  # the generator always gets C_f
        assert same(params(model.discriminator), before_d) == (not d_updates)
    assert "accuracy_ema" in model.state_dict()


class ScriptedAccuracy(LocalContext):
    """A worker context whose reduction returns the next value of a script: the accuracies every worker
    would see after reducing, one per step."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.values.pop(0), dtype=torch.float64)


def test_window_gate_opens_and_closes_exactly_when_the_moving_average_crosses():
    script = [0.9, 0.6, 0.8, 0.8, 0.8, 0.7, 0.6, 1.0, 1.0, 1.0]
    window = 3
    model = professor(gate="window", gate_window=window, gate_generator=0.75, gate_discriminator=0.9)
    model.ctx = ScriptedAccuracy(script)
    y = batch()
    for i in range(len(script)):
        recent = script[max(0, i + 1 - window) : i + 1]
        average = sum(recent) / len(
            recent
        )  # 0.9, 0.75, 0.7667, 0.7333, 0.8, 0.7667, 0.7, 0.7667, 0.8667, 1.0
        before_d = params(model.discriminator)
        metrics = model.train_step(y)
        assert metrics["disc_accuracy"] == script[i]
        assert metrics["disc_accuracy_smoothed"] == pytest.approx(average)
        assert metrics["gate_generator_open"] == float(average > 0.75), i
        assert metrics["gate_discriminator_open"] == float(average <= 0.9), i
        # The generator stepped on the NLL alone (T × the per-symbol NLL, thesis normalisation) iff closed:
        nll_alone = metrics["loss_generator"] == pytest.approx(y.shape[1] * metrics["nll"], rel=1e-6)
        assert nll_alone == (average <= 0.75), i
        assert same(params(model.discriminator), before_d) == (average > 0.9), i
    state = model.state_dict()
    assert int(state["accuracy_seen"]) == len(script)
    assert sorted(state["accuracy_window"].tolist()) == [1.0, 1.0, 1.0]


def test_unknown_gate_is_rejected_by_config():
    with pytest.raises(Exception, match="gate"):
        config("professor", {"gate": "percentile"})


# ------------------------------------------------------------------------------------------------ professor forcing: no leaks


def _record_grads(model: ProfessorForcing) -> list[dict]:
    """Wrap model.update: after each optimizer step, snapshot every parameter's .grad."""
    log: list[dict] = []
    update = model.update
    opts = model.optimizers()

    def recording(opt, loss, **kw):
        update(opt, loss, **kw)
        which = next(k for k, o in opts.items() if o is opt)
        grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
        log.append({"optimizer": which, "grads": grads, "counts": kw.get("counts", True)})

    model.update = recording
    return log


@pytest.mark.parametrize("teacher_cost", [False, True])
def test_adversarial_costs_move_only_the_generator(teacher_cost):
    model = professor(
        ctx_accuracy=0.995, teacher_cost=teacher_cost
    )  # generator gate open, discriminator closed
    log = _record_grads(model)
    d_before = params(model.discriminator)
    model.train_step(batch())
    assert [e["optimizer"] for e in log] == ["generator"]
    grads = log[0]["grads"]
    assert all(g is None for n, g in grads.items() if n.startswith("discriminator."))  # no leak into D
    assert same(params(model.discriminator), d_before)


def _hand_objective(model, y, b_teacher, b_free, constants, normalization, teacher_cost, weight=1.0):
    """Eqs 2.2 + 2.3 [+ 2.4] written out independently with torch.distributions: per sequence, the NLL is
    −Σ_t log P(y_t | y_<t) (thesis) or its mean over t (per_symbol); C_f is −log D(B_free) per sequence
    (the mean over t of −log D_t for a per-step D); both averaged over the sequences."""
    G, D = model.generator, model.discriminator
    log_p = torch.distributions.Categorical(logits=G.teacher_forced(y).logits).log_prob(y)  # (N, T)
    per_sequence = -log_p.sum(1) if normalization == "thesis" else -log_p.mean(1)
    nll = per_sequence.mean()
    d_free = torch.func.functional_call(D, constants, (b_free,))  # (N, K) with parameters as constants
    c_f = -torch.distributions.Bernoulli(logits=d_free).log_prob(torch.ones_like(d_free)).mean(1).mean()
    adversarial = c_f
    if teacher_cost:
        d_teacher = torch.func.functional_call(D, constants, (b_teacher,))
        c_t = -torch.distributions.Bernoulli(logits=d_teacher).log_prob(torch.zeros_like(d_teacher))
        adversarial = adversarial + c_t.mean(1).mean()
    return nll + weight * adversarial


@pytest.mark.parametrize(
    "teacher_cost, normalization, output",
    [
        (False, "thesis", "sequence"),
        (True, "thesis", "sequence"),
        (False, "per_symbol", "sequence"),
        (False, "thesis", "step"),
        (True, "per_symbol", "step"),
    ],
)
def test_generator_objective_and_gradients_equal_a_hand_computation(teacher_cost, normalization, output):
    """The step's objective value and both gradients (one discriminator forward shared by both backward
    passes) equal an independent formulation: eqs 2.2/2.3/2.4 by hand (`_hand_objective`) through a copy
    of D whose parameters are constants, and C_d from a forward on detached behaviour."""
    torch.manual_seed(0)
    algo = {
        "teacher_cost": teacher_cost,
        "normalization": normalization,
        "adversarial_weight": 0.7,
        "discriminator": {"width": 6, "output": output},
    }
    model = ProfessorForcing(config("professor", algo, grad_clip=None), text_dataset())
    model.ctx = FixedAccuracy(0.8)  # both gates open
    y = batch()
    G, D = model.generator, model.discriminator
    torch.manual_seed(5)  # the free-running samples of the reference and of the step are the same draws
    teacher, free = G.teacher_forced(y), G.free_running(len(y), y.shape[1])
    b_teacher, b_free = G.behaviour(teacher), G.behaviour(free)
    d = D(torch.cat([b_teacher.detach(), b_free.detach()]))
    assert d.shape == ((2 * len(y), 1) if output == "sequence" else (2 * len(y), y.shape[1]))
    targets = torch.cat([torch.ones(len(y), d.shape[1]), torch.zeros(len(y), d.shape[1])])
    c_d = 2 * torch.nn.functional.binary_cross_entropy_with_logits(d, targets)  # mean per half, summed
    expected_d = torch.autograd.grad(c_d, list(D.parameters()))
    constants = {k: v.detach() for k, v in D.named_parameters()}
    objective = _hand_objective(model, y, b_teacher, b_free, constants, normalization, teacher_cost, 0.7)
    expected_g = torch.autograd.grad(objective, list(G.parameters()))

    log = _record_grads(model)
    torch.manual_seed(5)
    metrics = model.train_step(y)
    assert metrics["loss_generator"] == pytest.approx(float(objective.detach()), rel=1e-5)
    assert [e["optimizer"] for e in log] == ["generator", "discriminator"]
    got_g = [log[0]["grads"][f"generator.{n}"] for n, _ in G.named_parameters()]
    got_d = [log[1]["grads"][f"discriminator.{n}"] for n, _ in D.named_parameters()]
    for got, expected in zip(got_g + got_d, list(expected_g) + list(expected_d)):
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_thesis_normalisation_weighs_the_nll_T_times_the_per_symbol_one_and_reports_per_symbol():
    """Under both normalisations the metrics' nll is the per-symbol mean (BPC keeps its meaning); the
    objective with the gate shut is the NLL alone: T × that mean (thesis) or the mean (per_symbol)."""
    y = batch()
    values = {}
    for normalization in ("thesis", "per_symbol"):
        model = professor(ctx_accuracy=0.5, normalization=normalization)
        with torch.no_grad():
            logits = model.generator.teacher_forced(y).logits
        log_p = torch.distributions.Categorical(logits=logits).log_prob(y)
        metrics = model.train_step(y)
        assert metrics["nll"] == pytest.approx(float(-log_p.mean()), rel=1e-6)
        assert metrics["bpc"] == pytest.approx(float(-log_p.mean()) / math.log(2), rel=1e-6)
        values[normalization] = metrics["loss_generator"]
    assert values["thesis"] == pytest.approx(y.shape[1] * values["per_symbol"], rel=1e-6)


def test_normalisation_and_weight_are_config_fields_with_the_thesis_defaults():
    cfg = build_config(algorithm="professor", dataset="seqdigits", overrides={"algo.discriminator.width": 16})
    assert cfg.algo.normalization == "thesis" and cfg.algo.adversarial_weight == 1.0
    assert cfg.algo.discriminator.output == "sequence"
    assert cfg.algo.gate == "window" and cfg.algo.gate_window == 10
    assert cfg.algo.adversarial_update == "sum" and cfg.algo.adversarial_every == 1  # §2.2.2: every step
    with pytest.raises(Exception, match="normalization"):
        config("professor", {"normalization": "per_token"})


def test_teacher_cost_changes_the_generator_update():
    y = batch()
    a, b = professor(ctx_accuracy=0.8), professor(ctx_accuracy=0.8, teacher_cost=True)
    torch.manual_seed(5)
    a.train_step(y)
    torch.manual_seed(5)
    b.train_step(y)
    assert not same(params(a.generator), params(b.generator))


def test_discriminator_cost_moves_only_the_discriminator():
    model = professor(ctx_accuracy=0.8)  # both gates open
    log = _record_grads(model)
    model.train_step(batch())
    assert [e["optimizer"] for e in log] == ["generator", "discriminator"]
    after_g, after_d = log[0]["grads"], log[1]["grads"]
    d_grads = []
    for name, grad in after_d.items():
        if name.startswith("generator."):
            assert torch.equal(grad, after_g[name]), name  # C_d added nothing to the generator's grads
        else:
            assert after_g[name] is None and grad is not None, name  # C_d alone filled D's grads
            d_grads.append(grad.abs().sum())
    assert sum(d_grads) > 0
    assert log[1]["counts"] is False
    assert model.updates == 1  # only the generator update counts toward the budget


def test_discriminator_inputs_are_detached_for_its_own_update():
    """With the generator gate closed, the generator's step equals an NLL-only step even though C_d was
    back-propagated: C_d sent nothing into the generator."""
    model = professor(ctx_accuracy=0.5)
    y = batch()
    expected = nll_only_step(model, y)
    d_before = params(model.discriminator)
    model.train_step(y)
    assert same(params(model.generator), expected)
    assert not same(params(model.discriminator), d_before)


def test_discriminator_optimizer_settings():
    model = professor()
    d_opt = model.optimizers()["discriminator"].param_groups[0]
    g_opt = model.optimizers()["generator"].param_groups[0]
    assert d_opt["lr"] == pytest.approx(0.1 * g_opt["lr"])
    assert d_opt["betas"][0] == 0.5
    assert {id(p) for p in d_opt["params"]}.isdisjoint({id(p) for p in g_opt["params"]})


def teacher_step(model: ProfessorForcing, y: torch.Tensor, grad_clip: float | None = 5.0) -> TeacherForcing:
    """Teacher forcing's own step (fused kernel) from `model`'s generator and generator-Adam state."""
    torch.manual_seed(0)
    tf = TeacherForcing(config("teacher", grad_clip=grad_clip), text_dataset())
    tf.generator.load_state_dict(model.generator.state_dict())
    # a copy: load_state_dict keeps the very moment tensors, which tf's step would then update in place
    tf.optimizers()["generator"].load_state_dict(copy.deepcopy(model.optimizers()["generator"].state_dict()))
    tf.train_step(y)
    return tf


@pytest.mark.parametrize("accuracy", [0.8, 0.5])
def test_separate_adversarial_update_is_the_nll_step_then_a_first_adam_step_on_c_f(accuracy):
    """The authors' code's reading (LM_GANS): teacher forcing's step, then at the updated parameters one step
    of a second Adam on weight·C_f alone. Its first step is written out by hand: m̂ = g, v̂ = g², so each
    parameter moves by −lr·g/(|g| + ε) with lr = adversarial_lr_scale × train.lr. A shut gate leaves the
    NLL step alone."""
    algo = {"adversarial_update": "separate", "adversarial_lr_scale": 0.3, "adversarial_weight": 0.7}
    torch.manual_seed(0)
    model = ProfessorForcing(config("professor", algo, grad_clip=None), text_dataset())
    model.ctx = FixedAccuracy(accuracy)
    y = batch()
    G = teacher_step(model, y, grad_clip=None).generator
    torch.manual_seed(5)  # the step draws the same free-running samples after its NLL step
    free = G.free_running(len(y), y.shape[1])
    constants = {k: v.detach() for k, v in model.discriminator.named_parameters()}
    d_free = torch.func.functional_call(model.discriminator, constants, (G.behaviour(free),))
    c_f = -torch.distributions.Bernoulli(logits=d_free).log_prob(torch.ones_like(d_free)).mean()
    grads = torch.autograd.grad(0.7 * c_f, list(G.parameters()), allow_unused=True)
    lr = 0.3 * model.run_config.train.lr
    expected = [
        p.detach() - lr * g / (g.abs() + 1e-8) if g is not None and accuracy > 0.75 else p.detach()
        for p, g in zip(G.parameters(), grads)
    ]
    torch.manual_seed(5)
    metrics = model.train_step(y)
    assert metrics["gate_generator_open"] == float(accuracy > 0.75)
    assert model.updates == 1  # one minibatch, one counted generator update
    for got, want in zip(model.generator.parameters(), expected):
        assert torch.allclose(got.detach(), want, rtol=1e-5, atol=1e-7)


def test_adversarial_every_k_leaves_the_other_minibatches_to_teacher_forcing():
    model = professor(ctx_accuracy=0.8, adversarial_every=2)
    y = batch()
    assert "c_f" in model.train_step(y)  # update 0: free running, discriminator, adversarial gradient
    d_before = params(model.discriminator)
    expected = params(teacher_step(model, y).generator)
    metrics = model.train_step(y)  # update 1: teacher forcing alone
    assert "c_f" not in metrics and model.updates == 2
    assert same(params(model.generator), expected) and same(params(model.discriminator), d_before)


def test_conv_discriminator_for_sequential_images_and_size_check():
    data = image_dataset()
    model = professor(ctx_accuracy=0.8, dataset=data)
    assert type(model.discriminator).__name__ == "ConvDiscriminator"
    metrics = model.train_step(batch(data))
    assert metrics["gate_discriminator_open"] == 1.0
    with pytest.raises(ConfigError, match=r"algo\.discriminator\.input_size"):
        professor(discriminator={"width": 6, "input_size": 999})


# ------------------------------------------------------------------------------------------------ loop, presets, artifacts


class Collect:
    def __init__(self):
        self.reports = []

    def __call__(self, step, metrics, *, checkpoint=None, artifacts=()):
        self.reports.append((step, dict(metrics), list(artifacts)))


@pytest.mark.parametrize("algorithm", ["professor", "scheduled"])
def test_seeded_runs_are_deterministic(algorithm):
    runs = []
    for _ in range(2):
        report = Collect()
        train(config(algorithm, steps=4), report, dataset=text_dataset())
        runs.append([(s, m) for s, m, _ in report.reports])
    assert runs[0] == runs[1]
    assert any("train/disc_accuracy" in m for _, m in runs[0]) == (algorithm == "professor")


def test_loop_records_gate_fractions_and_artifacts():
    report = Collect()
    cfg = config("professor", {"gate_generator": 0.0}, steps=4)
    train(cfg, report, dataset=text_dataset())
    logged = [m for _, m, _ in report.reports if "train/gate_generator_open" in m]
    assert logged and all(0.0 <= m["train/gate_generator_open"] <= 1.0 for m in logged)
    final_metrics, artifacts = report.reports[-1][1], report.reports[-1][2]
    assert any("valid/disc_accuracy" in m for _, m, _ in report.reports)
    assert {"test/bpc", "test/late_drift", "test/centroid_distance", "test/nearest_free_distance"} <= set(
        final_metrics
    )
    names = {a.name: a for a in artifacts}
    assert set(names) == {"samples.txt", "tsne.png"}
    text = names["samples.txt"].data.decode()
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert text.count("# sample ") == 4 and text.count("# long sample ") == 1
    assert [len(line) for line in body] == [10] * 4 + [30]
    assert set("".join(body)) <= {"a", "b", "c"}
    assert names["tsne.png"].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_sequences_give_a_sample_grid():
    torch.manual_seed(0)
    data = image_dataset()
    model = TeacherForcing(config("teacher"), data)
    arts = {a.name: a for a in model.artifacts(data, generator=torch.Generator().manual_seed(0))}
    assert set(arts) == {"samples.png", "tsne.png"}
    assert arts["samples.png"].data[:4] == b"\x89PNG"
    assert model.sample(3, generator=torch.Generator()).shape == (3, 16)


def test_presets_and_paper_settings():
    p = ProfessorForcing.presets("sequence")
    assert p["train"]["lr"] == 1e-4 and p["train"]["grad_clip"] == 5.0
    assert ProfessorForcing.presets("image") == {}
    cfg = build_config(algorithm="professor", dataset="seqdigits", overrides={"algo.discriminator.width": 16})
    assert cfg.train.grad_clip == 5.0 and cfg.algo.discriminator.clip == 10.0
    assert cfg.algo.gate_generator == 0.75 and cfg.algo.gate_discriminator == 0.99
    ptb = PAPER_SETTINGS["ptb"]["algo"]
    assert ptb["generator"]["width"] == 1024 and ptb["discriminator"]["width"] == 2048
    assert PAPER_SETTINGS["seqmnist"]["algo"]["generator"] == {"layers": 3, "width": 512}


def test_rejects_non_sequence_data_and_impossible_hidden_step():
    from raygen.data import load_dataset

    with pytest.raises(ConfigError, match="sequences"):
        TeacherForcing(config("teacher"), load_dataset("digits"))
    with pytest.raises(ConfigError, match=r"algo\.hidden_step"):
        TeacherForcing(config("teacher", {"hidden_step": 11}), text_dataset())


def test_sequence_nll_is_per_example_mean_cross_entropy():
    logits = torch.randn(2, 3, 4)
    y = torch.randint(0, 4, (2, 3))
    expected = -torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1).mean(1)
    assert torch.allclose(sequence_nll(logits, y), expected)
