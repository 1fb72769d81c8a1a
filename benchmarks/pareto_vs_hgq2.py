"""kdhw's resource-aware front against HGQ2 + da4ml on the same splits, both synthesized with the same yosys.

    .venv/bin/python benchmarks/pareto_vs_hgq2.py [--quick] [--skip-hgq2] [--datasets digits,mnist1d]

kdhw side: ``kdhw.pareto.run_pareto`` (scratch arms; the KD pairing is a product feature, not part of this
comparison) on kdhw's own digits split (MLP 64-16-10) and mnist1d split (Conv1D 4-8 + dense).
HGQ2 side: HGQ2 0.2.0 (Keras 3 on the torch backend, per-weight and per-activation learned bit widths, beta x
EBOPs, every Pareto checkpoint kept) in its own virtualenv (``.hgq2-venv/``, git-ignored; this script creates
it with pip: the CPU torch 2.13.0 wheel first, then hgq2 0.2.0 and da4ml 0.6.0), running
``benchmarks/hgq2_worker.py`` on the very same arrays; each of its front checkpoints is traced by da4ml into
Verilog.  Both sides' Verilog goes through ``kdhw.synth.synthesize`` (yosys ``synth_xilinx -flatten`` for
the Pynq-Z2 part).  Printed and written to ``benchmarks/results/pareto_vs_hgq2.{json,md,png}``: both fronts
(test accuracy vs LUT) and the LUT ratio kdhw / HGQ2 at equal test accuracy: for each level, the fewest LUTs
of a point reaching at least that test accuracy on each side.

Resumable: kdhw's grid keeps its JSONL under ``.kdhw-cache/pareto_vs_hgq2/``; HGQ2 results are cached there
per dataset once complete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / ".kdhw-cache" / "pareto_vs_hgq2"
VENV = ROOT / ".hgq2-venv"
RESULTS = ROOT / "benchmarks" / "results"

# kdhw settings per data set (the kd_table student for mnist1d; the 64-16-10 for digits)
KDHW = {
    "digits": {
        "data": {"dataset": "digits"},
        # digits pixels are k/16 in [0, 1]: ufixed<5,1> holds them exactly (8 bits would carry 3 zero bits)
        "student": {"input": {"bits": 5, "int_bits": 1, "signed": False}, "output": {"bits": 8},
                    "weight_bits": 4, "act_bits": 4, "bias_bits": 16,
                    "layers": [{"type": "dense", "units": 16}, {"type": "relu"}, {"type": "dense", "units": 10}]},
        "pareto": {"betas": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3], "epochs": 150},
    },
    "mnist1d": {
        "data": {"dataset": "mnist1d"},
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "output": {"bits": 8},
                    "weight_bits": 4, "act_bits": 4, "bias_bits": 16,
                    "layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"},
                               {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                               {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
        "pareto": {"betas": [1e-5, 1e-4, 1e-3], "epochs": 60},
    },
}


def kdhw_front(name: str, quick: bool, log: Any) -> dict[str, Any]:
    from kdhw.config import validate
    from kdhw.pareto import run_pareto

    s = KDHW[name]
    pareto = dict(s["pareto"])
    if quick:
        pareto.update(epochs=5, betas=pareto["betas"][::3], students=pareto.get("students", [])[:1])
    raw = {"data": s["data"], "student": s["student"], "distill": {"method": "none"},
           "pareto": {**pareto, "kd": False, "verify_random_inputs": 300, "sim_rows": 100}}
    cfg = validate(raw, f"<pareto_vs_hgq2 {name}>")
    t, c = time.perf_counter(), time.process_time()
    res = run_pareto(cfg, WORK / f"{'quick_' if quick else ''}kdhw_{name}", log=log)
    return {"points": [{k: p[k] for k in ("id", "label", "beta", "val_acc", "test_acc", "lut", "ff", "ebops",
                                          "lut_estimate", "pareto", "pareto_test", "bit_exact", "live_weights",
                                          "weights", "inputs_read", "latency_cycles", "train_cpu_s")}
                       for p in res["points"]],
            "config": raw, "wall_s": time.perf_counter() - t, "driver_cpu_s": time.process_time() - c}


# ---------------------------------------------------------------- HGQ2 in its own virtualenv

def ensure_venv(log: Any) -> Path:
    py = VENV / "bin" / "python"
    stamp = VENV / ".kdhw-hgq2-ok"
    if stamp.is_file():
        return py
    log(f"[hgq2] creating {VENV} (torch 2.13.0 CPU wheel first, then hgq2 0.2.0 + da4ml 0.6.0)")
    if not py.is_file():
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "hgq2==0.2.0", "da4ml==0.6.0", "torch==2.13.0", "numpy"], check=True)
    subprocess.run([str(py), "-c", "import hgq, keras, da4ml"], check=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    stamp.write_text("ok\n")
    return py


def export_split(name: str) -> Path:
    """The exact arrays kdhw trains and tests on, for the HGQ2 worker (flattened for the MLP data set)."""
    from kdhw.config import validate
    from kdhw.data import load_dataset

    data = load_dataset(validate({"data": KDHW[name]["data"]}).data)
    p = WORK / f"split_{name}.npz"
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(p, x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val,
             x_test=data.x_test, y_test=data.y_test)
    return p


def hgq2_front(name: str, quick: bool, log: Any) -> dict[str, Any]:
    from kdhw.boards import load_board
    from kdhw.synth import synthesize

    done = WORK / f"{'quick_' if quick else ''}hgq2_{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    py = ensure_venv(log)
    split = export_split(name)
    out = WORK / f"{'quick_' if quick else ''}hgq2_{name}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(py), str(ROOT / "benchmarks" / "hgq2_worker.py"), "--data", name, "--split", str(split),
           "--out", str(out)] + (["--quick"] if quick else [])
    log(f"[hgq2] {name}: training + da4ml tracing in {VENV.name} ...")
    env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out / "worker.log").write_text(r.stdout + "\n" + r.stderr)
    if r.returncode:
        raise RuntimeError(f"HGQ2 worker failed (see {out / 'worker.log'}): {r.stderr.strip().splitlines()[-1:]}")
    pts = json.loads((out / "points.json").read_text())
    board = load_board("pynq-z2")
    for p in pts["points"]:
        syn = synthesize(out / p["rtl"], board, out / p["rtl"] / "syn")
        p.update(lut=syn.get("lut"), ff=syn.get("ff"), dsp=syn.get("dsp"), synth_ok=bool(syn.get("ok")))
        log(f"[hgq2] {name} epoch {p['epoch']}: test {100 * p['test_acc']:.2f} %, {p['lut']} LUT "
            f"(bit-exact vs keras on test: {p['bit_exact_test']})")
    pts["wall_s"] = time.perf_counter() - t
    done.write_text(json.dumps(pts, indent=1))
    return pts


# ---------------------------------------------------------------- comparison

def front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated points in (test accuracy, LUT), by LUT."""
    ok = [p for p in points if p.get("lut")]
    out = [p for p in ok if not any(q["lut"] <= p["lut"] and q["test_acc"] >= p["test_acc"]
                                    and (q["lut"] < p["lut"] or q["test_acc"] > p["test_acc"]) for q in ok)]
    return sorted(out, key=lambda p: p["lut"])


def lut_at(points: list[dict[str, Any]], acc: float) -> float | None:
    c = [p["lut"] for p in points if p.get("lut") and p["test_acc"] >= acc - 1e-12]
    return min(c) if c else None


def compare(k: list[dict[str, Any]], h: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratio kdhw / HGQ2 of the fewest LUTs reaching each HGQ2 front point's test accuracy (levels where both
    sides reach it)."""
    rows = []
    for p in front(h):
        a = p["test_acc"]
        lk, lh = lut_at(k, a), lut_at(h, a)
        rows.append({"test_acc": a, "kdhw_lut": lk, "hgq2_lut": lh, "ratio": None if lk is None else lk / lh})
    return rows


def markdown(res: dict[str, Any]) -> str:
    lines = ["# kdhw pareto vs HGQ2 + da4ml (same split, same yosys)", "",
             "LUTs: yosys 0.23 `synth_xilinx -flatten` for xc7z020clg400-1 of each side's da4ml Verilog; 0 DSP. "
             "Front = points no other point of the same tool beats on test accuracy at no more LUTs.", ""]
    for name, r in res["datasets"].items():
        lines += [f"## {name}", ""]
        if r.get("hgq2_error"):
            lines += [f"HGQ2 side failed: {r['hgq2_error']}", ""]
        for tool in ("kdhw", "hgq2"):
            pts = r.get(tool, {}).get("points") or []
            if not pts:
                continue
            lines += [f"### {tool} front", "", "| test % | LUT | FF | " + ("student | beta | bit-exact |" if tool == "kdhw"
                                                                         else "epoch | EBOPs | bit-exact (vs keras) |"),
                      "|---|---|---|---|---|---|"]
            for p in front(pts):
                extra = (f"{p['label']} | {p['beta']:g} | {p['bit_exact']}" if tool == "kdhw"
                         else f"{p['epoch']} | {p.get('ebops', 0):,.0f} | {p['bit_exact_test']}")
                lines.append(f"| {100 * p['test_acc']:.2f} | {p['lut']:,} | {p['ff']:,} | {extra} |")
            lines.append("")
        if r.get("ratio"):
            lines += ["### LUT ratio kdhw / HGQ2 at equal test accuracy", "",
                      "| test accuracy ≥ | kdhw LUT | HGQ2 LUT | ratio |", "|---|---|---|---|"]
            for row in r["ratio"]:
                kl = "—" if row["kdhw_lut"] is None else f"{row['kdhw_lut']:,}"
                ratio = "— (kdhw does not reach it)" if row["ratio"] is None else f"{row['ratio']:.2f}"
                lines.append(f"| {100 * row['test_acc']:.2f} % | {kl} | {row['hgq2_lut']:,} | {ratio} |")
            lines.append("")
    lines += ["![fronts](pareto_vs_hgq2.png)", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], names):
        r = res["datasets"][name]
        for tool, style in (("kdhw", "o-"), ("hgq2", "s--")):
            pts = r.get(tool, {}).get("points") or []
            ok = [p for p in pts if p.get("lut")]
            if not ok:
                continue
            ax.scatter([p["lut"] for p in ok], [100 * p["test_acc"] for p in ok], alpha=0.25,
                       marker=style[0])
            f = front(ok)
            ax.plot([p["lut"] for p in f], [100 * p["test_acc"] for p in f], style, label=f"{tool} front",
                    drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_xlabel("LUTs (yosys synth_xilinx, xc7z020)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (results not written)")
    ap.add_argument("--skip-hgq2", action="store_true")
    ap.add_argument("--datasets", default="digits,mnist1d")
    a = ap.parse_args()
    from kdhw.runtime import set_torch_threads

    set_torch_threads()
    log = lambda m: print(m, flush=True)  # noqa: E731
    res: dict[str, Any] = {"datasets": {}}
    for name in a.datasets.split(","):
        r: dict[str, Any] = {"kdhw": kdhw_front(name, a.quick, log)}
        if not a.skip_hgq2:
            try:
                r["hgq2"] = hgq2_front(name, a.quick, log)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                r["hgq2_error"] = str(e)
                log(f"[hgq2] {name}: {e}")
        if r.get("hgq2"):
            r["ratio"] = compare(r["kdhw"]["points"], r["hgq2"]["points"])
        res["datasets"][name] = r
    text = markdown(res)
    print(text)
    if a.quick:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pareto_vs_hgq2.json").write_text(json.dumps(res, indent=1, default=float))
    (RESULTS / "pareto_vs_hgq2.md").write_text(text)
    plot(res, RESULTS / "pareto_vs_hgq2.png")


if __name__ == "__main__":
    main()
