"""Which epoch should a function-matching student export when labels are scarce?

Under a label budget with ``data.labels.val: true`` the validation split keeps a few dozen rows (29 on
digits, 40 on mnist1d at 10 %), so the best-validation epoch is decided by one or two rows.  The transfer
set has hundreds to thousands of rows the teacher labels.  This benchmark trains the recipe's distilled arm
(``distill.recipe: auto`` -> function matching) on the four ``kd_pays`` students at 10 % labels with the
handed-over teacher, records every epoch's test accuracy, and asks what each rule would have exported:

  cut       best accuracy on the budget-cut validation rows (ties to the lower loss there): the rule before
  full      best accuracy on the full validation split (what a user with every validation label could do)
  teacher   highest agreement with the teacher on the clean transfer rows, ties to the lower cross-entropy
            against its probabilities (``distill.checkpoint: teacher``, what the arm itself exported)
  last      the last epoch
  oracle    the best test accuracy of any epoch: an upper bound no rule can reach, not a rule

One training per (student, seed) gives every rule's answer, so the comparison is paired exactly.  Seeds start
at 5: seeds 0-4 are the ones ``kd_pays.py --recipe`` reports, where the adopted rule is then measured on
seeds it was not chosen on (its "checkpoint" table).  These seeds were looked at in a development run
before this script existed; the rule was adopted from them.

    nice -n 10 .venv/bin/python -m benchmarks.checkpoint_rule [--seeds 5] [--first-seed 5] [--workers 2]
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import FIT_TAG, SETS, bootstrap_ci, names, parser, report, run_logged, run_meta
from benchmarks.common import shared_teachers, task_inputs
from kdhw.util.atomic import save_figure

warnings.filterwarnings("ignore")

RULES = ("cut", "full", "teacher", "last")
JSONL = Path("benchmarks/results/checkpoint_rule.jsonl")


def tasks_for(sets: list[str], seeds: list[int], teachers: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (set, student, seed); keys carry the teacher's digest like kd_pays' recipe tasks."""
    return [{"key": f"ckpt/{s}/{stu}/{seed}/t{teachers[s]['digest']}{FIT_TAG}", "set": s, "student": stu,
             "seed": seed} for s in sets for stu in SETS[s]["students"] for seed in seeds]


def run_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Train the fm arm once (full validation, so the budget-cut rows are a known subset of it) and record
    each epoch's test accuracy and validation accuracy/loss on the full and on the cut split.

    ``kdhw.train.loop.fit`` calls ``kdhw.train.loop.evaluate`` once per epoch on the validation split; this task
    wraps it to read the same model on the test rows at that moment (the wrap changes nothing it returns)."""
    import torch

    import kdhw.train.loop as training
    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.distill import student_input, train_arm
    from kdhw.train.recipe import resolve
    from kdhw.util.runtime import cpu_model

    torch.set_num_threads(1)
    spec_set = SETS[task["set"]]
    labels = {"fraction": 0.1, "seed": task["seed"], "val": False}
    raw = {"data": {**spec_set["data"], "labels": labels}, "teacher": spec_set["teacher"],
           "student": spec_set["students"][task["student"]],
           "distill": {"epochs": spec_set["epochs"], "seed": task["seed"], "method": "hinton"}}
    cfg, data, teacher, t_train, t_unlab = task_inputs(raw, task, shared)
    cut_data = load_dataset(validate({**raw, "data": {**raw["data"], "labels": {**labels, "val": True}}},
                                     "checkpoint_rule").data)
    where = {r.tobytes(): i for i, r in enumerate(data.x_val)}
    cut = np.array(sorted(where[r.tobytes()] for r in cut_data.x_val))
    x_test = student_input(data.x_test, cfg.student)
    epochs: list[dict[str, float]] = []
    real = training.evaluate

    def watched(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> tuple[float, float]:
        z = torch.from_numpy(training.predict_logits(model, x))
        nll = torch.nn.functional.cross_entropy(z, torch.from_numpy(np.asarray(y)), reduction="none").numpy()
        ok = (z.argmax(1).numpy() == y)
        zt = training.predict_logits(model, x_test)
        epochs.append({"test": float((zt.argmax(1) == data.y_test).mean()), "full": float(ok.mean()),
                       "full_loss": float(nll.mean()), "cut": float(ok[cut].mean()),
                       "cut_loss": float(nll[cut].mean())})
        return float(ok.mean()), float(nll.mean())

    c0 = time.process_time()
    recipe = resolve(cfg.distill, data, teacher, src=f"checkpoint_rule:{task['key']}")
    dcfg, method = recipe.arms(cfg.distill["method"])["kd"]
    training.evaluate = watched
    try:
        a = train_arm("kd", cfg.student, dcfg, data, t_train, method, False, teacher=teacher, teacher_unlab=t_unlab)
    finally:
        training.evaluate = real
    if abs(epochs[a.fit.best_epoch]["test"] - a.test_acc) > 1e-9:
        raise RuntimeError(f"{task['key']}: the recorded test accuracy of the exported epoch is not the arm's")
    for h, e in zip(a.fit.history, epochs):
        e["agreement"] = h["score"]
    return {**task, "epochs": epochs, "teacher_epoch": a.fit.best_epoch, "checkpoint": a.info.get("checkpoint"),
            "cut_rows": int(len(cut)), "val_rows": int(len(data.y_val)), "cpu_seconds": time.process_time() - c0,
            "cpu": cpu_model()}


def picks(row: dict[str, Any]) -> dict[str, int]:
    """The epoch each rule exports."""
    ep = row["epochs"]
    n = range(len(ep))
    return {"cut": max(n, key=lambda i: (ep[i]["cut"], -ep[i]["cut_loss"])),
            "full": max(n, key=lambda i: (ep[i]["full"], -ep[i]["full_loss"])),
            "teacher": row["teacher_epoch"], "last": len(ep) - 1}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per student: mean test accuracy of what each rule exports, the oracle, and teacher − cut / − full."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["set"], r["student"]), []).append(r)
    table = []
    for (s, stu), rs in sorted(cells.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        test = {rule: [100 * r["epochs"][picks(r)[rule]]["test"] for r in rs] for rule in RULES}
        e: dict[str, Any] = {"set": s, "student": stu, "seeds": [r["seed"] for r in rs],
                             "cut_rows": rs[0]["cut_rows"], "val_rows": rs[0]["val_rows"],
                             "transfer_rows": (rs[0]["checkpoint"] or {}).get("rows"),
                             "oracle": statistics.mean(100 * max(x["test"] for x in r["epochs"]) for r in rs),
                             "cpu_seconds": statistics.mean(r["cpu_seconds"] for r in rs),
                             **{rule: statistics.mean(v) for rule, v in test.items()}}
        for ref in ("cut", "full"):
            d = [a - b for a, b in zip(test["teacher"], test[ref])]
            e[f"teacher_minus_{ref}"] = {"diff": statistics.mean(d), "ci": bootstrap_ci(d),
                                         "better": sum(x > 0 for x in d), "worse": sum(x < 0 for x in d)}
        table.append(e)
    return table


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Which epoch a function-matching student exports (seeds {meta['seeds'][0]}-{meta['seeds'][-1]}, "
             "10 % labels, handed-over teacher)", "",
             "One training per student and seed; each rule reads the same epochs.  Test accuracy %, mean over seeds; "
             "Δ = teacher agreement − the other rule, paired by seed, 95 % bootstrap CI (points), with the number of "
             "seeds it was better / worse on.  oracle = the best test accuracy of any epoch (a bound, not a rule).  "
             f"CPU: {meta['cpu']}; {meta['training_cpu_seconds']:.0f} CPU-s of training.", "",
             "| student | validation rows (cut / full) | transfer rows | cut validation | full validation | "
             "teacher agreement | last epoch | oracle | Δ vs cut [95 % CI] | Δ vs full [95 % CI] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        dc, df = e["teacher_minus_cut"], e["teacher_minus_full"]
        lines.append(f"| {e['set']} {e['student']} | {e['cut_rows']} / {e['val_rows']} | {e['transfer_rows']} | "
                     f"{e['cut']:.2f} | {e['full']:.2f} | **{e['teacher']:.2f}** | {e['last']:.2f} | {e['oracle']:.2f} | "
                     f"{dc['diff']:+.2f} [{dc['ci'][0]:+.2f}, {dc['ci'][1]:+.2f}] ({dc['better']}/{dc['worse']}) | "
                     f"{df['diff']:+.2f} [{df['ci'][0]:+.2f}, {df['ci'][1]:+.2f}] ({df['better']}/{df['worse']}) |")
    mean = {r: statistics.mean(e[r] for e in table) for r in (*RULES, "oracle")}
    lines += ["", "Mean over the students: " + ", ".join(f"{r} {v:.2f}" for r, v in mean.items()) + ".",
              f"Teacher agreement above the budget-cut validation's choice on {meta['beats_cut']} of {len(table)} "
              f"students, above the full validation split's on {meta['beats_full']} of {len(table)}.", ""]
    return "\n".join(lines)


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    rules = (*RULES, "oracle")
    w = 0.8 / len(rules)
    for j, r in enumerate(rules):
        ax.bar([i + (j - (len(rules) - 1) / 2) * w for i in range(len(table))],
               [e[r] - e["cut"] for e in table], w, label=r)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(table)), [f"{e['set']}\n{e['student']}" for e in table])
    ax.set_ylabel("test % minus the cut-validation rule's")
    ax.set_title("Exported epoch by rule (function matching, 10 % labels)")
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    a = parser(__doc__, seeds=5, out="benchmarks/results/checkpoint_rule", first_seed=5).parse_args()
    sets = names(a.sets)
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    teachers = shared_teachers(sets)
    tasks = tasks_for(sets, seeds, teachers)
    tasks.sort(key=lambda t: (t["seed"], t["set"] != "mnist1d"))
    rows = run_logged(run_task, tasks, teachers, JSONL, a.workers)
    table = summarize(rows)
    meta = {"seeds": seeds, "sets": sets, **run_meta(rows, JSONL),
            "beats_cut": sum(e["teacher"] > e["cut"] for e in table),
            "beats_full": sum(e["teacher"] > e["full"] for e in table)}
    report(a.out, markdown(table, meta), meta, table, plot)


if __name__ == "__main__":
    main()
