"""celeba applies data.max_train before decoding: the training images past the cap are never read (a quick run
on a few faces decoded all 162 770 first). Images past the cap are made unreadable here, so reading them fails."""

from __future__ import annotations

import numpy as np
import pytest

from raygen.data import DataConfig, DataError, load_dataset
from tests.test_data_torchvision_celeba import NAMES, make_celeba, vw_crop


def test_max_train_caps_celeba_before_any_image_past_it_is_read(tmp_path):
    partition = {n: (0 if i < 5 else 1 if i < 7 else 2) for i, n in enumerate(NAMES)}
    decoded = make_celeba(tmp_path, partition)
    for name in NAMES[2:5]:  # training images 3..5: past a cap of 2
        (tmp_path / "celeba" / "img_align_celeba" / name).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=NAMES[2]):
        load_dataset("celeba", DataConfig(root=str(tmp_path)))  # without the cap they are read, and fail

    ds = load_dataset("celeba", DataConfig(root=str(tmp_path), max_train=2))
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 2, "valid": 2, "test": 3}
    np.testing.assert_allclose(ds.splits["train"].numpy(), np.stack([vw_crop(decoded[n]) for n in NAMES[:2]]),
                               atol=1e-6)  # the first two, as the cap of every other dataset keeps
    assert ds.meta["max_train"] == 2
