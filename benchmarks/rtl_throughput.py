"""Figures for the RTL stage: conversion time, latency, da4ml's size estimate, emulator and simulator speed.

For each of the three test students (trained for a few epochs, as in ``tests/conftest.py``) this converts
the QONNX model to Verilog, checks the emulator against the QONNX reference on 10,000 off-grid vectors,
and runs the cocotb bench on Icarus (and Verilator with ``--verilator``) on 1,000 vectors, printing one
table row per student.  Run from the repository root:

    python -m benchmarks.rtl_throughput [--verilator] [--rows 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT


def _conftest() -> Any:
    """The test suite's ``tests/conftest.py`` (its student specs and ``trained_student``), loaded from its file:
    tests/ is not a package, and this keeps it off sys.path."""
    spec = importlib.util.spec_from_file_location("kdhw_tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verilator", action="store_true", help="also simulate with Verilator (30 s builds)")
    ap.add_argument("--rows", type=int, default=1000, help="vectors per simulation")
    args = ap.parse_args()

    from kdhw.hw.export import export_qonnx, load_qonnx, reference
    from kdhw.hw.rtl import emulate, load_meta, qonnx_to_rtl
    from kdhw.hw.rtl._formats import FixedFormat
    from kdhw.train.distill import student_input
    from kdhw.verify.sim.runner import simulate_rtl

    conftest = _conftest()
    sims = ["icarus"] + (["verilator"] if args.verilator else [])
    print("| student | inputs | latency (cycles) | measured | da4ml LUT | FF | adders | convert s | "
          "emulate 10k s | exact 10k | " + " | ".join(f"{s} {args.rows} rows s (exact)" for s in sims) + " |")
    print("|" + "---|" * (10 + len(sims)))
    with tempfile.TemporaryDirectory() as td:
        for kind in ("mlp", "conv1d", "conv2d"):
            model, data, spec = conftest.trained_student(kind)
            shape = student_input(data.x_test, spec).shape[1:]
            onnx_path = export_qonnx(model, shape, Path(td) / f"{kind}.onnx")
            t = time.perf_counter()
            qonnx_to_rtl(onnx_path, Path(td) / kind)
            t_conv = time.perf_counter() - t
            meta = load_meta(Path(td) / kind)
            fmt = FixedFormat.from_json(meta["input_format"])
            lo, hi = fmt.lo * fmt.scale, fmt.hi * fmt.scale
            rng = np.random.default_rng(0)
            x = rng.uniform(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), size=(10_000, *shape)).astype(np.float32)
            mw = load_qonnx(onnx_path)
            ref = reference(mw, x)
            t = time.perf_counter()
            y = emulate(Path(td) / kind, x)
            t_emu = time.perf_counter() - t
            cells = []
            measured = set()
            for sim in sims:
                t = time.perf_counter()
                r = simulate_rtl(Path(td) / kind, x[:args.rows], ref[:args.rows], simulator=sim,
                                 work_dir=Path(td) / f"{kind}_{sim}")
                cells.append(f"{time.perf_counter() - t:.1f} ({r['exact_rows']}/{r['rows']})")
                measured.add(r["latency_measured"])
            est = meta["da4ml_estimate"]
            print(f"| {kind} | {meta['n_inputs']}x{fmt.bits}b | {meta['latency_cycles']} | "
                  f"{','.join(map(str, sorted(measured)))} | {est['lut']} | {est['ff']} | {est['adders']} | "
                  f"{t_conv:.2f} | {t_emu:.2f} | {int(np.all(y == ref, axis=1).sum())} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
