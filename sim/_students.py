"""What both cocotb regressions share: the designs they build (a randomly initialised student whose activation
ranges were set by a few training-mode batches; the off-grid input rows come from
``kdhw.hw.rtl.edge_vectors``), and the mutation that proves a wrong constant in the Verilog is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdhw.hw.export import export_qonnx


def random_student_qonnx(spec: dict[str, Any], shape: tuple[int, ...], seed: int, path: Path) -> Path:
    """A w4a4 student of ``spec`` (untrained weights; quantizer ranges from 5 random batches), as QONNX."""
    import torch

    from kdhw.train.student import build_student

    torch.manual_seed(seed)
    model = build_student({**spec, "weight_bits": 4, "act_bits": 4}, shape, 10)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(64, *shape) * 2 - (1 if spec["input"]["signed"] else 0))
    return export_qonnx(model.eval(), shape, path)


def flip_observable_constant(pipe: Any, outputs: Any, stage_file: Any, min_share: float = 0.05) -> str:
    """Flip the top bit of one adder constant (a bias or rounding offset) of da4ml pipeline ``pipe`` in its
    Verilog text, and say which.

    Not every constant matters for every input (a saturation threshold that is never reached does not), so
    each flip is first tried on a copy of the pipeline: ``outputs(mutated_pipe)`` gives the outputs the
    mutant would produce, and the first constant whose flip changes at least ``min_share`` of the rows is
    the one edited, in the file ``stage_file(stage_index)`` names.
    """
    import numpy as np
    from da4ml.types import Pipeline

    base = outputs(pipe)
    for s, sol in enumerate(pipe.solutions):
        for i, op in enumerate(sol.ops):
            if op.opcode != 4 or abs(op.data) < 2:
                continue
            mag = abs(op.data)
            new_mag = mag ^ (1 << (mag.bit_length() - 1))
            ops = list(sol.ops)
            ops[i] = op._replace(data=new_mag if op.data > 0 else -new_mag)
            stages = list(pipe.solutions)
            stages[s] = sol._replace(ops=ops)
            if np.mean(np.any(outputs(Pipeline(tuple(stages))) != base, axis=1)) < min_share:
                continue
            f = stage_file(s)
            old_lit = f"{mag.bit_length()}'b{mag:b}"
            new_lit = f"{mag.bit_length()}'b{new_mag:0{mag.bit_length()}b}"
            lines = f.read_text().split("\n")
            hits = [k for k, line in enumerate(lines) if f" op_{i} (" in line and old_lit in line]
            assert len(hits) == 1, f"op_{i} with {old_lit} not found once in {f.name}"
            lines[hits[0]] = lines[hits[0]].replace(old_lit, new_lit)
            f.write_text("\n".join(lines))
            return f"{f.name} op_{i}: {old_lit} -> {new_lit}"
    raise AssertionError("no adder constant whose flip changes the outputs")
