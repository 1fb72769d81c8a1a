"""Analytic estimate (kdhw.estimate) vs yosys synth_xilinx counts of kdhw's RTL, with sMAPE.

Students are trained for 3 epochs (real brevitas QAT, so weights have trained digit statistics), exported,
turned into RTL by `kdhw.rtl`, and synthesized for xc7 by yosys.  `--calibrate` fits the formula's
constants (least squares) on the CALIBRATION set; the table reports the disjoint EVALUATION set, so the
sMAPE is out of sample.  da4ml's own estimate (from rtl.json) is shown beside it.

    .venv/bin/python benchmarks/estimate_vs_yosys.py [--calibrate]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def mlp(h: list[int], wb: int, ab: int) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for u in h:
        layers += [{"type": "dense", "units": u}, {"type": "relu"}]
    return {"data": "digits", "student": {"weight_bits": wb, "act_bits": ab, "layers": layers + [{"type": "dense", "units": 10}]}}


def conv2d(f: int, wb: int) -> dict[str, Any]:
    return {"data": "digits", "student": {"weight_bits": wb, "layers": [
        {"type": "conv2d", "filters": f, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
        {"type": "dense", "units": 10}]}}


def conv1d(f: int, wb: int) -> dict[str, Any]:
    return {"data": "mnist1d", "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "weight_bits": wb,
                                           "layers": [{"type": "conv1d", "filters": f, "kernel": 3}, {"type": "relu"},
                                                      {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]}}


CALIBRATION = {"mlp 64-12-10 w4a4": mlp([12], 4, 4), "mlp 64-24-10 w3a4": mlp([24], 3, 4),
               "conv2d 4f w4": conv2d(4, 4), "conv1d 3f w4": conv1d(3, 4)}
EVALUATION = {"mlp 64-8-10 w4a4": mlp([8], 4, 4), "mlp 64-16-10 w4a4": mlp([16], 4, 4),
              "mlp 64-32-10 w2a4": mlp([32], 2, 4), "mlp 64-16-16-10 w4a3": mlp([16, 16], 4, 3),
              "conv2d 6f w3": conv2d(6, 3), "conv1d 4f w4": conv1d(4, 4)}


def measure(name: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from kdhw.boards import load_board
    from kdhw.config import validate
    from kdhw.data import load_dataset
    from kdhw.distill import student_input, train_arm
    from kdhw.estimate import estimate, layer_costs
    from kdhw.export import export_qonnx
    from kdhw.rtl import qonnx_to_rtl
    from kdhw.synth import synthesize

    cfg = validate({"data": {"dataset": spec["data"], "mnist1d_samples": 1200}, "student": spec["student"],
                    "distill": {"epochs": 3, "method": "none"}})
    data = load_dataset(cfg.data)
    arm = train_arm("s", cfg.student, cfg.distill, data, None, "none", progress=False)
    d = work / name.replace(" ", "_")
    onnx = export_qonnx(arm.model, student_input(data.x_test, cfg.student).shape[1:], d.with_suffix(".onnx"))
    meta = qonnx_to_rtl(onnx, d / "rtl")
    syn = synthesize(d / "rtl", load_board("pynq-z2"), d / "syn")
    est = estimate(onnx)
    rows = layer_costs(onnx)
    return {"name": name, "yosys_lut": syn["lut"], "yosys_ff": syn["ff"], "est_lut": est["lut"], "est_ff": est["ff"],
            "da4ml_lut": meta["da4ml_estimate"]["lut"], "da4ml_ff": meta["da4ml_estimate"]["ff"],
            "lin_term": sum(r["adders"] * r["width"] for r in rows if "adders" in r),
            "cmp_term": sum(r.get("cmp_bits", 0) for r in rows),
            "ff_term": sum(r["values_out"] * r["width"] for r in rows if "adders" in r),
            "in_bits": meta["input_bits_total"]}


def smape(a: list[float], b: list[float]) -> float:
    return 100.0 * float(np.mean([2 * abs(x - y) / (abs(x) + abs(y)) for x, y in zip(a, b)]))


def main() -> None:
    from kdhw.pipeline import set_torch_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--calibrate", action="store_true")
    a = ap.parse_args()
    set_torch_threads()
    with tempfile.TemporaryDirectory() as td:
        if a.calibrate:
            rs = [measure(n, s, Path(td)) for n, s in CALIBRATION.items()]
            A = np.array([[r["lin_term"], r["cmp_term"]] for r in rs], dtype=float)
            k_lut, k_cmp = np.linalg.lstsq(A, np.array([r["yosys_lut"] for r in rs], float), rcond=None)[0]
            k_ff = np.linalg.lstsq(np.array([[r["ff_term"]] for r in rs], float),
                                   np.array([r["yosys_ff"] - r["in_bits"] for r in rs], float), rcond=None)[0][0]
            print(json.dumps(rs, indent=1))
            print(f"fitted: K_LUT = {k_lut:.3f}, K_CMP = {k_cmp:.3f}, K_FF = {k_ff:.3f}")
            return
        rs = []
        for n, s in EVALUATION.items():
            rs.append(measure(n, s, Path(td)))
            print(f"  measured {n}", flush=True)
    print("\n| student (evaluation set) | yosys LUT | estimate LUT | da4ml LUT | yosys FF | estimate FF | da4ml FF |")
    print("|---|---|---|---|---|---|---|")
    for r in rs:
        print(f"| {r['name']} | {r['yosys_lut']} | {r['est_lut']} | {r['da4ml_lut']} | {r['yosys_ff']} | "
              f"{r['est_ff']} | {r['da4ml_ff']} |")
    y_l, y_f = [r["yosys_lut"] for r in rs], [r["yosys_ff"] for r in rs]
    print(f"\nsMAPE vs yosys: analytic estimate LUT {smape([r['est_lut'] for r in rs], y_l):.1f} %, "
          f"FF {smape([r['est_ff'] for r in rs], y_f):.1f} %; da4ml's own estimate LUT "
          f"{smape([r['da4ml_lut'] for r in rs], y_l):.1f} %, FF {smape([r['da4ml_ff'] for r in rs], y_f):.1f} %")
    out = Path(__file__).resolve().parent / "results" / "estimate_vs_yosys.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rs, indent=2))


if __name__ == "__main__":
    main()
