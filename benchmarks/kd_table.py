"""Every distillation method against scratch on two built-in data sets, paired over seeds.

For digits and mnist1d: one tiny fixed-point student (4-bit weights, 4-bit ReLU, 8-bit input) trained from
scratch and with each method; test accuracy mean ± std over seeds, the paired difference to scratch, the
gap closed = (method − scratch) / (teacher − scratch), and the cost of an epoch relative to scratch.

Students (chosen from /work/shared/notes/KD.md so that the scratch→teacher gap is real, and confirmed by the
"gap" line this script prints): digits: MLP 64-8-10 at w4a4 (about 4 points under the teacher, mostly
capacity); mnist1d: Conv1D 4 and 8 channels at w4a4 (about 25 points under).  Wider students sit within
~2 points of the teacher and leave nothing to measure.

Shared across seeds and methods: one teacher per data set (seed 0) and two more teachers (seeds 1, 2) for
the ensemble.  Per seed, one scratch arm is trained and every method is paired with it (same seed, init and
batch order; only the loss differs).  Method settings are the config defaults (T = 1, alpha = 0.5, FitNets
10 hint epochs, RKD weights 25/50, ...; see kdhw/config.py), except born-again with ``--generations``
generations (default 1, to save time) and a 3-teacher ensemble.  digits uses the default 60 epochs;
mnist1d is shortened to 20 epochs (3000 signals) to fit a 2-core machine (about 15 minutes in all).
Epoch cost is compared in process CPU time, which other jobs on a shared machine do not inflate.

    .venv/bin/python benchmarks/kd_table.py [--seeds 3] [--digits-epochs 60] [--mnist1d-epochs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

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
        "data": {"dataset": "mnist1d", "mnist1d_samples": 3000},
        "teacher": {"arch": "cnn1d", "channels": [32, 64], "kernel": 5, "hidden": 64, "epochs": 60, "patience": 15},
        "student": {"input": {"bits": 8, "int_bits": 1, "signed": True}, "weight_bits": 4, "act_bits": 4,
                    "layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"},
                               {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                               {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
        "label": "Conv1D 4-8 channels + dense, w4a4, 8-bit input",
    },
}


def _ms(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def run_set(name: str, spec: dict[str, Any], epochs: int, seeds: int, generations: int,
            methods: tuple[str, ...]) -> dict[str, Any]:
    from kdhw.config import validate
    from kdhw.data import load_dataset
    from kdhw.distill import distill, ensemble_members
    from kdhw.student import param_count
    from kdhw.teacher import teacher_accuracy, teacher_logits, train_teacher

    cfg = validate({"data": spec["data"], "teacher": spec["teacher"], "student": spec["student"],
                    "distill": {"epochs": epochs, "generations": generations, "ensemble_size": 3}},
                   f"kd_table:{name}")
    data = load_dataset(cfg.data, cfg.source)
    t0 = time.perf_counter()
    teacher, _ = train_teacher(cfg.teacher, data, progress=False)
    tl = teacher_logits(teacher, cfg.teacher["arch"], data)
    t_acc = teacher_accuracy(tl, data)["test"]
    members = ensemble_members(cfg.distill, data, cfg.teacher, progress=False, src=cfg.source)
    t_teach = time.perf_counter() - t0
    print(f"[{name}] teacher {cfg.teacher['arch']}: test {100 * t_acc:.2f} %; 3 teachers in {t_teach:.0f} s; "
          f"{data.manifest['train']}/{data.manifest['val']}/{data.manifest['test']} rows", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in ("scratch", *methods)}
    params = None
    for s in range(seeds):
        scratch = None
        for m in methods:
            dcfg = {**cfg.distill, "method": m, "seed": s}
            t = time.perf_counter()
            arms = distill(cfg.student, dcfg, data, tl["train"], False, cfg.source, teacher=teacher,
                           teacher_cfg=cfg.teacher, extra_teachers=members, scratch=scratch)
            if scratch is None:
                scratch = arms["scratch"]
                params = param_count(scratch.model)
                runs["scratch"].append({"seed": s, "test": scratch.test_acc, "spe": scratch.fit.cpu_seconds_per_epoch,
                                        "wall_spe": scratch.fit.seconds_per_epoch})
            kd = arms["kd"]
            runs[m].append({"seed": s, "test": kd.test_acc, "spe": kd.fit.cpu_seconds_per_epoch,
                            "scratch_spe": scratch.fit.cpu_seconds_per_epoch, "wall_spe": kd.fit.seconds_per_epoch,
                            "scratch_wall_spe": scratch.fit.seconds_per_epoch})
            print(f"[{name}] seed {s} {m:15s} {100 * kd.test_acc:6.2f} %  (scratch {100 * scratch.test_acc:6.2f} %, "
                  f"{time.perf_counter() - t:5.1f} s)", flush=True)
    return {"name": name, "label": spec["label"], "params": params, "teacher_test": t_acc, "epochs": epochs,
            "seeds": seeds, "train_rows": data.manifest["train"], "test_rows": data.manifest["test"], "runs": runs}


def table(res: dict[str, Any]) -> str:
    runs, t_acc = res["runs"], res["teacher_test"]
    sm, ss = _ms([r["test"] for r in runs["scratch"]])
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
        mm, msd = _ms([r["test"] for r in rs])
        dm, dsd = _ms([100 * (r["test"] - s["test"]) for r, s in zip(rs, runs["scratch"])])
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

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--digits-epochs", type=int, default=60)
    ap.add_argument("--mnist1d-epochs", type=int, default=20)
    ap.add_argument("--generations", type=int, default=1, help="born-again generations after generation 0")
    ap.add_argument("--sets", default="digits,mnist1d")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results/kd_table.json")
    a = ap.parse_args()
    torch.set_num_threads(1)  # tiny nets: one thread is fastest and leaves the other core to others
    methods = tuple(m for m in a.methods.split(",") if m)
    t0 = time.perf_counter()
    results = []
    for name in a.sets.split(","):
        ep = a.digits_epochs if name == "digits" else a.mnist1d_epochs
        results.append(run_set(name, SETS[name], ep, a.seeds, a.generations, methods))
    print()
    for r in results:
        print(table(r))
    print(f"total {time.perf_counter() - t0:.0f} s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
