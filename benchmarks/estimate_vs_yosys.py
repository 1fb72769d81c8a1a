"""Analytic estimate (kdhw.estimate) vs yosys synth_xilinx counts of kdhw's RTL, with sMAPE.

Students are trained for 3 epochs (real brevitas QAT, so the weights have trained digit statistics),
exported, turned into RTL by ``kdhw.rtl`` and synthesized for xc7 (pynq-z2) by yosys.  Two disjoint sets of
architectures are used: ``--calibrate`` fits the formula's constants (least squares) on the CALIBRATION set
and prints them for ``kdhw/estimate.py``; the default run reports the EVALUATION set with the constants
currently in ``kdhw/estimate.py``, so its sMAPE is out of sample.  da4ml's own estimate (rtl.json) is shown
beside it.  Trained models, RTL and yosys counts are cached under ``--work`` so the formula can be revised
without re-synthesizing (delete the folder to measure afresh).

    .venv/bin/python benchmarks/estimate_vs_yosys.py --calibrate
    .venv/bin/python benchmarks/estimate_vs_yosys.py          # writes results/estimate_vs_yosys.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mlp(h: list[int], wb: int, ab: int, in_bits: int = 8) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for u in h:
        layers += [{"type": "dense", "units": u}, {"type": "relu"}]
    return {"data": "digits", "student": {"input": {"bits": in_bits, "int_bits": 1, "signed": False},
                                          "weight_bits": wb, "act_bits": ab,
                                          "layers": layers + [{"type": "dense", "units": 10}]}}


def conv2d(f: int, wb: int, ab: int = 4) -> dict[str, Any]:
    return {"data": "digits", "student": {"weight_bits": wb, "act_bits": ab, "layers": [
        {"type": "conv2d", "filters": f, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
        {"type": "dense", "units": 10}]}}


def conv1d(fs: list[int], wb: int, ab: int = 4) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for f in fs:
        layers += [{"type": "conv1d", "filters": f, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2}]
    return {"data": "mnist1d", "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "weight_bits": wb,
                                           "act_bits": ab, "layers": layers + [{"type": "dense", "units": 10}]}}


# Disjoint architectures: nothing in EVALUATION is in CALIBRATION.  CALIBRATION holds the 8 students the
# formula was first fitted on and the 9 it was first evaluated on (results/estimate_vs_yosys.v1.md: the FF
# term failed there and was revised), so EVALUATION is a fresh set that played no part in the formula.
CALIBRATION = {
    "mlp 64-12-10 w4a4": mlp([12], 4, 4),
    "mlp 64-24-10 w3a4": mlp([24], 3, 4),
    "mlp 64-6-10 w6a6": mlp([6], 6, 6),
    "mlp 64-20-12-10 w4a4 in6": mlp([20, 12], 4, 4, in_bits=6),
    "conv2d 4f w4": conv2d(4, 4),
    "conv2d 3f w5a5": conv2d(3, 5, 5),
    "conv1d 3f w4": conv1d([3], 4),
    "conv1d 6f w3": conv1d([6], 3),
    # first evaluation set (v1)
    "mlp 64-8-10 w4a4 (default)": mlp([8], 4, 4),
    "mlp 64-16-10 w4a4": mlp([16], 4, 4),
    "mlp 64-32-10 w2a4": mlp([32], 2, 4),
    "mlp 64-10-10 w5a5": mlp([10], 5, 5),
    "mlp 64-16-16-10 w4a3": mlp([16, 16], 4, 3),
    "mlp 64-12-10 w4a4 in6": mlp([12], 4, 4, in_bits=6),
    "conv2d 6f w3": conv2d(6, 3),
    "conv1d 4f w4": conv1d([4], 4),
    "conv1d 4f-8f w4": conv1d([4, 8], 4),
}
EVALUATION = {
    "mlp 64-20-10 w3a3": mlp([20], 3, 3),
    "mlp 64-40-10 w2a3": mlp([40], 2, 3),
    "mlp 64-14-10 w4a4 in5": mlp([14], 4, 4, in_bits=5),
    "mlp 64-24-12-10 w3a4": mlp([24, 12], 3, 4),
    "conv2d 5f w4": conv2d(5, 4),
    "conv2d 2f w6": conv2d(2, 6),
    "conv1d 5f w5": conv1d([5], 5),
    "conv1d 3f-6f w3": conv1d([3, 6], 3),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def build(name: str, spec: dict[str, Any], work: Path) -> Path:
    """Train, export, generate RTL and synthesize once; later runs reuse the cached folder."""
    d = work / slug(name)
    if (d / "syn.json").is_file():
        return d
    from kdhw.boards import load_board
    from kdhw.config import validate
    from kdhw.data import load_dataset
    from kdhw.distill import student_input, train_arm
    from kdhw.export import export_qonnx
    from kdhw.rtl import qonnx_to_rtl
    from kdhw.synth import synthesize

    cfg = validate({"data": {"dataset": spec["data"], "mnist1d_samples": 1200}, "student": spec["student"],
                    "distill": {"epochs": 3, "method": "none"}})
    data = load_dataset(cfg.data)
    arm = train_arm("s", cfg.student, cfg.distill, data, None, "none", progress=False)
    d.mkdir(parents=True, exist_ok=True)
    export_qonnx(arm.model, student_input(data.x_test, cfg.student).shape[1:], d / "model.onnx")
    qonnx_to_rtl(d / "model.onnx", d / "rtl")
    syn = synthesize(d / "rtl", load_board("pynq-z2"), d / "syn")
    if not syn.get("ok"):
        raise SystemExit(f"{name}: yosys failed: {syn.get('error')}")
    (d / "syn.json").write_text(json.dumps(syn, indent=1))
    return d


def measure(name: str, d: Path) -> dict[str, Any]:
    from kdhw.estimate import estimate, features

    syn = json.loads((d / "syn.json").read_text())
    meta = json.loads((d / "rtl" / "rtl.json").read_text())
    est = estimate(d / "model.onnx")
    return {"name": name, "yosys_lut": syn["lut"], "yosys_ff": syn["ff"], "yosys_carry4": syn["carry"],
            "est_lut": est["lut"], "est_ff": est["ff"],
            "da4ml_lut": meta["da4ml_estimate"]["lut"], "da4ml_ff": meta["da4ml_estimate"]["ff"],
            "latency_cycles": meta["latency_cycles"], "est_latency_cycles": est["latency_cycles"], "features": features(d / "model.onnx"),
            "yosys_seconds": round(syn["seconds"], 1)}


def smape(a: list[float], b: list[float]) -> float:
    """Symmetric mean absolute percentage error, 0..200 %."""
    return 100.0 * float(np.mean([2 * abs(x - y) / (abs(x) + abs(y)) for x, y in zip(a, b)]))


def fit(rs: list[dict[str, Any]], target: str, terms: tuple[str, ...], offset: str | None = None) -> dict[str, float]:
    """Least squares for target ~ offset + sum_k K_k * feature_k, minimising the relative error (each row
    weighted by 1/target), so small and large students count alike as they do in the sMAPE."""
    y = np.array([r[target] for r in rs], float)
    off = np.array([r["features"][offset] if offset else 0.0 for r in rs], float)
    a = np.array([[r["features"][t] for t in terms] for r in rs], float)
    k = np.linalg.lstsq(a / y[:, None], (y - off) / y, rcond=None)[0]
    return dict(zip(terms, (float(v) for v in k)))


def loo_smape(rs: list[dict[str, Any]], target: str, terms: tuple[str, ...], offset: str | None = None) -> float:
    """Leave-one-out sMAPE inside the calibration set: how well the form generalises before the evaluation."""
    pred = []
    for i, r in enumerate(rs):
        k = fit(rs[:i] + rs[i + 1:], target, terms, offset)
        pred.append((r["features"][offset] if offset else 0.0) + sum(k[t] * r["features"][t] for t in terms))
    return smape(pred, [r[target] for r in rs])


def table(rs: list[dict[str, Any]], title: str) -> str:
    lines = [f"| student ({title}) | yosys LUT | estimate LUT | da4ml LUT | yosys FF | estimate FF | da4ml FF |",
             "|---|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['name']} | {r['yosys_lut']:,} | {r['est_lut']:,} | {r['da4ml_lut']:,} | {r['yosys_ff']:,} | "
                     f"{r['est_ff']:,} | {r['da4ml_ff']:,} |")
    y_l, y_f = [r["yosys_lut"] for r in rs], [r["yosys_ff"] for r in rs]
    s = {"est_lut": smape([r["est_lut"] for r in rs], y_l), "est_ff": smape([r["est_ff"] for r in rs], y_f),
         "da4ml_lut": smape([r["da4ml_lut"] for r in rs], y_l), "da4ml_ff": smape([r["da4ml_ff"] for r in rs], y_f)}
    lines += ["", f"sMAPE vs yosys ({len(rs)} students): analytic estimate LUT {s['est_lut']:.1f} %, FF "
                  f"{s['est_ff']:.1f} %; da4ml's own estimate LUT {s['da4ml_lut']:.1f} %, FF {s['da4ml_ff']:.1f} %"]
    err = [abs(r["est_latency_cycles"] - r["latency_cycles"]) for r in rs]
    lines.append(f"latency estimate vs the generated RTL: exact for {err.count(0)} of {len(rs)} students, "
                 f"largest error {max(err)} cycle(s)")
    return "\n".join(lines)


def main() -> None:
    from kdhw import estimate as E
    from kdhw.pipeline import set_torch_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--calibrate", action="store_true", help="fit the constants on the calibration set")
    ap.add_argument("--work", default=str(ROOT / ".kdhw-cache" / "estimate_vs_yosys"))
    a = ap.parse_args()
    set_torch_threads()
    work = Path(a.work)
    designs = CALIBRATION if a.calibrate else EVALUATION
    t0 = time.perf_counter()
    rs = []
    for n, s in designs.items():
        rs.append(measure(n, build(n, s, work)))
        print(f"  measured {n}", flush=True)
    if a.calibrate:
        k_lut = fit(rs, "yosys_lut", E.LUT_TERMS)
        k_ff = fit(rs, "yosys_ff", E.FF_TERMS, offset="io_bits")
        text = (table(rs, "calibration set, in sample, with the constants now in kdhw/estimate.py")
                + f"\n\nfitted on {len(rs)} calibration students (paste into kdhw/estimate.py):\n"
                f"  K_DENSE = {k_lut['dense_adder_bits']:.3f}\n  K_CONV = {k_lut['conv_adder_bits']:.3f}\n"
                f"  K_REG = {k_ff['cut_bits']:.3f}\n"
                f"leave-one-out sMAPE inside the calibration set: LUT {loo_smape(rs, 'yosys_lut', E.LUT_TERMS):.1f} %, "
                f"FF {loo_smape(rs, 'yosys_ff', E.FF_TERMS, 'io_bits'):.1f} %")
        print("\n" + text)
        (ROOT / "benchmarks" / "results" / "estimate_vs_yosys.calibration.md").write_text(text + "\n")
        return
    text = table(rs, "evaluation set")
    print("\n" + text)
    yosys_v = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "estimate_vs_yosys.json").write_text(json.dumps({
        "rows": rs, "constants": {"K_DENSE": E.K_DENSE, "K_CONV": E.K_CONV, "K_REG": E.K_REG}, "formula": E.FORMULA,
        "calibration_set": list(CALIBRATION), "evaluation_set": list(EVALUATION),
        "smape_pct": {k: smape([r[k] for r in rs], [r["yosys_" + k.split("_")[1]] for r in rs])
                      for k in ("est_lut", "est_ff", "da4ml_lut", "da4ml_ff")},
        "yosys": yosys_v, "target": "synth_xilinx -flatten -family xc7 (pynq-z2)", "python": platform.python_version(),
        "seconds_this_run": round(time.perf_counter() - t0, 1),
        "note": "students are trained, exported, converted and synthesized once and cached under --work; "
                "yosys_seconds per row is the synthesis time on the 2-core machine"}, indent=2) + "\n")
    (out / "estimate_vs_yosys.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
