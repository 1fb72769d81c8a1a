"""What both cocotb regressions build their designs from: a randomly initialised student whose activation
ranges were set by a few training-mode batches, and off-grid input vectors over (and past) the input range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdhw.export import export_qonnx
from kdhw.rtl._formats import FixedFormat


def random_student_qonnx(spec: dict[str, Any], shape: tuple[int, ...], seed: int, path: Path) -> Path:
    """A w4a4 student of ``spec`` (untrained weights; quantizer ranges from 5 random batches), as QONNX."""
    import torch

    from kdhw.student import build_student

    torch.manual_seed(seed)
    model = build_student({**spec, "weight_bits": 4, "act_bits": 4}, shape, 10)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(64, *shape) * 2 - (1 if spec["input"]["signed"] else 0))
    return export_qonnx(model.eval(), shape, path)


def off_grid_vectors(meta: dict[str, Any], n: int, seed: int) -> np.ndarray:
    """Off-grid floats over the input range and 25% past both ends, a quarter of them exact ties."""
    rng = np.random.default_rng(seed)
    fmt = FixedFormat.from_json(meta["input_format"])
    lo, hi = fmt.lo * fmt.scale, fmt.hi * fmt.scale
    x = rng.uniform(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), size=(n, *meta["input_shape"]))
    ties = (rng.integers(fmt.lo, fmt.hi, size=x.shape) + 0.5) * fmt.scale
    return np.where(rng.random(x.shape) < 0.25, ties, x).astype(np.float32)
