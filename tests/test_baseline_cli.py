"""Every baseline trains through the real loop on `digits` and its final evaluation reports its numbers
(what `raygen train ALGO --dataset digits --steps N` does), at a tiny size."""

import math

import pytest

import raygen

TINY = {"eval.parzen_samples": 60, "eval.parzen_valid_examples": 30, "eval.test_examples": 20, "eval.splits": ["test"],
        "eval.repeats": 1, "eval.likelihood_samples": 3, "eval.sample_count": 4, "train.batch_size": 20,
        "train.eval_every": 2, "train.eval_examples": 20, "train.checkpoint_every": 100, "train.progress": False}
CASES = {
    "vae": ({"algo.decoder_hidden": [8], "algo.encoder_hidden": [8], "algo.latent": 2, "algo.ais_examples": 2,
             "algo.ais.steps": 3}, ("test/lower_bound", "test/importance", "test/ais", "test/ais_examples_importance", "test/parzen_ll")),
    "gan": ({"algo.decoder_hidden": [8], "algo.discriminator_hidden": [8], "algo.latent": 2, "algo.ais_examples": 2,
             "algo.ais.steps": 3, "algo.std_selection_steps": 2, "algo.std_selection_examples": 2},
            ("test/mmd", "test/ais", "test/observation_std", "test/parzen_ll")),
    "gmmn": ({"algo.decoder_hidden": [8], "algo.latent": 2, "algo.autoencoder": True, "algo.ae_steps": 2,
              "algo.ae_hidden": [8], "algo.code": 4}, ("test/mmd", "test/parzen_ll")),
    "gsn": ({"algo.hidden": [8], "algo.sampling_steps": 3, "algo.walkback_steps": 2}, ("test/loss", "test/parzen_ll")),
    "net": ({"algo.hidden": [8], "algo.steps": 4}, ("test/lower_bound", "test/bits_per_dim", "test/parzen_ll")),
    "ddpm": ({"algo.hidden": [8], "algo.steps": 4}, ("test/lower_bound", "test/bits_per_dim", "test/parzen_ll")),
}


@pytest.mark.parametrize("algorithm", list(CASES))
def test_baseline_trains_on_digits_and_reports_its_evaluation(algorithm, tmp_path):
    overrides, keys = CASES[algorithm]
    run = raygen.train(algorithm, "digits", steps=4, results=str(tmp_path), overrides={**TINY, **overrides})
    final = run.final
    for key in keys:
        assert key in final and math.isfinite(final[key]), (key, sorted(final))
