"""The rule benchmarks/relu_leak.py sets the default leak by, and its dead-unit count, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import relu_leak
from kdhw.train.student import build_student


def _cells(val_by_leak: dict[float, float]) -> list[dict]:
    return [{"set": "s", "student": "m", "arm": arm, "leak": k, "val": v}
            for arm in ("scratch", "fm") for k, v in val_by_leak.items()]


def test_the_rule_takes_the_best_mean_and_gives_near_ties_to_the_smaller_leak() -> None:
    best = {0.0: 0.80, 0.01: 0.85, 0.05: 0.90, 0.2: 0.88}
    assert relu_leak.choose(_cells(best))[0] == 0.05
    near = {0.0: 0.80, 0.01: 0.899, 0.05: 0.90, 0.2: 0.88}  # 0.1 points below the best: within tolerance
    assert relu_leak.choose(_cells(near))[0] == 0.01


def test_dead_units_counts_units_zero_on_every_row() -> None:
    torch.manual_seed(0)
    m = build_student({"input": {"bits": 8, "int_bits": 1, "signed": False},
                       "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]},
                      (64,), 10)
    dense = m.layers[m.names.index("dense1")]
    with torch.no_grad():
        dense.weight[:3] = -dense.weight[:3].abs()  # three units negative on every non-negative input
        dense.bias[:3] = -1.0
        dense.weight[3:] = dense.weight[3:].abs()
        dense.bias[3:] = 0.5
    x = np.random.default_rng(0).random((50, 64))
    assert relu_leak.dead_units(m, x) == (3, 8)
