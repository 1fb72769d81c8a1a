"""Every distillation method against scratch on two built-in data sets, paired over seeds.

For digits and mnist1d: one tiny fixed-point student (4-bit weights, 4-bit ReLU, 8-bit input) trained from
scratch and with each method; test accuracy mean ± std over seeds, the paired difference to scratch, the
gap closed = (method − scratch) / (teacher − scratch), and the cost of an epoch relative to scratch.

Students (chosen from earlier measurements of tiny fixed-point students so that the scratch→teacher gap
is real, and confirmed by the "gap" line this script prints): digits: MLP 64-8-10 at w4a4 (3-4 points under the teacher, mostly
capacity); mnist1d: Conv1D 4 and 8 channels at w4a4 (about 25 points under).  Wider students sit within
~2 points of the teacher and leave nothing to measure.

Shared across seeds and methods: one teacher per data set (seed 0) and two more teachers (seeds 1, 2) for
the ensemble.  Per seed, one scratch arm is trained and every method is paired with it (same seed, init and
batch order; only the loss differs).  Each data set is a ``kdhw sweep`` of distill.method: every arm is a
task on ``kdhw.flows.grid`` (2 local Ray workers by default), recorded in ``out/kd_table/<set>/runs.jsonl`` so an
interrupted run resumes.  Method settings are the config defaults (T = 1, alpha = 0.5, FitNets
10 hint epochs, RKD weights 25/50, ...; see kdhw/config.py), except born-again with ``--generations``
generations (default 1, to save time) and a 3-teacher ensemble.  digits uses the default 60 epochs;
mnist1d is shortened to 20 epochs (3000 signals) to fit a 2-core machine (about 15 minutes in all).
Epoch cost is compared in process CPU time, which other jobs on a shared machine inflate much less than
wall time (not zero: arms trained in parallel or beside other jobs share caches and memory bandwidth, and
the scratch and distilled arms of a seed run in different tasks, at different times).

    .venv/bin/python -m benchmarks.kd_table [--seeds 3] [--digits-epochs 60] [--mnist1d-epochs 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import mean_std

warnings.filterwarnings("ignore")

METHODS = ("hinton", "logits_mse", "kl_mae", "fitnets", "rkd", "born_again", "tf_kd", "ensemble",
           "label_smoothing", "pseudo_label")

SETS: dict[str, dict[str, Any]] = {
    "digits": {
        "data": {"dataset": "digits"},
        "teacher": {"arch": "cnn2d", "channels": [16, 32], "hidden": 64, "epochs": 40, "patience": 8},
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": False}, "weight_bits": 4, "act_bits": 4,
                    "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]},
        "label": "MLP 64-8-10, w4a4, 8-bit input",
    },
    "mnist1d": {
        # dataset: mnist1d_lookalike, kdhw's synthetic stand-in, on which results/kd_table.* were measured (the set
        # key stays "mnist1d", as those results name it); dataset: mnist1d is the real MNIST-1D now
        "data": {"dataset": "mnist1d_lookalike", "mnist1d_samples": 3000},
        "teacher": {"arch": "cnn1d", "channels": [32, 64], "kernel": 5, "hidden": 64, "epochs": 60, "patience": 15},
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "weight_bits": 4, "act_bits": 4,
                    "layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"},
                               {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                               {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
        "label": "Conv1D 4-8 channels + dense, w4a4, 8-bit input",
    },
}


def run_set(name: str, spec: dict[str, Any], epochs: int, seeds: int, generations: int,
            methods: tuple[str, ...], work: Path, workers: int, address: str | None) -> dict[str, Any]:
    """One data set: a ``kdhw sweep`` of distill.method over ``methods`` (the grid: each arm a task)."""
    from kdhw.config import validate
    from kdhw.flows.sweep import run_sweep

    cfg = validate({"data": spec["data"], "teacher": spec["teacher"], "student": spec["student"],
                    "distill": {"epochs": epochs, "generations": generations, "ensemble_size": 3}},
                   f"kd_table:{name}")
    t0 = time.perf_counter()
    res = run_sweep(cfg, "distill.method", list(methods), work / name, seeds=seeds, progress=True,
                    log=lambda m: print(f"[{name}] {m}", flush=True), workers=workers, address=address)
    rows = res["runs"]
    runs: dict[str, list[dict[str, Any]]] = {"scratch": [], **{m: [] for m in methods}}
    for r in rows:  # every method of a seed is paired with the same scratch arm (same key)
        if r["value"] == methods[0]:
            runs["scratch"].append({"seed": r["seed"], "test": r["scratch_test"], "spe": r["scratch_cpu_s_per_epoch"],
                                    "wall_spe": r["scratch_s_per_epoch"]})
        runs[r["value"]].append({"seed": r["seed"], "test": r["kd_test"], "spe": r["kd_cpu_s_per_epoch"],
                                 "scratch_spe": r["scratch_cpu_s_per_epoch"], "wall_spe": r["kd_s_per_epoch"],
                                 "scratch_wall_spe": r["scratch_s_per_epoch"]})
    assert len({r["scratch_key"] for r in rows if r["seed"] == 0}) == 1  # one scratch arm per seed
    return {"name": name, "label": spec["label"], "params": rows[0]["params"],
            "teacher_test": res["teacher"]["test_acc"],
            "epochs": epochs, "seeds": seeds, "train_rows": res["data"]["train"], "test_rows": res["data"]["test"],
            "runs": runs, "grid": res["grid"], "wall_s": time.perf_counter() - t0}


def table(res: dict[str, Any]) -> str:
    runs, t_acc = res["runs"], res["teacher_test"]
    sm, ss = mean_std([r["test"] for r in runs["scratch"]])
    lines = [f"### {res['name']}: {res['label']} ({res['params']} params), {res['epochs']} epochs, "
             f"{res['seeds']} seeds, {res['test_rows']} test rows", "",
             f"Teacher {100 * t_acc:.2f} %; scratch {100 * sm:.2f} ± {100 * ss:.2f} %; "
             f"gap {100 * (t_acc - sm):.2f} points.", "",
             "| method | test % (mean ± std) | method − scratch, paired (points) | gap closed | epoch CPU time / scratch |",
             "|---|---|---|---|---|",
             f"| scratch | {100 * sm:.2f} ± {100 * ss:.2f} | — | — | 1.00 |"]
    for m, rs in runs.items():
        if m == "scratch":
            continue
        mm, msd = mean_std([r["test"] for r in rs])
        dm, dsd = mean_std([100 * (r["test"] - s["test"]) for r, s in zip(rs, runs["scratch"])])
        gap = (mm - sm) / (t_acc - sm) if t_acc - sm > 1e-9 else float("nan")
        ratio = statistics.mean(r["spe"] / r["scratch_spe"] for r in rs)
        note = " (per generation)" if m == "born_again" else ""
        lines.append(f"| {m} | {100 * mm:.2f} ± {100 * msd:.2f} | {dm:+.2f} ± {dsd:.2f} | {100 * gap:+.0f} % | "
                     f"{ratio:.2f}{note} |")
    h = runs.get("hinton")
    if h:
        ratios = [r["spe"] / r["scratch_spe"] for r in h]
        wall = [r["wall_spe"] / r["scratch_wall_spe"] for r in h]
        lines += ["", f"KD epoch time / scratch epoch time with cached teacher logits (hinton): "
                      f"{statistics.mean(ratios):.2f} in process CPU time (per seed "
                      f"{', '.join(f'{x:.2f}' for x in ratios)}; target ≤ 1.10); wall clock {statistics.mean(wall):.2f} "
                      f"(per seed {', '.join(f'{x:.2f}' for x in wall)}; the cores are shared, so wall time is noisier)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from kdhw.util.atomic import write_json

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--digits-epochs", type=int, default=60)
    ap.add_argument("--mnist1d-epochs", type=int, default=20)
    ap.add_argument("--generations", type=int, default=1, help="born-again generations after generation 0")
    ap.add_argument("--sets", default="digits,mnist1d")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results/kd_table.json")
    ap.add_argument("--work", default="out/kd_table", help="sweep folders (runs.jsonl: rerunning resumes)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers; 1 = sequential in this process")
    ap.add_argument("--address", default=None, help="an existing Ray cluster instead of a local Ray")
    a = ap.parse_args()
    torch.set_num_threads(1)  # tiny nets: one thread is fastest and leaves the other core to others
    methods = tuple(m for m in a.methods.split(",") if m)
    t0 = time.perf_counter()
    results = []
    for name in a.sets.split(","):
        ep = a.digits_epochs if name == "digits" else a.mnist1d_epochs
        results.append(run_set(name, SETS[name], ep, a.seeds, a.generations, methods, Path(a.work), a.workers,
                               a.address))
    print()
    for r in results:
        print(table(r))
    g = results[0]["grid"]
    plural = "s" if g["workers"] > 1 else ""
    print(f"total {time.perf_counter() - t0:.0f} s ({g['mode']}, {g['workers']} worker{plural}; "
          f"{os.cpu_count()} cores shared with other jobs)")
    write_json(a.out, results)


if __name__ == "__main__":
    main()
