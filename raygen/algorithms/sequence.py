"""Sequence models trained three ways: teacher forcing, scheduled sampling, Professor Forcing.

Goyal thesis ch. 2 (Professor Forcing, NIPS 2016). One base class owns what the three share (the GRU
generator, NLL/BPC evaluation, free-running generation, drift and hidden-state analysis, artifacts); each
variant overrides only how its training step feeds the generator and what it optimises (STYLE §5):

- `TeacherForcing`: NLL (eq 2.2) on teacher-forced runs.
- `ScheduledSampling` (Bengio et al. 2015): each input is the ground truth with probability ε_i, decayed
  over training updates i by a named schedule, otherwise the model's own sample.
- `ProfessorForcing`: C_d (eq 2.1) for the discriminator; NLL (2.2) + C_f (2.3) [+ C_t (2.4)] for the
  generator; separate optimizers and backward passes, gated by the discriminator's accuracy (§2.4.1).
  The generator takes one Adam step on NLL + C_f (§2.2.2, `algo.adversarial_update=sum`) or, as the
  authors' char-PTB code does, the NLL step and then a second Adam's step on C_f alone (`separate`).

How the objectives are normalised (`algo.normalization`; the reported `nll`/`bpc` metrics are always per
symbol, whatever the objective):
- `thesis` (default, eqs 2.2–2.4 read literally): NLL = E[−log P(y)] over whole sequences, i.e. the sum of
  −log P(y_t | y_<t) over the T symbols of a sequence, averaged over the minibatch's sequences; C_f (and
  C_t) = one −log D(B) per sequence, averaged over sequences (a per-step discriminator's outputs are first
  averaged over the sequence's steps, so each sequence still counts once); generator objective
  NLL + adversarial_weight · (C_f [+ C_t]).
- `per_symbol` (raygen before issue 8): NLL averaged over every symbol (T times smaller), C_f as above;
  with the per-step discriminator this is the old objective (C_f averaged over every output).
So under `thesis` C_f weighs T times less against the NLL than under `per_symbol`. Gradient clipping
(`train.grad_clip`) acts on the gradient of whichever objective is chosen.

Paper settings the presets cannot know from the data kind alone ("sequence" covers text and digits):
`PAPER_SETTINGS["ptb"]` and `PAPER_SETTINGS["seqmnist"]` below give them as config overrides.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch.nn import functional as F

from raygen.algorithms.base import Algorithm, Artifact
from raygen.config import AlgoConfig, ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.nets.rnn import (
    DiscriminatorConfig,
    GeneratorConfig,
    GRUGenerator,
    GRUStep,
    build_discriminator,
    default_sampler,
)

log = logging.getLogger(__name__)

# Settings of the thesis' experiments, as nested config overrides (use with build_config(overrides=...)
# flattened, or copy into a sweep file). Batch sizes are not given in the thesis.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    # §2.4.2: PTB chars, sequences of 500, 1×1024 GRU, Adam 1e-4, discriminator layers of 2048 units fed
    # "both the hidden states and char level embeddings", output clipped to [-10, 10].
    "ptb": {
        "data": {"seq_len": 500},
        "train": {"lr": 1e-4},
        "algo": {
            "generator": {"layers": 1, "width": 1024, "behaviour_embedding": True},
            "discriminator": {"arch": "bigru", "width": 2048, "clip": 10.0},
        },
    },
    # §2.4.3: binarized MNIST pixel by pixel, 3×512 GRU, lr 1e-4, convolutional discriminator.
    "seqmnist": {
        "train": {"lr": 1e-4},
        "algo": {"generator": {"layers": 3, "width": 512}, "discriminator": {"arch": "conv"}},
    },
}


# ------------------------------------------------------------------------------------------------ configs


class SequenceConfig(AlgoConfig):
    """What every sequence algorithm shares: the generator and the evaluation of long generation."""

    generator: GeneratorConfig = GeneratorConfig()
    eval_batch: int = Field(100, ge=1, description="sequences per forward pass in evaluation and sampling")
    generate_factor: int = Field(
        10, ge=1, description="train short, generate long: free-run generate_factor × L steps (§2.4.4: 20×)"
    )
    drift_sequences: int = Field(
        32, ge=2, description="free-running sequences (and data sequences) for late_drift"
    )
    hidden_step: int | None = Field(
        None,
        ge=1,
        description="step t whose hidden states are compared (Fig 2.3: t=500); None = the last step L",
    )
    hidden_sequences: int = Field(
        200, ge=2, description="hidden states per cloud (teacher-forced, free-running)"
    )
    long_samples: int = Field(2, ge=0, description="generate_factor × L long samples written to samples.txt")
    hidden_repeats: int = Field(
        5,
        ge=1,
        description="Fig 2.3 distances: repeats, each on a fresh random pair of disjoint teacher-forced subsets "
        "and fresh free-running draws; mean and std over repeats are reported",
    )
    normalization: Literal["thesis", "per_symbol"] = Field(
        "thesis",
        description="training NLL: thesis = −log P of whole sequences (sum over the T symbols, eq 2.2) averaged "
        "over sequences; per_symbol = mean over every symbol. Reported nll/bpc stay per symbol",
    )
    eval_stream: bool = Field(
        False,
        description="also report nll_stream/bpc_stream: the split read as one text, the state carried from "
        "each sequence into the next (nll/bpc reset the state at every sequence, as in training)",
    )


class TeacherForcingConfig(SequenceConfig):
    """Teacher forcing: maximum likelihood with the data fed back (eq 2.2)."""


class ScheduledSamplingConfig(SequenceConfig):
    """Bengio et al. 2015: ε_i = P(feed the ground truth) at training update i. The papers we hold give no
    values; the defaults bring ε to 0.5 after roughly 1000–2000 updates."""

    schedule: Literal["linear", "exponential", "inverse_sigmoid"] = "inverse_sigmoid"
    linear_start: float = Field(
        1.0, description="linear: ε_i = max(min_truth_prob, linear_start − linear_slope·i)"
    )
    linear_slope: float = Field(2.5e-4, ge=0)
    min_truth_prob: float = Field(0.0, ge=0, le=1, description="linear: the floor ε of the schedule")
    exponential_base: float = Field(0.9995, gt=0, le=1, description="exponential: ε_i = exponential_base^i")
    inverse_sigmoid_k: float = Field(200.0, ge=1, description="inverse sigmoid: ε_i = k / (k + exp(i / k))")


class ProfessorForcingConfig(SequenceConfig):
    """Professor Forcing (§2.2, §2.4.1) and its discriminator."""

    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    teacher_cost: bool = Field(False, description="add C_t (eq 2.4) to the generator's NLL + C_f (eq 2.3)")
    adversarial_weight: float = Field(
        1.0,
        ge=0,
        description="weight of C_f (+ C_t) against the NLL; the thesis steps on NLL + C_f (weight 1), "
        "normalised as algo.normalization says",
    )
    adversarial_update: Literal["sum", "separate"] = Field(
        "sum",
        description="sum: one generator Adam step on NLL + adversarial_weight·C_f (§2.2.2: 'gradient steps on "
        "NLL + C_f'); separate: the authors' char-PTB code (LM_GANS): the NLL step, then a second Adam with "
        "its own moment estimates steps on adversarial_weight·C_f at adversarial_lr_scale × train.lr",
    )
    adversarial_lr_scale: float = Field(
        0.1,
        gt=0,
        description="separate: the adversarial Adam's lr = this × train.lr (LM_GANS' PTB config: 1e-5 against "
        "the NLL's 1e-4); unused by sum",
    )
    adversarial_every: int = Field(
        1,
        ge=1,
        description="free-running batch, discriminator and adversarial step on every k-th minibatch only, the "
        "others are plain teacher-forcing steps (thesis: every minibatch; LM_GANS' PTB config: every 10th, "
        "its sampleFreq)",
    )
    gate: Literal["window", "accuracy", "moving_average"] = Field(
        "window",
        description="window: the thesis' thresholds (§2.4.1) on the mean accuracy of the last gate_window "
        "minibatches; accuracy: on the current minibatch's accuracy alone; moving_average: the original "
        "code's gate (LM_GANS): the discriminator pauses while an EMA of accuracy > ema_threshold",
    )
    gate_window: int = Field(
        10,
        ge=1,
        description="window gate: minibatches averaged (not given in the thesis; 10 damps the ±0.05 "
        "minibatch noise of a 32-sequence batch while following a trend within ~10 updates)",
    )
    gate_generator: float = Field(
        0.75, ge=0, le=1, description="adversarial gradient reaches the generator only while accuracy > this"
    )
    gate_discriminator: float = Field(
        0.99, ge=0, le=1, description="discriminator not updated while accuracy > this"
    )
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="moving_average gate: EMA decay (not given; our choice)"
    )
    ema_threshold: float = Field(
        0.90, ge=0, le=1, description="moving_average gate: original code used 0.90 or 0.95"
    )
    disc_lr_scale: float = Field(
        0.1, gt=0, description="discriminator lr = disc_lr_scale × train.lr (common setting)"
    )
    disc_beta1: float = Field(0.5, ge=0, lt=1, description="discriminator Adam β1 (common setting)")

    @model_validator(mode="after")
    def _gates_ordered(self) -> ProfessorForcingConfig:
        # A generator gate above the discriminator's would train the generator only against a frozen
        # discriminator (§2.4.1 uses 0.75 < 0.99); refused rather than silently meaningless.
        if self.gate_generator > self.gate_discriminator:
            raise ValueError(
                f"gate_generator ({self.gate_generator}) exceeds gate_discriminator "
                f"({self.gate_discriminator}): the generator would only learn while D is frozen"
            )
        return self


# ------------------------------------------------------------------------------------------------ helpers


def sequence_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), y (B, T) -> per-example NLL in nats per symbol (B,): −(1/T) Σ_t log P(y_t | y_<t)."""
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


def _chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), size):
        yield x[i : i + size]


def _take(n: int, size: int) -> Iterator[int]:
    for i in range(0, n, size):
        yield min(size, n - i)


def _last(steps: Iterator[GRUStep]) -> GRUStep:
    """The final step of a run, holding no earlier step in memory."""
    last = None
    for last in steps:
        pass
    if last is None:
        raise ValueError("a run of zero steps has no last step")
    return last


# ------------------------------------------------------------------------------------------------ base


class SequenceModel(Algorithm):
    """Shared machinery of the three sequence algorithms; `TeacherForcing` is this class with its name.

    Budget: `self.updates` counts generator updates only, so TF, SS and PF runs with the same
    `train.steps` see the same number of minibatches and generator steps.
    """

    name: ClassVar[str] = "sequence"
    Config: ClassVar[type[AlgoConfig]] = SequenceConfig
    # (ProfessorForcing adds its gate and discriminator terms to these; see its own metric_names)
    metric_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("nll", "bpc", "loss*", "truth_prob"),
        "quick": ("nll", "bpc", "nll_image"),
        "full": ("nll", "bpc", "nll_image", "early_drift", "late_drift", "spread", "*_distance", "*_rel"),
    }

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        """Adam lr 1e-4 (§2.4.2, §2.4.3) and gradient-norm clipping 5 (common setting, also for the
        discriminator). The thesis gives no batch size; 32 keeps CPU steps short (the net sizes keep the
        paper's values: set algo.generator.width / data.seq_len smaller for a quick CPU run)."""
        if dataset_kind != "sequence":
            return {}
        return {"train": {"lr": 1e-4, "grad_clip": 5.0, "batch_size": 32}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        if dataset.kind != "sequence":
            raise ConfigError(
                f"algorithm '{self.name}' trains on sequences but dataset '{dataset.name}' is of kind "
                f"'{dataset.kind}' (use text:PATH, text:ptb, text:embedded, seqdigits or seqmnist)"
            )
        if not dataset.vocab:
            raise ConfigError(f"dataset '{dataset.name}' has no vocabulary; sequence models need one")
        if len(dataset.shape) != 1:
            raise ConfigError(
                f"dataset '{dataset.name}' must hold (N, L) sequences, got shape {dataset.shape}"
            )
        self.vocab = list(dataset.vocab)
        self.seq_len = int(dataset.shape[0])
        self.image_shape = dataset.image_shape  # (C, H, W) for sequential images, else None
        cfg = self.cfg
        if cfg.eval_stream and self.image_shape is not None:
            raise ConfigError(
                f"config key 'algo.eval_stream' is true but dataset '{dataset.name}' holds separate images, "
                "not pieces of one text; set algo.eval_stream=false"
            )
        if cfg.hidden_step is not None and cfg.hidden_step > self.seq_len:
            raise ConfigError(
                f"config key 'algo.hidden_step' is {cfg.hidden_step} but teacher-forced states exist only for "
                f"steps 1..{self.seq_len} (data.seq_len / the dataset's sequence length)"
            )
        self.generator = GRUGenerator(len(self.vocab), cfg.generator)
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None

    # ------------------------------------------------------------------ optimisation
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.adam(self.generator.parameters())}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._optimizers is None:  # built lazily: after the loop has moved the parameters to the device
            self._optimizers = self.build_optimizers()
        return self._optimizers

    def training_logits(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Logits (B, T, V) predicting y under this algorithm's input feeding; teacher forcing here."""
        return self.generator.teacher_forced(y, pre_tanh=False).logits, {}

    def nll_objective(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(training NLL under algo.normalization, its per-symbol value for the metrics). Every sequence of a
        batch has T symbols, so eq 2.2's mean over sequences of Σ_t −log P(y_t | y_<t) is T × the mean
        over symbols."""
        per_symbol = sequence_nll(logits, y).mean()
        value = float(per_symbol.detach())
        if self.cfg.normalization == "thesis":
            return per_symbol * y.shape[1], value
        if self.cfg.normalization == "per_symbol":
            return per_symbol, value
        raise NotImplementedError(self.cfg.normalization)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        y = batch.long()
        logits, extra = self.training_logits(y)
        loss, nll = self.nll_objective(logits, y)
        self.update(self.optimizers()["generator"], loss, params=self.generator.parameters())
        return {"nll": nll, "bpc": _bpc(nll), **extra}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, length: int | None = None
    ) -> torch.Tensor:
        """n free-running sequences (n, L) (or (n, length)) of symbols at temperature 1."""
        length = length or self.seq_len
        sampler = default_sampler(generator)
        out = []
        for m in _take(n, self.cfg.eval_batch):
            out.append(torch.stack([s.sample for s in self.generator.steps(m, length, sampler=sampler)], 1))
        samples = torch.cat(out).cpu()
        return samples.reshape(n, *self.shape) if length == self.seq_len else samples

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def nll(self, data: torch.Tensor) -> float:
        """Teacher-forced NLL of `data` (N, L) in nats per symbol, averaged over every symbol."""
        total, count = 0.0, 0
        for chunk in _chunks(data.long(), self.cfg.eval_batch):
            per_example = sequence_nll(self.generator.teacher_forced(chunk, pre_tanh=False).logits, chunk)
            total += float(per_example.double().sum()) * chunk.shape[1]
            count += chunk.numel()
        return total / count

    @torch.no_grad()
    def stream_nll(self, data: torch.Tensor) -> float:
        """NLL in nats per symbol of `data` (N, L) read as one text: row i+1 continues row i (text splits are
        cut into consecutive non-overlapping pieces), so the state and the preceding symbol carry over
        instead of restarting at the begin symbol with zero states. Only the stream's first symbol is
        predicted from the begin symbol."""
        stream = data.long().reshape(1, -1)
        state, previous, total = None, None, 0.0
        for chunk in stream.split(self.cfg.eval_batch * self.seq_len, 1):
            out = self.generator.teacher_forced(chunk, pre_tanh=False, state=state, previous=previous)
            total += float(F.cross_entropy(out.logits[0], chunk[0], reduction="sum").double())
            state, previous = self.generator.final_state(out), chunk[:, -1]
        return total / stream.shape[1]

    @torch.no_grad()
    def drift(self, data: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """How far free-running behaviour wanders from teacher-forced behaviour (train short, generate long).

        Teacher cloud: the pre-tanh activations a_t (all layers) at every step of `drift_sequences` data
        sequences; its centroid μ and spread s = sqrt(mean ‖a − μ‖²). Free-running: `drift_sequences`
        sequences generated for generate_factor × L steps. Then
            early_drift = ‖mean of free a_t over steps 1..L − μ‖ / s
            late_drift  = ‖mean of free a_t over the last L steps − μ‖ / s
        i.e. centroid distances in units of the teacher cloud's spread (0: same centre; ≳1: the free run
        has left the region teacher forcing visits). early_drift is the in-length reference.
        """
        n, L = self.cfg.drift_sequences, self.seq_len
        total = self.cfg.generate_factor * L
        teacher = torch.cat(
            [
                self.generator.teacher_forced(c).pre_tanh.flatten(0, 1).double()
                for c in _chunks(data[:n].long(), n)
            ]
        )  # (n*L, F)
        mu = teacher.mean(0)
        spread = teacher.sub(mu).pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
        early = torch.zeros_like(mu)
        late = torch.zeros_like(mu)
        sampler = default_sampler(generator)
        m_total = 0
        for m in _take(n, self.cfg.eval_batch):
            for t, step in enumerate(self.generator.steps(m, total, sampler=sampler)):
                if t < L:
                    early += step.pre_tanh.double().sum(0)
                if t >= total - L:
                    late += step.pre_tanh.double().sum(0)
            m_total += m
        early /= m_total * L
        late /= m_total * L
        return {
            "early_drift": float((early - mu).norm() / spread),
            "late_drift": float((late - mu).norm() / spread),
        }

    def _teacher_states(self, data: torch.Tensor, t: int) -> torch.Tensor:
        """h_t (all layers) of teacher-forced runs over `data` (n, ≥ t): (n, layers*H)."""
        return torch.cat(
            [
                self.generator.teacher_forced(c[:, :t], pre_tanh=False).hidden[:, t - 1]
                for c in _chunks(data.long(), 100)
            ]
        )

    def _free_states(self, n: int, t: int, sampler: Any) -> torch.Tensor:
        """h_t (all layers) of n free-running runs: (n, layers*H)."""
        return torch.cat(
            [_last(self.generator.steps(m, t, sampler=sampler)).hidden for m in _take(n, self.cfg.eval_batch)]
        )

    @torch.no_grad()
    def hidden_clouds(
        self, data: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states h_t (all layers, (n, layers*H)) at step t = hidden_step (Fig 2.3): teacher-forced on
        `hidden_sequences` data sequences, and free-running on as many of the model's own sequences."""
        t = self.cfg.hidden_step or self.seq_len
        data = data[: self.cfg.hidden_sequences]
        teacher = self._teacher_states(data, t)
        free = self._free_states(len(data), t, default_sampler(generator))
        return teacher.cpu(), free.cpu()

    @torch.no_grad()
    def hidden_distances(self, data: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """Fig 2.3's distances with their noise floor and uncertainty, `hidden_repeats` times.

        Each repeat draws 2n sequences of `data` (n = min(hidden_sequences, N // 2)) at random and splits
        them into two disjoint teacher-forced clouds A and B at step t = hidden_step, and draws n fresh
        free-running runs F. `metrics.sequence.hidden_state_distances(A, F, B)` gives the raw TF-vs-free
        distances, the same divided by A's spread (`*_rel`), and the teacher-vs-teacher baseline A-vs-B
        (`*_baseline_rel`). Reported: the mean over repeats under each name, and for the relative ones
        also `<name>_std`, the standard deviation over repeats (ddof 1; 0 for a single repeat).
        """
        from raygen.metrics.sequence import hidden_state_distances

        t = self.cfg.hidden_step or self.seq_len
        n = min(self.cfg.hidden_sequences, len(data) // 2)
        if n < 2:
            raise ValueError(
                f"hidden-state distances need at least 4 sequences (two disjoint teacher-forced clouds of 2), "
                f"got {len(data)}"
            )
        sampler = default_sampler(generator)
        repeats = []
        for _ in range(self.cfg.hidden_repeats):
            order = torch.randperm(len(data), generator=generator)[: 2 * n].to(data.device)
            a, b = self._teacher_states(data[order[:n]], t), self._teacher_states(data[order[n:]], t)
            repeats.append(hidden_state_distances(a.cpu(), self._free_states(n, t, sampler).cpu(), b.cpu()))
        out = {}
        for key in repeats[0]:
            values = torch.tensor([r[key] for r in repeats], dtype=torch.float64)
            out[key] = float(values.mean())
            if key.endswith("_rel"):
                out[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        return out

    def evaluate(
        self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator
    ) -> dict[str, float]:
        """nll (nats/symbol), bpc (= nll / ln 2), both with the state reset at every sequence; nll_image
        (nats per image, sequential images); with algo.eval_stream, nll_stream / bpc_stream (state carried
        across the split's sequences); with `full`, also early/late_drift and the hidden-state distances of
        Fig 2.3 (`hidden_distances`)."""
        from raygen.metrics.sequence import bits_per_char

        nll = self.nll(data)
        out = {"nll": nll, "bpc": float(bits_per_char(nll))}
        if self.image_shape is not None:
            out["nll_image"] = nll * self.seq_len  # Table 2.1 reports nats per image
        if self.cfg.eval_stream:
            stream = self.stream_nll(data)
            out.update(nll_stream=stream, bpc_stream=float(bits_per_char(stream)))
        if full:
            out.update(self.drift(data, generator))
            out.update(self.hidden_distances(data, generator))
        return out

    # ------------------------------------------------------------------ artifacts
    def decode(self, symbols: torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in symbols)

    @torch.no_grad()
    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        from raygen.plots import image_grid_png

        n = self.run_config.eval.sample_count
        samples = self.sample(n, generator=generator).reshape(n, self.seq_len)
        arts = []
        if self.image_shape is not None:
            pixels = samples.float() / (len(self.vocab) - 1)  # symbol index → intensity (binary: 0/1)
            pictures = pixels.reshape(n, *self.image_shape)
            arts.append(
                Artifact(
                    "samples.png", "image", image_grid_png(pictures, nrow=8, title=f"{self.name} samples")
                )
            )
        else:
            # One "# sample" header per sample: texts may contain newlines (PTB's line ends are symbols).
            lines = [f"# {n} free-running samples of length {self.seq_len} ({self.name})"]
            for i, s in enumerate(samples):
                lines += [f"# sample {i}", self.decode(s)]
            if self.cfg.long_samples:
                length = self.cfg.generate_factor * self.seq_len
                lines.append(
                    f"# {self.cfg.long_samples} samples of length {length} (train short, generate long)"
                )
                long = self.sample(self.cfg.long_samples, generator=generator, length=length)
                for i, s in enumerate(long):
                    lines += [f"# long sample {i}", self.decode(s)]
            arts.append(Artifact("samples.txt", "text", ("\n".join(lines) + "\n").encode()))
        teacher, free = self.hidden_clouds(dataset.splits["test"].to(self.device), generator)
        arts.append(
            Artifact(
                "tsne.png",
                "image",
                tsne_png(teacher, free, seed=self.run_config.seed, step=self.cfg.hidden_step or self.seq_len),
            )
        )
        return arts


def tsne_png(teacher: torch.Tensor, free: torch.Tensor, *, seed: int, step: int) -> bytes:
    """T-SNE of both hidden-state clouds in one embedding (Fig 2.3): grey = teacher forced, red = free running."""
    from sklearn.manifold import TSNE

    from raygen.plots import points_png

    both = torch.cat([teacher, free]).double().numpy()
    perplexity = float(min(30.0, max(2.0, (len(both) - 1) / 3)))
    # exact: O(N²) but for a few hundred points faster and steadier than Barnes-Hut's OpenMP loop
    xy = TSNE(
        2, perplexity=perplexity, init="pca", method="exact", max_iter=500, random_state=seed
    ).fit_transform(both)
    return points_png(
        xy[len(teacher) :],
        xy[: len(teacher)],
        title=f"hidden states at t={step}: data=teacher forced, samples=free running",
    )


def _bpc(nll: float) -> float:
    from raygen.metrics.sequence import bits_per_char

    return float(bits_per_char(nll))


class TeacherForcing(SequenceModel):
    """Teacher forcing (Williams & Zipser 1989): the baseline of every thesis experiment (eq 2.2)."""

    name = "teacher"
    Config = TeacherForcingConfig


# ------------------------------------------------------------------------------------------------ scheduled sampling


class ScheduledSampling(SequenceModel):
    """Scheduled sampling (Bengio et al. 2015): per input symbol, feed the ground truth with probability
    ε_i (training update i) and the model's own sample otherwise; targets stay the data. No gradient goes
    through the sampling decisions or the samples, as in Bengio et al."""

    name = "scheduled"
    Config = ScheduledSamplingConfig

    def truth_prob(self, i: int) -> float:
        """ε_i, the probability of feeding the ground truth at update i (one place dispatches the enum)."""
        c = self.cfg
        if c.schedule == "linear":
            return max(c.min_truth_prob, min(1.0, c.linear_start - c.linear_slope * i))
        if c.schedule == "exponential":
            return c.exponential_base**i
        if c.schedule == "inverse_sigmoid":
            k = c.inverse_sigmoid_k
            return k / (k + math.exp(min(i / k, 700.0)))  # 700: exp overflows float64 beyond ~709
        raise NotImplementedError(c.schedule)

    def training_logits(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        eps = self.truth_prob(self.updates)
        feed_truth = torch.rand(y.shape, device=y.device) < eps  # (B, T): per-symbol coin
        out = self.generator.free_running(y.shape[0], y.shape[1], truth=y, feed_truth=feed_truth)
        return out.logits, {"truth_prob": eps}


# ------------------------------------------------------------------------------------------------ professor forcing


class ProfessorForcing(SequenceModel):
    """Professor Forcing: make free-running behaviour indistinguishable from teacher-forced behaviour.

    Per step: one teacher-forced and one free-running run of the generator on N sequences each, and one
    forward of the discriminator D over each behaviour sequence B (nets/rnn.py). Two optimizers, two
    backward passes over that one graph, each restricted to its own parameters: C_d reaches D's parameters
    and stops at D's inputs (as if they were detached); the generator's adversarial terms pass through D
    without touching D's parameters. So no gradient crosses between them (the best-known port mixed them).
    """

    name = "professor"
    Config = ProfessorForcingConfig
    metric_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": (*SequenceModel.metric_names["train"], "c_d", "c_f", "c_t", "disc_accuracy*", "gate_*"),
        "quick": (*SequenceModel.metric_names["quick"], "disc_accuracy"),
        "full": (*SequenceModel.metric_names["full"], "disc_accuracy"),
    }

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        self.discriminator = build_discriminator(
            self.cfg.discriminator,
            self.generator.behaviour_size,
            seq_len=self.seq_len,
            image_shape=self.image_shape,
        )
        # Gate state, updated from reduced accuracies only, so it is identical on every worker; buffers, so
        # checkpoints carry it. EMA (moving_average) starts at chance; the window holds the last
        # gate_window accuracies (slot i % gate_window), accuracy_seen counts the filled slots' writes.
        self.register_buffer("accuracy_ema", torch.tensor(0.5, dtype=torch.float64))
        self.register_buffer("accuracy_window", torch.zeros(self.cfg.gate_window, dtype=torch.float64))
        self.register_buffer("accuracy_seen", torch.tensor(0, dtype=torch.int64))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c, train = self.cfg, self.run_config.train
        optimizers = {
            "generator": self.adam(self.generator.parameters()),
            "discriminator": self.adam(
                self.discriminator.parameters(),
                lr=train.lr * c.disc_lr_scale,
                betas=(c.disc_beta1, train.betas[1]),
            ),
        }
        if c.adversarial_update == "separate":  # same parameters, its own moment estimates (LM_GANS)
            optimizers["adversarial"] = self.adam(self.generator.parameters(), lr=train.lr * c.adversarial_lr_scale)
        return optimizers

    def smoothed_accuracy(self, accuracy: float) -> float:
        """Record this minibatch's (reduced) accuracy; return the mean of the last gate_window ones (of all
        so far while fewer have been seen)."""
        size = self.cfg.gate_window
        self.accuracy_window[int(self.accuracy_seen) % size] = accuracy
        self.accuracy_seen += 1
        return float(self.accuracy_window[: min(int(self.accuracy_seen), size)].mean())

    def gates(self, accuracy: float) -> tuple[bool, bool]:
        """(generator receives the adversarial gradient, discriminator is updated) from the accuracy
        already reduced across workers, so every worker takes the same branch."""
        c = self.cfg
        if c.gate == "window":  # §2.4.1's thresholds on a smoothed accuracy (issue 8: one batch is noisy)
            smoothed = self.smoothed_accuracy(accuracy)
            return smoothed > c.gate_generator, smoothed <= c.gate_discriminator
        if c.gate == "accuracy":  # §2.4.1: "greater than 75%" / "greater than 99%, we do not update"
            return accuracy > c.gate_generator, accuracy <= c.gate_discriminator
        if c.gate == "moving_average":  # original code: the generator trains alone while the EMA is high
            self.accuracy_ema.mul_(c.ema_decay).add_((1 - c.ema_decay) * accuracy)
            return True, float(self.accuracy_ema) <= c.ema_threshold
        raise NotImplementedError(c.gate)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        c = self.cfg
        if self.updates % c.adversarial_every:  # not an adversarial minibatch: plain teacher forcing
            return super().train_step(batch)
        y = batch.long()
        n, length = y.shape
        G, D = self.generator, self.discriminator
        opts = self.optimizers()
        separate = c.adversarial_update == "separate"
        if separate:
            # LM_GANS' order: the NLL step first (teacher forcing's own step, fused kernel), then the
            # free-running batch, D's teacher-forced input and the adversarial step at the updated parameters.
            logits, _ = self.training_logits(y)
            nll, nll_value = self.nll_objective(logits, y)
            self.update(opts["generator"], nll, params=G.parameters())
            with torch.set_grad_enabled(c.teacher_cost):  # only C_t needs a graph through this run
                teacher = G.teacher_forced(y, pre_tanh=True)
        else:
            teacher = G.teacher_forced(y, pre_tanh=True)  # one run: NLL and D's teacher-forced input
            nll, nll_value = self.nll_objective(teacher.logits, y)  # eq 2.2, normalised per algo.normalization
        free = G.free_running(n, length)  # samples from the model's own distribution, temperature 1

        # One discriminator forward per behaviour (N, T, F), its graph shared by both updates below. Without
        # C_t nothing goes back into the generator through the teacher-forced half, so it enters detached.
        b_teacher, b_free = G.behaviour(teacher), G.behaviour(free)
        if not c.teacher_cost:
            b_teacher = b_teacher.detach()
        d_teacher, d_free = D(b_teacher), D(b_free)
        c_d = _bce(d_teacher, 1.0) + _bce(d_free, 0.0)  # eq 2.1
        c_f, c_t = _bce(d_free, 1.0), _bce(d_teacher, 0.0)  # eqs 2.3, 2.4: one term per sequence
        local_accuracy = self._accuracy(d_teacher.detach(), d_free.detach())
        accuracy = float(self.ctx.all_reduce_mean(local_accuracy))
        generator_open, discriminator_open = self.gates(accuracy)

        # Two updates on the shared graph, each backward pass restricted to its own parameters (`update`
        # passes them as the backward's inputs): the generator's adversarial terms reach only the generator
        # (through D, without computing D's parameter gradients), C_d only the discriminator (its inputs act
        # as detached: the pass stops at D's input). Both gradients are taken at the parameters the step
        # started from, as with separate forwards: the generator updates first (keeping the graph when D
        # updates too), and its step changes no tensor that D's backward pass reads; the discriminator's
        # step comes last because the generator's pass reads D's weights.
        adversarial = c_f + c_t if c.teacher_cost else c_f
        loss = nll
        if generator_open:  # §2.4.1: the adversarial gradient only while the discriminator is accurate
            loss = nll + c.adversarial_weight * adversarial
        if not separate:  # sum: NLL + C_f [+ C_t] in one step of the generator's Adam
            self.update(opts["generator"], loss, params=G.parameters(), retain_graph=discriminator_open)
        elif generator_open:  # separate: C_f [+ C_t] alone, the adversarial Adam; the NLL step counted
            self.update(
                opts["adversarial"],
                c.adversarial_weight * adversarial,
                params=G.parameters(),
                retain_graph=discriminator_open,
                counts=False,
            )
        # Discriminator updates do not count toward the budget (train.steps counts generator updates).
        if discriminator_open:
            self.update(opts["discriminator"], c_d, params=D.parameters(), counts=False)

        metrics = {
            "nll": nll_value,
            "bpc": _bpc(nll_value),
            "loss_generator": float(loss.detach()),
            "c_d": float(c_d.detach()),
            "c_f": float(c_f.detach()),
            "c_t": float(c_t.detach()),
            "disc_accuracy": accuracy,
            "gate_generator_open": float(generator_open),
            "gate_discriminator_open": float(discriminator_open),
        }
        if self.cfg.gate == "moving_average":
            metrics["disc_accuracy_ema"] = float(self.accuracy_ema)
        if self.cfg.gate == "window":
            metrics["disc_accuracy_smoothed"] = float(
                self.accuracy_window[: min(int(self.accuracy_seen), self.cfg.gate_window)].mean()
            )
        return metrics

    @staticmethod
    def _accuracy(d_teacher: torch.Tensor, d_free: torch.Tensor) -> torch.Tensor:
        """Balanced accuracy of the N + N decisions: teacher forced iff the logit > 0."""
        return 0.5 * ((d_teacher > 0).double().mean() + (d_free < 0).double().mean())

    @torch.no_grad()
    def evaluate(
        self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator
    ) -> dict[str, float]:
        """The shared metrics plus `disc_accuracy` on held-out data: the discriminator on the teacher-forced
        behaviour of up to eval_batch sequences of `data` and on as many free-running sequences."""
        out = super().evaluate(data, split, full=full, generator=generator)
        y = data[: self.cfg.eval_batch].long()
        G = self.generator
        teacher = G.behaviour(G.teacher_forced(y))
        free = G.behaviour(G.free_running(len(y), y.shape[1], sampler=default_sampler(generator)))
        d_teacher, d_free = self.discriminator(torch.cat([teacher, free])).split(len(y))
        out["disc_accuracy"] = float(self._accuracy(d_teacher, d_free))
        return out


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """−log D (target 1) or −log(1 − D) (target 0), D = sigmoid(logits (N, K)): one term per sequence (the
    mean over its K outputs: K = 1 for a per-sequence discriminator, T for a per-step one), averaged over
    the N sequences. All sequences have K outputs, so this is the mean over every output."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
