"""Teacher architectures, the shape check, and a save/load round trip without unpickling objects."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.train.loop import predict_logits
from kdhw.train.teacher import build_teacher, load_teacher, save_teacher


@pytest.mark.parametrize("arch, shape", [("mlp", (1, 8, 8)), ("cnn1d", (1, 40)), ("cnn2d", (1, 8, 8))])
def test_architectures_produce_logits(arch: str, shape: tuple) -> None:
    cfg = validate({"teacher": {"arch": arch}}).teacher
    m = build_teacher(cfg, shape, 10)
    assert m(torch.rand(3, *shape)).shape == (3, 10)


def test_arch_that_does_not_fit_the_data_is_refused() -> None:
    cfg = validate({"teacher": {"arch": "cnn2d"}}).teacher
    with pytest.raises(InputError, match=r"teacher.arch = cnn2d does not fit inputs of shape \(1, 40\); use cnn1d"):
        build_teacher(cfg, (1, 40), 10)


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = validate({"teacher": {"arch": "cnn1d", "channels": [4]}}).teacher
    m = build_teacher(cfg, (1, 40), 5).eval()
    save_teacher(m, cfg, (1, 40), 5, tmp_path / "t.pt")
    m2, cfg2 = load_teacher(tmp_path / "t.pt")
    x = np.random.default_rng(0).normal(size=(7, 1, 40)).astype(np.float32)
    assert np.array_equal(predict_logits(m, x), predict_logits(m2, x)) and cfg2["arch"] == "cnn1d"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a kdhw teacher checkpoint"):
        load_teacher(tmp_path / "junk.pt")
