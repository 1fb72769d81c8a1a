"""What both cocotb regressions build their designs from: a randomly initialised student whose activation
ranges were set by a few training-mode batches; the off-grid input rows come from
``kdhw.rtl.edge_vectors``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdhw.export import export_qonnx


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
