"""The reporter that turns the loop's reports into the Parquet store (used by every runner on rank 0)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch

from raygen.algorithms import Artifact
from raygen.engine.loggers import Loggers, open_loggers
from raygen.results import RunRecorder

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


class StoreReporter:
    """`report(step, metrics, checkpoint=, artifacts=)` → metrics rows, checkpoint file, artifact files."""

    def __init__(self, recorder: RunRecorder, loggers: Loggers | None = None) -> None:
        self.recorder = recorder
        # TensorBoard / MLflow / W&B mirrors switched on by the run's `log` config, fed after the store.
        self.loggers = loggers if loggers is not None else open_loggers(recorder.config, recorder.run_id,
                                                                          recorder.root)

    def __call__(
        self,
        step: int,
        metrics: dict[str, float],
        *,
        checkpoint: dict[str, Any] | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> None:
        self.recorder.log(step, metrics)
        self.recorder.flush()  # before the checkpoint: a run killed in between resumes from an earlier one
        if checkpoint is not None:
            self.recorder.save_file(step, CHECKPOINT_NAME, "checkpoint", checkpoint_bytes(checkpoint))
        for artifact in artifacts:
            self.recorder.save_file(step, artifact.name, artifact.kind, artifact.data)
        self.recorder.flush()
        if self.loggers:
            self.loggers(step, metrics, artifacts)

    def close(self, ok: bool = True) -> None:
        """End the mirrors' runs (MLflow's status, W&B's finish); the store needs no closing."""
        self.loggers.close(ok)
