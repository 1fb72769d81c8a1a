"""Do tiny students lose their ReLU units, and does a gradient leak below zero bring them back?

A ReLU unit whose input is negative on every row gets no gradient and never recovers.  In a student with
16 hidden units each dead one is 6 % of its capacity.  ``distill.relu_grad_leak`` keeps the forward pass
(and so the exported network, bit for bit) and lets that share of the gradient through below zero while
training.  This benchmark measures, for the four `kd_pays` students:

  scratch   plain training on every label (what `kdhw run` trains first), the plain epochs
  fm        function matching at 10 % labels with the handed-over teacher (the recipe `distill.recipe: auto`
            resolves), full validation

for each leak in LEAKS and each seed: test and validation accuracy, and the ReLU units (channels for Conv1D)
that are zero on every training and transfer row of the exported checkpoint.  Paired by seed (same labels,
same initial weights, same batch order), so the leak is the only difference.

The default in ``kdhw/config.py`` is set from this table by a rule fixed before the run: the leak with the
highest validation accuracy averaged over the eight (student, arm) cells; a leak within CHOICE_TOLERANCE
points of the best goes to the smaller leak.

    nice -n 10 .venv/bin/python -m benchmarks.relu_leak [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import SETS, bootstrap_ci, names, parser, report, run_logged, run_meta, shared_teachers
from benchmarks.common import task_inputs
from kdhw.util.atomic import save_figure

warnings.filterwarnings("ignore")

LEAKS = (0.0, 0.01, 0.05, 0.2)
ARMS = ("scratch", "fm")
CHOICE_TOLERANCE = 0.2  # points of mean validation accuracy
JSONL = Path("benchmarks/results/relu_leak.jsonl")


def tasks_for(sets: list[str], seeds: int, teachers: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (set, student, arm, seed, leak); keys carry the teacher's digest like kd_pays' recipe tasks."""
    out = []
    for s in sets:
        for stu in SETS[s]["students"]:
            for seed in range(seeds):
                for arm in ARMS:
                    for leak in LEAKS:
                        key = f"leak/{s}/{stu}/{arm}/{seed}/{leak:g}/t{teachers[s]['digest']}"
                        out.append({"key": key, "set": s, "student": stu, "arm": arm, "seed": seed, "leak": leak})
    return out


def dead_units(model: Any, x: Any) -> tuple[int, int]:
    """(units zero on every row, units in all) over the student's ReLU layers; a Conv1D unit is a channel."""
    import torch

    model.eval()
    with torch.no_grad():
        _, feats = model(torch.from_numpy(x.astype("float32")), return_features=True)
    dead = total = 0
    for name, v in feats.items():
        if name.startswith("relu"):
            alive = (v > 0).reshape(v.shape[0], v.shape[1], -1).any(2).any(0)
            dead, total = dead + int((~alive).sum()), total + int(alive.numel())
    return dead, total


def run_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Train one arm with one leak; accuracies, dead units, CPU seconds."""
    import numpy as np
    import torch

    from kdhw.train.distill import student_input, train_arm
    from kdhw.train.recipe import resolve
    from kdhw.util.runtime import cpu_model

    torch.set_num_threads(1)
    spec_set = SETS[task["set"]]
    dist: dict[str, Any] = {"epochs": spec_set["epochs"], "seed": task["seed"], "relu_grad_leak": task["leak"],
                            "method": "hinton" if task["arm"] == "fm" else "none"}
    # measured when every arm kept its best-validation epoch: pinned, so a rerun that adds tasks stays comparable
    dist["checkpoint"] = "val"
    data_cfg: dict[str, Any] = dict(spec_set["data"])
    if task["arm"] == "fm":
        data_cfg["labels"] = {"fraction": 0.1, "seed": task["seed"], "val": False}
    raw = {"data": data_cfg, "teacher": spec_set["teacher"], "student": spec_set["students"][task["student"]],
           "distill": dist}
    cfg, data, teacher, t_train, t_unlab = task_inputs(raw, task, shared)
    c0 = time.process_time()
    recipe = resolve(cfg.distill, data, teacher, src=f"relu_leak:{task['key']}")
    name = "kd" if task["arm"] == "fm" else "scratch"
    dcfg, method = recipe.arms(cfg.distill["method"])[name]
    a = train_arm(name, cfg.student, dcfg, data, t_train, method, False, teacher=teacher, teacher_unlab=t_unlab)
    rows = [student_input(data.x_train, cfg.student)]
    if data.unlab is not None and len(data.unlab):
        rows.append(student_input(data.unlab, cfg.student))
    dead, total = dead_units(a.model, np.concatenate(rows))
    out = {k: task[k] for k in ("key", "set", "student", "arm", "seed", "leak")}
    out.update(recipe=recipe.name, test=a.test_acc, val_acc=a.fit.best_val_acc, best_epoch=a.fit.best_epoch,
               epochs=a.fit.epochs_run, dead=dead, units=total, cpu_seconds=time.process_time() - c0, cpu=cpu_model())
    return out


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, student, arm, leak): means over seeds, and the paired difference to leak 0."""
    by: dict[tuple[str, str, str], dict[float, dict[int, dict[str, Any]]]] = {}
    for r in rows:
        by.setdefault((r["set"], r["student"], r["arm"]), {}).setdefault(r["leak"], {})[r["seed"]] = r
    table = []
    for (s, stu, arm), per_leak in sorted(by.items()):
        base = per_leak.get(0.0, {})
        for leak, per_seed in sorted(per_leak.items()):
            seeds = sorted(set(per_seed) & set(base))
            if not seeds:
                continue
            table.append({
                "set": s, "student": stu, "arm": arm, "leak": leak, "n": len(seeds),
                "test": statistics.mean(per_seed[k]["test"] for k in seeds),
                "val": statistics.mean(per_seed[k]["val_acc"] for k in seeds),
                "d_test": statistics.mean(per_seed[k]["test"] - base[k]["test"] for k in seeds),
                "d_test_ci": bootstrap_ci([per_seed[k]["test"] - base[k]["test"] for k in seeds]),
                "dead": statistics.mean(per_seed[k]["dead"] for k in seeds), "units": per_seed[seeds[0]]["units"],
                "dead_per_seed": [per_seed[k]["dead"] for k in seeds],
                "cpu_seconds": statistics.mean(per_seed[k]["cpu_seconds"] for k in seeds)})
    return table


def choose(table: list[dict[str, Any]]) -> tuple[float, dict[float, float]]:
    """The rule fixed before the run: best mean validation accuracy over the cells; near-ties to the smaller
    leak.  Returns (chosen leak, mean validation % per leak)."""
    cells = {(e["set"], e["student"], e["arm"]) for e in table}
    means = {}
    for leak in LEAKS:
        vals = [e["val"] for e in table if e["leak"] == leak]
        if len(vals) == len(cells):
            means[leak] = 100 * statistics.mean(vals)
    best = max(means.values())
    return min(k for k, v in means.items() if v >= best - CHOICE_TOLERANCE), means


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    chosen, means = meta["chosen"], meta["val_means"]
    lines = [
        "# ReLU gradient leak: dead units and accuracy", "",
        f"Seeds: {meta['seeds']} (paired: same labels, initial weights and batch order at every leak); CPU: "
        f"{meta['cpu']}.  scratch = plain training on every label; fm = function matching at 10 % labels with "
        "the handed-over teacher (full validation).  Dead = ReLU units (Conv1D: channels) that are zero on every "
        "training and transfer row of the exported checkpoint, per seed.  Δ test = paired difference to leak 0 "
        "with a 95 % bootstrap CI over seeds (points).  The leak changes only the backward pass: the exported "
        "network computes exactly what a plain ReLU computes.", "",
        "Mean validation accuracy over the eight cells, per leak: "
        + ", ".join(f"{k:g}: {v:.2f} %" for k, v in means.items())
        + f".  The rule fixed before the run (best mean, ties within {CHOICE_TOLERANCE:g} points to the smaller "
        f"leak) picks **{chosen:g}**.", "",
        f"| student | arm | test %, leak 0 | test %, leak {chosen:g} | Δ [95 % CI] | dead units, leak 0 | dead units, "
        f"leak {chosen:g} |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in table:
        if e["leak"] != chosen:
            continue
        z = next(b for b in table if b["leak"] == 0 and (b["set"], b["student"], b["arm"]) ==
                 (e["set"], e["student"], e["arm"]))
        lo, hi = e["d_test_ci"]
        lines.append(f"| {e['set']} {e['student']} | {e['arm']} | {100 * z['test']:.2f} | {100 * e['test']:.2f} | "
                     f"{100 * e['d_test']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | "
                     f"{', '.join(map(str, z['dead_per_seed']))} of {z['units']} | "
                     f"{', '.join(map(str, e['dead_per_seed']))} of {e['units']} |")
    lines += [
        "", "Every leak:", "",
        "| student | arm | leak | test % | Δ test vs leak 0 [95 % CI] | val % | dead units per seed (of n) | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lo, hi = e["d_test_ci"]
        d = "—" if e["leak"] == 0 else f"{100 * e['d_test']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        lines.append(f"| {e['set']} {e['student']} | {e['arm']} | {e['leak']:g} | {100 * e['test']:.2f} | {d} | "
                     f"{100 * e['val']:.2f} | {', '.join(map(str, e['dead_per_seed']))} (of {e['units']}) | "
                     f"{e['cpu_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(e["set"], e["student"], e["arm"]) for e in table})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in cells:
        es = sorted((e for e in table if (e["set"], e["student"], e["arm"]) == c), key=lambda e: e["leak"])
        xs = [max(e["leak"], 1e-3) for e in es]
        axes[0].plot(xs, [100 * e["test"] for e in es], marker="o", label=" ".join(c[1:]))
        axes[1].plot(xs, [100 * e["dead"] / e["units"] for e in es], marker="o", label=" ".join(c[1:]))
    for ax, yl in zip(axes, ("test accuracy %", "dead ReLU units %")):
        ax.set_xscale("log")
        ax.set_xlabel("relu_grad_leak (leak 0 drawn at 1e-3)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    a = parser(__doc__, seeds=3, out="benchmarks/results/relu_leak").parse_args()
    sets = names(a.sets)
    teachers = shared_teachers(sets)
    tasks = tasks_for(sets, a.seeds, teachers)
    tasks.sort(key=lambda t: (t["seed"], t["arm"] != "scratch"))
    rows = run_logged(run_task, tasks, teachers, JSONL, a.workers)  # resumed ones too
    table = summarize(rows)
    chosen, means = choose(table)
    meta = {"seeds": a.seeds, "sets": sets, "leaks": LEAKS, "chosen": chosen, "val_means": means,
            **run_meta(rows, JSONL)}
    report(a.out, markdown(table, meta), meta, table, plot)


if __name__ == "__main__":
    main()
