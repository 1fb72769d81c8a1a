"""Where distillation pays on tiny fixed-point students, and where it does not: label budgets x arms x seeds.

For digits and mnist1d, two tiny students each (<= 4-bit weights, 4-bit ReLU, 8-bit input), label budgets of
5, 10, 25 and 100 % of the train split (the rest of the split becomes the unlabelled transfer set), and these
arms, all paired per seed (same seed -> same label subset, same initial weights, same batch order seeds):

  scratch         labels only (the labelled rows, as many steps per epoch as the arms that read every row)
  kd              Hinton KD from a handed-over teacher (trained elsewhere on the whole labelled train split)
                  on labelled + transfer rows; (T, alpha) in KD_GRID chosen per seed on validation accuracy
  pseudo          the control: cross-entropy on the same teacher's argmax on the same rows; alpha in
                  PSEUDO_GRID chosen on validation
  fm              function matching: the same KD with mixup + modality augmentation, teacher evaluated online
                  on exactly the augmented input, LONG x the epochs (a "patient" cosine schedule)
  scratch_aug     the control for fm: labels only with the same augmentation and schedule
  kd_semi         the semi-supervised case: the teacher is trained by the pipeline on the labelled rows only,
                  then KD as above (budgets < 100 %; at 100 % it is kd)
  exported        what `kdhw run` ships with select: best_val: per seed, kd if its validation accuracy beats
                  scratch's, else scratch (the "never worse" check)
  kd_qkd          QKD's schedule at 10 % and 100 %: the scratch student first, then KD (T = 1, alpha = 0.9)
                  from its weights; compared with the same KD from a fresh initialisation (kd_fresh) and,
                  because it trains twice as many epochs in all, with scratch_2x
  scratch_2x      the control for kd_qkd: labels only for twice the epochs (10 % and 100 %)

Reported per (set, student, budget): test accuracy mean ± std over seeds, the paired difference to scratch
with a 95 % bootstrap confidence interval over seeds (10,000 resamples), and the gap closed =
(arm − scratch) / (teacher − scratch) with the handed-over teacher's test accuracy.  A gain is called
significant only when its interval excludes 0; fm is also compared with scratch_aug and kd with pseudo,
because augmentation and teacher labelling, not soft targets, may carry most of a gain.

Every (arm, seed, budget) is one task on kdhw's task engine (``kdhw.flows.grid``): sequential, local Ray with
``--workers N``, or a cluster with ``--address``.  Results append to ``--jsonl`` as tasks finish, so an
interrupted run resumes; teacher outputs are computed once per data set and shared through the object store.

    .venv/bin/python -m benchmarks.kd_pays [--workers 2] [--seeds 5] [--sets digits,mnist1d]

``--recipe`` measures the new default instead (``distill.recipe: auto``, which resolves to function matching
with a transfer set and a runnable teacher): per student at 10 % labels, plain scratch, scratch_aug (the
control) and fm (the recipe's distilled arm, with ``kdhw.train.recipe.FM_EPOCHS_FACTOR`` and the augmentation the
teacher-following check keeps), with validation kept in full and cut to the budget; the exported student
is chosen from the three as ``kdhw.train.distill.choose`` does (ties to the lower validation loss) and, for
comparison, by the rule before it (ties to scratch).  Tasks go to ``benchmarks/results/kd_recipe.jsonl``,
shared with ``fm_schedule.py``; results to ``kd_pays_recipe.{md,json,png}``.  The students (``SETS``), the
handed-over teachers and the recipe tasks are in ``benchmarks.common``, which the other benchmarks on these
students import too.

    nice -n 10 .venv/bin/python -m benchmarks.kd_pays --recipe --seeds 5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import CHECKPOINT_TAG, RECIPE_ARMS, RECIPE_JSONL, SETS, bootstrap_ci, names, parser
from benchmarks.common import recipe_tasks, run_logged, run_recipe_task, shared_teachers, shorten, task_inputs
from benchmarks.common import task_rows, write_results
from kdhw.util.atomic import save_figure

warnings.filterwarnings("ignore")

BUDGETS = (0.05, 0.10, 0.25, 1.0)
KD_GRID = ((1.0, 0.5), (1.0, 0.9), (4.0, 0.9))
PSEUDO_GRID = (0.5, 0.9)
LONG = 3  # function-matching and augmented-scratch schedules are LONG x the plain epochs
QKD_BUDGETS = (0.10, 1.0)
ARMS = ("scratch", "kd", "pseudo", "fm", "scratch_aug", "kd_semi", "kd_qkd", "kd_fresh", "scratch_2x", "exported")


# ---------------------------------------------------------------- tasks

def make_tasks(sets: list[str], seeds: int, students: list[str] | None = None, budgets: tuple[float, ...] = BUDGETS,
               arms_only: list[str] | None = None, val_budget: bool = False) -> list[dict[str, Any]]:
    """Every (set, student, budget, seed, arm[, grid point]) task; ``students``/``arms_only`` restrict the grid,
    ``val_budget`` cuts the validation split to the same labelled share (``data.labels.val``)."""
    tasks = []
    for s in sets:
        for stu in SETS[s]["students"]:
            if students and stu not in students:
                continue
            for b in budgets:
                for seed in range(seeds):
                    cell = {"set": s, "student": stu, "budget": b, "seed": seed}
                    arms: list[tuple[str, dict[str, Any]]] = [("scratch", {})]
                    arms += [("kd", {"temperature": t, "alpha": a}) for t, a in KD_GRID]
                    arms += [("pseudo", {"alpha": a}) for a in PSEUDO_GRID]
                    arms += [("fm", {}), ("scratch_aug", {})]
                    if b < 1.0:
                        arms.append(("kd_semi", {}))
                    if b in QKD_BUDGETS:
                        arms += [("kd_qkd", {}), ("scratch_2x", {})]
                    for arm, p in arms:
                        if arms_only and arm not in arms_only:
                            continue
                        vb = val_budget and b < 1.0
                        key = (f"{s}/{stu}/{b:g}/{seed}/{arm}" + "".join(f"/{k}={v:g}" for k, v in p.items())
                               + ("/val_budget" if vb else ""))
                        tasks.append({"key": key, **cell, "arm": arm, "params": p, "val_budget": vb})
    return tasks


def run_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Train one arm of one (set, student, budget, seed) cell; returns accuracies and epoch cost."""
    import torch

    from kdhw.train.distill import choose, distill, train_arm
    from kdhw.train.teacher import teacher_accuracy, teacher_logits, train_teacher

    torch.set_num_threads(1)
    spec_set = SETS[task["set"]]
    b, seed, arm = task["budget"], task["seed"], task["arm"]
    raw: dict[str, Any] = {"data": dict(spec_set["data"]), "teacher": spec_set["teacher"],
                           "student": spec_set["students"][task["student"]],
                           "distill": {"epochs": spec_set["epochs"], "seed": seed, "method": "none"}}
    if b < 1.0:
        raw["data"]["labels"] = {"fraction": b, "seed": seed, "val": bool(task.get("val_budget"))}
    cfg, data, teacher, t_train, t_unlab = task_inputs(raw, task, shared)
    d0 = dict(cfg.distill)
    aug = spec_set["augment"]
    long = {"epochs": LONG * spec_set["epochs"]}
    out: dict[str, Any] = {k: task[k] for k in ("key", "set", "student", "budget", "seed", "arm", "params")}
    t0 = time.perf_counter()

    def record(a: Any, **extra: Any) -> dict[str, Any]:
        out.update(val=a.fit.best_val_acc, test=a.test_acc, epochs=a.fit.epochs_run,
                   s_per_epoch=a.fit.seconds_per_epoch, cpu_per_epoch=a.fit.cpu_seconds_per_epoch,
                   seconds=time.perf_counter() - t0, **extra)
        return out

    if arm == "scratch":
        return record(train_arm("scratch", cfg.student, d0, data, None, "none", False))
    if arm == "scratch_2x":
        return record(train_arm("scratch", cfg.student, {**d0, "epochs": 2 * d0["epochs"]}, data, None, "none", False))
    if arm == "scratch_aug":
        return record(train_arm("scratch", cfg.student, {**d0, **aug, **long}, data, None, "none", False))
    if arm in ("kd", "pseudo"):
        method = "hinton" if arm == "kd" else "pseudo_label"
        dc = {**d0, "method": method, **task["params"]}
        return record(train_arm("kd", cfg.student, dc, data, t_train, method, False, teacher=teacher,
                                teacher_unlab=t_unlab))
    if arm == "fm":
        dc = {**d0, "method": "hinton", "temperature": 1.0, "alpha": 0.9, **aug, **long}
        a = train_arm("kd", cfg.student, dc, data, t_train, "hinton", False, teacher=teacher)
        return record(a, teacher_aug_acc=a.info.get("teacher_train_acc_augmented"))
    if arm == "kd_semi":
        tmodel, _ = train_teacher({**cfg.teacher, "seed": seed}, data, progress=False)
        tl = teacher_logits(tmodel, cfg.teacher["arch"], data)
        t_acc = teacher_accuracy(tl, data)["test"]
        best = None
        for t, al in KD_GRID:
            dc = {**d0, "method": "hinton", "temperature": t, "alpha": al}
            a = train_arm("kd", cfg.student, dc, data, tl["train"], "hinton", False, teacher=tmodel,
                          teacher_unlab=tl.get("unlab"))
            if best is None or a.fit.best_val_acc > best[0].fit.best_val_acc:
                best = (a, {"temperature": t, "alpha": al})
        assert best is not None
        return record(best[0], semi_teacher_test=t_acc, chosen=best[1])
    if arm == "kd_qkd":
        # recipe plain: with a transfer set distill() would otherwise train function matching's arms (30 x the
        # epochs, from the scratch student), not QKD's plain KD that kd_fresh and scratch_2x control for
        dc = {**d0, "method": "hinton", "temperature": 1.0, "alpha": 0.9, "init": "scratch", "recipe": "plain"}
        arms = distill(cfg.student, dc, data, t_train, False, teacher=teacher, teacher_unlab=t_unlab)
        chosen, _ = choose(arms, "kd")
        return record(arms[chosen], scratch_test=arms["scratch"].test_acc)
    raise ValueError(f"unknown arm {arm}")


# ---------------------------------------------------------------- statistics

def cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, dict[int, dict[str, Any]]]]:
    """(set, student, budget) -> arm -> seed -> the row; grid arms keep the point best on validation."""
    out: dict[tuple[str, str, float], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in rows:
        c = out.setdefault((r["set"], r["student"], r["budget"]), {})
        per_seed = c.setdefault(r["arm"], {})
        cur = per_seed.get(r["seed"])
        if cur is None or r["val"] > cur["val"]:
            per_seed[r["seed"]] = r
        if r["arm"] == "kd" and r["params"] == {"temperature": 1.0, "alpha": 0.9}:
            c.setdefault("kd_fresh", {})[r["seed"]] = r
    for c in out.values():  # what `kdhw run` exports with select: best_val (ties go to scratch)
        both = set(c.get("scratch", {})) & set(c.get("kd", {}))
        c["exported"] = {k: (c["kd"][k] if c["kd"][k]["val"] > c["scratch"][k]["val"] else c["scratch"][k])
                         for k in both}
    return out


def summarize(rows: list[dict[str, Any]], teachers: dict[str, float]) -> list[dict[str, Any]]:
    table = []
    for (s, stu, b), arms in sorted(cells(rows).items()):
        base = arms.get("scratch", {})
        t_acc = teachers[s]
        for arm in ARMS:
            if arm not in arms:
                continue
            seeds = sorted(set(arms[arm]) & set(base))
            if not seeds:
                continue
            acc = [arms[arm][k]["test"] for k in seeds]
            e: dict[str, Any] = {"set": s, "student": stu, "budget": b, "arm": arm, "n": len(seeds),
                                 "mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                                 "teacher": t_acc, "cpu_per_epoch": statistics.mean(arms[arm][k]["cpu_per_epoch"]
                                                                                    for k in seeds)}
            sc = [base[k]["test"] for k in seeds]
            if arm != "scratch":
                diffs = [100 * (a - c) for a, c in zip(acc, sc)]
                lo, hi = bootstrap_ci(diffs)
                gap = t_acc - statistics.mean(sc)
                e.update(diff=statistics.mean(diffs), ci=(lo, hi), significant=len(diffs) > 1 and (lo > 0 or hi < 0),
                         gap_closed=(statistics.mean(acc) - statistics.mean(sc)) / gap if gap > 1e-9 else None)
            for ref in {"fm": ("scratch_aug",), "kd": ("pseudo",), "kd_qkd": ("kd_fresh", "scratch_2x")}.get(arm, ()):
                both = sorted(set(arms[arm]) & set(arms.get(ref, {})))
                dd = [100 * (arms[arm][k]["test"] - arms[ref][k]["test"]) for k in both]
                if dd:
                    e.setdefault("vs", []).append({"ref": ref, "diff": statistics.mean(dd), "ci": bootstrap_ci(dd)})
            if arm == "kd_semi":
                e["semi_teacher"] = statistics.mean(arms[arm][k]["semi_teacher_test"] for k in seeds)
            table.append(e)
    return table


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Seeds: {meta['seeds']}; plain epochs: "
             + ", ".join(f"{s} {SETS[s]['epochs']}" for s in meta["sets"])
             + f"; fm and scratch_aug {LONG}x longer.  Test accuracy %, mean ± std; Δ = arm − scratch, paired, "
             "with 95 % bootstrap CI (points); gap = Δ / (teacher − scratch); * = CI excludes 0.", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in table:
        groups.setdefault((e["set"], e["student"]), []).append(e)
    for (s, stu), es in groups.items():
        lines += [f"### {s} / {stu} (handed-over teacher {100 * es[0]['teacher']:.2f} %)", "",
                  "| labels | arm | test % | Δ vs scratch [95 % CI] | gap closed | vs control [95 % CI] | CPU s/epoch |",
                  "|---|---|---|---|---|---|---|"]
        for e in es:
            d = "—" if "diff" not in e else (f"{e['diff']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]"
                                             + ("*" if e["significant"] else ""))
            g = "—" if e.get("gap_closed") is None else f"{100 * e['gap_closed']:+.0f} %"
            v = "; ".join(f"vs {r['ref']}: {r['diff']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                          for r in e.get("vs", [])) or "—"
            name = e["arm"] + (f" (teacher {100 * e['semi_teacher']:.1f} %)" if "semi_teacher" in e else "")
            lines.append(f"| {100 * e['budget']:g} % | {name} | {100 * e['mean']:.2f} ± {100 * e['std']:.2f} | "
                         f"{d} | {g} | {v} | {e['cpu_per_epoch']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def compare(rows: list[dict[str, Any]], ref_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (set, student, budget, arm): test accuracy with these rows' selection vs the reference rows'
    (same tasks, e.g. full validation labels), paired by seed, with a bootstrap CI of the difference."""
    new, old = cells(rows), cells(ref_rows)
    out = []
    for key in sorted(new):
        for arm in ARMS:
            a, b = new[key].get(arm, {}), old.get(key, {}).get(arm, {})
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            d = [100 * (a[k]["test"] - b[k]["test"]) for k in seeds]
            out.append({"set": key[0], "student": key[1], "budget": key[2], "arm": arm, "n": len(seeds),
                        "this": statistics.mean(a[k]["test"] for k in seeds),
                        "ref": statistics.mean(b[k]["test"] for k in seeds),
                        "diff": statistics.mean(d), "ci": bootstrap_ci(d),
                        "chosen_kd": (sum(a[k]["arm"] == "kd" for k in seeds) if arm == "exported" else None)})
    return out


def compare_markdown(cmp: list[dict[str, Any]]) -> str:
    lines = ["### Validation cut to the label budget vs full validation labels (same tasks, paired by seed)", "",
             "| set / student | labels | arm | test % (val cut) | test % (full val) | Δ [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for e in cmp:
        lines.append(f"| {e['set']} / {e['student']} | {100 * e['budget']:g} % | {e['arm']} | {100 * e['this']:.2f} | "
                     f"{100 * e['ref']:.2f} | {e['diff']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}] |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(e["set"], e["student"]) for e in table})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), dpi=110, squeeze=False)
    for ax, (s, stu) in zip(axes[0], groups):
        es = [e for e in table if e["set"] == s and e["student"] == stu]
        for arm in ("scratch", "kd", "pseudo", "fm", "scratch_aug", "kd_semi"):
            pts = sorted((e["budget"], e["mean"], e["std"]) for e in es if e["arm"] == arm)
            if pts:
                ax.errorbar([100 * p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                            marker="o", ms=3, capsize=2, label=arm)
        ax.axhline(100 * es[0]["teacher"], color="k", ls="--", lw=1, label="teacher")
        ax.set_xscale("log")
        ax.set_xticks([100 * b for b in BUDGETS], [f"{100 * b:g}" for b in BUDGETS])
        ax.set_xlabel("labelled share of the train split (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{s} / {stu}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------- the new default: summary

def exported(arms: dict[str, dict[str, Any]], rule: str, transfer: bool = True) -> str:
    """The arm `kdhw run` exports among scratch, scratch_aug and fm (the recipe's kd arm).  ``rule``: "keep" =
    ``kdhw.train.distill.choose_scores`` as the product runs it (with a transfer set the distilled arm is kept unless
    another arm's validation accuracy is higher by more than the split's noise); "loss" = the rule before it
    (best validation accuracy, ties to the lower validation loss, then scratch); "old" = the rule before that
    (ties to scratch, else to the first arm in training order)."""
    from kdhw.train.distill import choose_scores

    order = [a for a in RECIPE_ARMS if a in arms]
    if rule == "old":
        return max(order, key=lambda a: (arms[a]["val_acc"], a == "scratch"))
    name = {a: "kd" if a == "fm" else a for a in order}
    rows = arms[order[0]]["val_rows"]
    pick, _ = choose_scores({name[a]: (arms[a]["val_acc"], arms[a]["val_loss"]) for a in order}, "best_val",
                            transfer_rows=int(transfer and rule == "keep"), val_rows=rows)
    return "fm" if pick == "kd" else pick


def summarize_recipe(rows: list[dict[str, Any]], teachers: dict[str, float]) -> list[dict[str, Any]]:
    """Per (set, student, budget, validation variant) and arm: test accuracy, the paired difference to plain
    scratch with its CI and the gap closed with its CI; fm − scratch_aug (the teacher's own share); the
    exported student under the tie-break rule and under the old rule, and how often each picked which arm."""
    cellmap: dict[tuple[str, str, float, str], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in rows:
        cellmap.setdefault((r["set"], r["student"], r["budget"], r["val"]), {}).setdefault(r["arm"], {})[r["seed"]] = r
    table = []
    for (s, stu, b, val), arms in sorted(cellmap.items()):
        seeds = sorted(set.intersection(*(set(arms.get(a, {})) for a in RECIPE_ARMS)))
        if not seeds:
            continue
        per = {a: {k: arms[a][k] for k in seeds} for a in RECIPE_ARMS}
        for rule in ("keep", "loss", "old"):
            picks = {k: exported({a: per[a][k] for a in RECIPE_ARMS}, rule, b < 1) for k in seeds}
            per[f"exported_{rule}"] = {k: {**per[picks[k]][k], "picked": picks[k]} for k in seeds}
        sc = [per["scratch"][k]["test"] for k in seeds]
        gap = teachers[s] - statistics.mean(sc)
        for arm, by_seed in per.items():
            acc = [by_seed[k]["test"] for k in seeds]
            e: dict[str, Any] = {"set": s, "student": stu, "budget": b, "val": val, "arm": arm, "n": len(seeds),
                                 "mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                                 "teacher": teachers[s], "val_rows": by_seed[seeds[0]]["val_rows"],
                                 "cpu_seconds": statistics.mean(by_seed[k]["cpu_seconds"] for k in seeds),
                                 "epochs": statistics.mean(by_seed[k]["epochs"] for k in seeds)}
            if arm != "scratch":
                d = [100 * (a - c) for a, c in zip(acc, sc)]
                lo, hi = bootstrap_ci(d)
                e.update(diff=statistics.mean(d), ci=(lo, hi), significant=len(d) > 1 and (lo > 0 or hi < 0),
                         gap_closed=statistics.mean(d) / (100 * gap) if gap > 1e-9 else None,
                         gap_ci=(lo / (100 * gap), hi / (100 * gap)) if gap > 1e-9 else None)
            if arm == "fm":
                d = [100 * (per["fm"][k]["test"] - per["scratch_aug"][k]["test"]) for k in seeds]
                e["teacher_share"] = {"diff": statistics.mean(d), "ci": bootstrap_ci(d)}
                e["augmented"] = by_seed[seeds[0]].get("augmented")
            if arm.startswith("exported"):
                e["picked"] = {a: sum(by_seed[k]["picked"] == a for k in seeds) for a in RECIPE_ARMS}
            table.append(e)
    return table


def recipe_markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"Seeds: {meta['seeds']}; labels: {', '.join(f'{100 * b:g} %' for b in meta['budgets'])} of the train split; "
             "plain epochs " + ", ".join(f"{s} {SETS[s]['epochs']}" for s in meta["sets"]) +
             f"; `distill.recipe: auto` resolves to function matching (epochs_factor {meta['factor']:g}"
             + (f", batch x{meta['batch_factor']}" if meta.get("batch_factor", 1) != 1 else "") + ").  Test accuracy "
             "%, mean ± std; Δ = arm − plain scratch, paired, 95 % bootstrap CI (points); gap = Δ / (teacher − scratch), "
             "its CI = Δ's CI over the same gap; * = CI excludes 0.  exported_keep = what `kdhw run` ships "
             "(`kdhw.train.distill.choose_scores`): with a transfer set the distilled arm is kept unless another arm's "
             "validation accuracy is higher by more than the split's noise (one-sided 95 %); exported_loss = the rule "
             "before (best validation accuracy, ties to the lower validation loss); exported_old = ties to scratch.  "
             "All three rules read the same trained arms; the keep rule was chosen after the loss rule's results on "
             "these seeds, and checked on the earlier kd_pays files (`selection_check` below), which it was not "
             "chosen on.", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in table:
        groups.setdefault((e["set"], e["student"]), []).append(e)
    lines += ["### Summary: test accuracy %, gap closed [95 % CI]", "",
              "| student (teacher %) | labels | validation | plain scratch | scratch_aug | fm | teacher's share: fm − "
              "scratch_aug, points [95 % CI] | exported (keeps distilled) | exported (ties: val loss, before) |",
              "|---|---|---|---|---|---|---|---|---|"]

    def cell(e: dict[str, Any] | None) -> str:
        if e is None:
            return "—"
        if e.get("gap_closed") is None:
            return f"{100 * e['mean']:.1f}"
        return (f"{100 * e['mean']:.1f} ({100 * e['gap_closed']:+.0f} % [{100 * e['gap_ci'][0]:+.0f}, "
                f"{100 * e['gap_ci'][1]:+.0f}])")

    for (s, stu), es in groups.items():
        for b in sorted({e["budget"] for e in es}):
            for val in ("full", "cut"):
                row = {e["arm"]: e for e in es if e["budget"] == b and e["val"] == val}
                if not row:
                    continue
                ts = row["fm"]["teacher_share"]
                lines.append(f"| {s} {stu} ({100 * es[0]['teacher']:.1f}) | {100 * b:g} % | "
                             f"{'cut' if val == 'cut' else 'full'}, {row['scratch']['val_rows']} rows | "
                             f"{cell(row['scratch'])} | {cell(row['scratch_aug'])} | {cell(row['fm'])} | "
                             f"{ts['diff']:+.2f} [{ts['ci'][0]:+.2f}, {ts['ci'][1]:+.2f}] | {cell(row['exported_keep'])} "
                             f"| {cell(row['exported_loss'])} |")
    lines.append("")
    for (s, stu), es in groups.items():
        lines += [f"### {s} / {stu} (handed-over teacher {100 * es[0]['teacher']:.2f} %)", "",
                  "| labels | validation | arm | test % | Δ vs scratch [95 % CI] | gap closed [95 % CI] | "
                  "teacher's share: fm − scratch_aug [95 % CI] | picked (scratch/aug/fm) | CPU s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in es:
            d = "—" if "diff" not in e else (f"{e['diff']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]"
                                             + ("*" if e["significant"] else ""))
            g = ("—" if e.get("gap_closed") is None else
                 f"{100 * e['gap_closed']:+.0f} % [{100 * e['gap_ci'][0]:+.0f}, {100 * e['gap_ci'][1]:+.0f}]")
            ts = e.get("teacher_share")
            t = "—" if not ts else f"{ts['diff']:+.2f} [{ts['ci'][0]:+.2f}, {ts['ci'][1]:+.2f}]"
            pk = "—" if "picked" not in e else "/".join(str(e["picked"][a]) for a in RECIPE_ARMS)
            v = f"{'cut to budget' if e['val'] == 'cut' else 'full'} ({e['val_rows']} rows)"
            lines.append(f"| {100 * e['budget']:g} % | {v} | {e['arm']} | {100 * e['mean']:.2f} ± {100 * e['std']:.2f} | "
                         f"{d} | {g} | {t} | {pk} | {e['cpu_seconds']:.0f} |")
        lines.append("")
    for s, checks in (meta.get("teacher_check") or {}).items():
        parts = []
        for c in checks:
            if c["augment"] == "all kept":
                parts.append(f"kept {c['kept']}: teacher {100 * c['teacher_acc']:.1f} % (clean {100 * c['teacher_acc_clean']:.1f} %)")
            else:
                parts.append(f"{c['augment']} " + " -> ".join(f"{t['value']:g} ({100 * t['teacher_acc']:.1f} %)"
                                                           for t in c["tried"]))
        lines += [f"Teacher-following check ({s}, seed 0, labelled rows): " + "; ".join(parts) + ".", ""]
    lines += ceiling_markdown(table)
    lines += defaults_markdown(meta.get("defaults_check") or [])
    lines += selection_check_markdown(meta.get("selection_check") or [])
    goal = [e for e in table if e["arm"] == "exported_keep" and e["val"] == "cut"]
    if goal:
        met60 = all(e["gap_closed"] is not None and e["gap_closed"] >= 0.6 for e in goal)
        n80 = sum(e["gap_closed"] is not None and e["gap_closed"] >= 0.8 for e in goal)
        lines += ["### Goal: with validation cut to the budget, exported student", "",
                  ", ".join(f"{e['set']}/{e['student']} {100 * e['gap_closed']:+.1f} %" for e in goal) +
                  f".  >= 60 % on every student: **{'met' if met60 else 'not met'}**; >= 80 % on at least two: "
                  f"**{'met' if n80 >= 2 else 'not met'}** ({n80} of {len(goal)}).", ""]
    return "\n".join(lines)


def ceiling_markdown(table: list[dict[str, Any]], path: Path = Path("benchmarks/results/kd_pays.json")) -> list[str]:
    """What each student reaches with every label (the earlier kd_pays run, same students, teacher and splits):
    the test accuracy the goal's gap targets ask of the student at 10 % labels, beside its own ceiling."""
    if not path.is_file():
        return []
    full = [e for e in json.loads(path.read_text())["table"] if e["budget"] == 1.0 and e["arm"] != "exported"]
    rows = []
    for e in table:
        if e["arm"] != "exported_keep" or e["val"] != "cut":
            continue
        mine = [f for f in full if (f["set"], f["student"]) == (e["set"], e["student"])]
        if not mine:
            continue
        sc = next(f for f in mine if f["arm"] == "scratch")
        best = max(mine, key=lambda f: f["mean"])
        scratch = e["mean"] - e["diff"] / 100
        need = {g: scratch + g * (e["teacher"] - scratch) for g in (0.6, 0.8)}
        full_val = next((f for f in table if f["arm"] == "exported_keep" and f["val"] == "full"
                         and (f["set"], f["student"]) == (e["set"], e["student"])), None)
        fv = "—" if full_val is None else f"{100 * full_val['mean']:.1f}"
        rows.append(f"| {e['set']} {e['student']} | {100 * need[0.6]:.1f} / {100 * need[0.8]:.1f} | "
                    f"{100 * sc['mean']:.1f} | {100 * best['mean']:.1f} ({best['arm']}) | {fv} | "
                    f"{100 * e['mean']:.1f} |")
    if not rows:
        return []
    return ["### The students' own ceiling", "",
            "Test accuracy the goal asks of the exported student at 10 % labels (60 % / 80 % of the gap, budget-cut "
            "validation) beside what the same student reaches with **every** label (kd_pays.json, 5 seeds, "
            "today's code; best = the best of its arms there, whose fm and scratch_aug train 3 x the plain epochs "
            "at batch 64) and what the exported student tests at with the full validation split and with the "
            "budget-cut one.", "",
            "| student | needed for 60 % / 80 % | every label: scratch | every label: best arm | "
            "exported, full validation | exported, cut validation |",
            "|---|---|---|---|---|---|", *rows, ""]


# the fm arm under the defaults before today's: (label, epochs_factor, epoch chosen by teacher agreement?)
PREVIOUS_DEFAULTS = (("10x, best-validation epoch", 10, False), ("10x, teacher-agreement epoch", 10, True),
                     ("30x at batch 64, teacher-agreement epoch", 30, True))


def defaults_check(done: dict[str, dict[str, Any]], keys: set[str], factor: float) -> list[dict[str, Any]]:
    """The fm arm as the recipe trains it now against the same seeds under earlier defaults (another
    epochs_factor, the best-validation epoch), per cell, paired by seed; earlier rows are read from the JSONL."""
    from kdhw.train.recipe import FM_BATCH_FACTOR, FM_EPOCHS_FACTOR

    own = f"/b{FM_BATCH_FACTOR}" if FM_BATCH_FACTOR != 1 and factor == FM_EPOCHS_FACTOR else ""
    now_label = f"{factor:g}x" + (f" at batch x{FM_BATCH_FACTOR}" if own else "") + ", teacher-agreement epoch"
    configs = [c for c in PREVIOUS_DEFAULTS if c[0] != now_label]
    cells: dict[tuple[str, str, float, str], dict[str, dict[int, dict[str, Any]]]] = {}
    for k in sorted(keys):
        if "/fm/" not in k or not k.endswith(CHECKPOINT_TAG) or k not in done:
            continue
        r = done[k]
        cell = cells.setdefault((r["set"], r["student"], r["budget"], r["val"]), {})
        cell.setdefault(now_label, {})[r["seed"]] = r
        for label, f0, tagged in configs:
            old = k.replace(f"/fm/x{factor:g}{own}", f"/fm/x{f0:g}")
            old = old if tagged else old.removesuffix(CHECKPOINT_TAG)
            if old in done:
                cell.setdefault(label, {})[r["seed"]] = done[old]
    out = []
    for (s, stu, b, val), by in sorted(cells.items()):
        labels = [c[0] for c in configs if c[0] in by]
        seeds = sorted(set.intersection(*(set(by[x]) for x in [now_label, *labels])))
        if not seeds or not labels:
            continue
        now = [by[now_label][x]["test"] for x in seeds]
        e: dict[str, Any] = {"set": s, "student": stu, "budget": b, "val": val, "seeds": len(seeds),
                             "val_rows": by[now_label][seeds[0]]["val_rows"], "now": now_label,
                             "mean": {x: statistics.mean(by[x][k]["test"] for k in seeds) for x in [*labels, now_label]},
                             "epoch": {x: statistics.mean(by[x][k]["best_epoch"] for k in seeds) for x in [*labels, now_label]},
                             "diff": {}}
        for x in labels:
            d = [100 * (a - by[x][k]["test"]) for a, k in zip(now, seeds)]
            e["diff"][x] = {"diff": statistics.mean(d), "ci": bootstrap_ci(d)}
        out.append(e)
    return out


def defaults_markdown(check: list[dict[str, Any]]) -> list[str]:
    if not check:
        return []
    labels = list(check[0]["mean"])
    prev = [x for x in labels if x != check[0]["now"]]
    lines = ["### The fm arm under the defaults before: epoch rule and schedule", "",
             "The same seeds and settings but for the epochs_factor and the rule that keeps the exported epoch: the "
             "best validation accuracy (ties to the lower validation loss) or the highest agreement with the teacher "
             "on the clean transfer rows (`distill.checkpoint: teacher`, chosen on held-out seeds 5-9, "
             "`benchmarks/checkpoint_rule.py`; the factor from `benchmarks/fm_schedule.py`).  Test %, mean over "
             "seeds (mean exported epoch); Δ = now − before, paired, 95 % bootstrap CI.", "",
             "| student | validation | " + " | ".join(f"fm {x}" + (" (now)" if x == check[0]["now"] else "") for x in labels)
             + " | " + " | ".join(f"Δ vs {x}" for x in prev) + " | seeds |",
             "|---|---|" + "---|" * (len(labels) + len(prev)) + "---|"]
    for c in check:
        cols = [f"{100 * c['mean'][x]:.2f} ({c['epoch'][x]:.0f})" for x in labels]
        ds = [f"{c['diff'][x]['diff']:+.2f} [{c['diff'][x]['ci'][0]:+.2f}, {c['diff'][x]['ci'][1]:+.2f}]" for x in prev]
        lines.append(f"| {c['set']} {c['student']} | {c['val']}, {c['val_rows']} rows | " + " | ".join(cols + ds)
                     + f" | {c['seeds']} |")
    return lines + [""]


def validation_rows(s: str, budget: float, cut: bool) -> int:
    """Rows of set ``s``'s validation split as a run at ``budget`` labels sees it (cut or full); the earlier
    JSONL files did not record it.  The count does not depend on the labelling seed."""
    from kdhw.config import validate
    from kdhw.train.data import load_dataset

    cfg = validate({"data": {**SETS[s]["data"], "labels": {"fraction": budget, "seed": 0, "val": cut}}}, f"kd_pays:{s}")
    return int(len(load_dataset(cfg.data).y_val))


def selection_check(paths: tuple[Path, ...] = (Path("benchmarks/results/kd_pays.jsonl"),
                                               Path("benchmarks/results/kd_pays_valbudget.jsonl"))) -> list[dict[str, Any]]:
    """The keep rule against the loss rule on the earlier kd_pays runs (Hinton KD vs scratch, full and
    budget-cut validation), which the rule was not chosen on: mean test accuracy of what each rule exports."""
    from kdhw.flows.grid import load_done
    from kdhw.train.distill import choose_scores

    out = []
    for path in paths:
        if not path.is_file():
            continue
        cut = "valbudget" in path.name
        cells: dict[tuple[str, str, float], dict[int, dict[str, Any]]] = {}
        for r in load_done(path).values():
            if r.get("arm") in ("scratch", "kd") and r.get("params") in ({}, {"alpha": 0.5, "temperature": 1.0}):
                cells.setdefault((r["set"], r["student"], r["budget"]), {}).setdefault(r["seed"], {})[r["arm"]] = r
        for (s, stu, b), seeds in sorted(cells.items()):
            both = {k: v for k, v in seeds.items() if len(v) == 2}
            if not both or b >= 1:  # no transfer set at every label: the rules agree by construction
                continue
            rows = validation_rows(s, b, cut)
            res = {}
            for rule in ("keep", "loss"):
                acc = []
                for v in both.values():
                    pick, _ = choose_scores({a: (v[a]["val"], None) for a in ("scratch", "kd")}, "best_val",
                                            transfer_rows=int(rule == "keep"), val_rows=rows)
                    acc.append(v[pick]["test"])
                res[rule] = statistics.mean(acc)
            out.append({"file": path.name, "set": s, "student": stu, "budget": b, "val_rows": rows, "seeds": len(both),
                        "keep": res["keep"], "loss": res["loss"]})
    return out


def selection_check_markdown(check: list[dict[str, Any]]) -> list[str]:
    if not check:
        return []
    d = [c["keep"] - c["loss"] for c in check]
    lines = ["### Selection check on earlier runs (Hinton KD vs scratch; not used to choose the rule)", "",
             f"Mean test accuracy exported, keep rule − loss rule: {100 * statistics.mean(d):+.2f} points over "
             f"{len(d)} cells (better in {sum(x > 0 for x in d)}, equal in {sum(x == 0 for x in d)}, worse in "
             f"{sum(x < 0 for x in d)}).", "",
             "| file | student | labels | validation rows | keep % | loss % |", "|---|---|---|---|---|---|"]
    for c in check:
        lines.append(f"| {c['file']} | {c['set']} {c['student']} | {100 * c['budget']:g} % | {c['val_rows']} | "
                     f"{100 * c['keep']:.2f} | {100 * c['loss']:.2f} |")
    return lines + [""]


def recipe_plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(e["set"], e["student"]) for e in table})
    arms = ("scratch", "scratch_aug", "fm", "exported_keep")
    fig, axes = plt.subplots(1, len(groups), figsize=(4.0 * len(groups), 3.6), dpi=110, squeeze=False)
    for ax, (s, stu) in zip(axes[0], groups):
        es = [e for e in table if (e["set"], e["student"]) == (s, stu)]
        for j, val in enumerate(("full", "cut")):
            pts = [next((e for e in es if e["arm"] == a and e["val"] == val), None) for a in arms]
            xs = [i + (j - 0.5) * 0.3 for i, p in enumerate(pts) if p]
            ax.bar(xs, [100 * p["mean"] for p in pts if p], width=0.3, yerr=[100 * p["std"] for p in pts if p],
                   capsize=2, label=f"validation {'cut to budget' if val == 'cut' else 'full'}")
        ax.axhline(100 * es[0]["teacher"], color="k", ls="--", lw=1, label="teacher")
        ax.set_xticks(range(len(arms)), ["scratch", "scratch_aug", "fm", "exported"], rotation=20)
        lo = min(100 * e["mean"] for e in es) - 10
        ax.set_ylim(max(0, lo), 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{s} / {stu}, 10 % labels", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def teacher_check(s: str, teachers: dict[str, Any], budget: float = 0.1) -> list[dict[str, Any]]:
    """The teacher-following check as the recipe runs it for seed 0 of set ``s`` (with every value tried)."""
    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.recipe import resolve
    from kdhw.train.teacher import build_teacher

    cfg = validate({"data": {**SETS[s]["data"], "labels": {"fraction": budget, "seed": 0}}, "teacher": SETS[s]["teacher"],
                    "distill": {"epochs": SETS[s]["epochs"], "seed": 0}}, f"kd_pays:{s}")
    data = load_dataset(cfg.data)
    teacher = build_teacher(cfg.teacher, data.shape, data.n_classes)
    teacher.load_state_dict(teachers[s]["state"])
    return resolve(cfg.distill, data, teacher.eval()).teacher_check


def main_recipe(a: argparse.Namespace, sets: list[str]) -> None:
    """`--recipe`: the new default at the label budgets given (default 10 %), full and budget-cut validation."""
    from kdhw.flows.grid import load_done
    from kdhw.train.recipe import FM_BATCH_FACTOR, FM_EPOCHS_FACTOR

    t0 = time.perf_counter()
    teachers = shared_teachers(sets)
    budgets = tuple(float(b) for b in names(a.budgets)) or (0.1,)
    factor = float(a.factor) if a.factor else FM_EPOCHS_FACTOR
    factor = int(factor) if float(factor).is_integer() else factor
    vals = tuple(names(a.vals))
    tasks = recipe_tasks(sets, a.seeds, names(a.students) or None, budgets, (factor,), vals, RECIPE_ARMS, teachers)
    # seed by seed, budget-cut validation first (the issue's goal is stated on it), cheap arms before long ones:
    # an interrupted run has whole cells, in both validation variants, for as many seeds as it got through
    rank = {"scratch": 0, "fm": 1, "scratch_aug": 2}
    tasks.sort(key=lambda t: (t["seed"], t["val"] != "cut", rank[t["arm"]]))
    jsonl = Path(a.jsonl if a.jsonl != "benchmarks/results/kd_pays.jsonl" else RECIPE_JSONL)
    run_logged(run_recipe_task, tasks, teachers, jsonl, a.workers, a.address)
    keys = {t["key"] for t in tasks}
    done = load_done(jsonl)
    rows = [r for k, r in done.items() if k in keys]
    table = summarize_recipe(rows, {s: teachers[s]["acc"]["test"] for s in sets})

    meta = {"seeds": a.seeds, "sets": sets, "budgets": budgets, "factor": factor, "vals": vals,
            "batch_factor": FM_BATCH_FACTOR if factor == FM_EPOCHS_FACTOR else 1,
            "teachers": {s: teachers[s]["acc"] for s in sets}, "wall_seconds": time.perf_counter() - t0,
            # the CPU its arms took when they were trained (a rerun that finds every task done only re-summarizes)
            "training_cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in rows),
            "jsonl": str(jsonl), "quick": a.quick, "teacher_check": {s: teacher_check(s, teachers) for s in sets},
            "selection_check": selection_check(), "defaults_check": defaults_check(done, keys, factor)}
    md = recipe_markdown(table, meta)
    print(md)
    out = Path(a.out if a.out != "benchmarks/results/kd_pays" else "benchmarks/results/kd_pays_recipe")
    write_results(out, md, meta, table, recipe_plot)
    print(f"total {time.perf_counter() - t0:.0f} s -> {out}.md/.json/.png")


def main() -> None:
    from kdhw.flows.grid import load_done

    ap = parser(__doc__, seeds=5, out="benchmarks/results/kd_pays")
    ap.add_argument("--address", default=None, help="an existing Ray cluster (default: a local Ray)")
    ap.add_argument("--jsonl", default="benchmarks/results/kd_pays.jsonl")
    ap.add_argument("--quick", action="store_true", help="2-epoch smoke run of the whole grid (numbers meaningless)")
    ap.add_argument("--students", default="", help="comma list of student names to keep (default: all)")
    ap.add_argument("--budgets", default="", help="comma list of label budgets (default: 0.05,0.1,0.25,1)")
    ap.add_argument("--arms", default="", help="comma list of task arms to run (default: all)")
    ap.add_argument("--val-budget", action="store_true",
                    help="cut the validation split to the same labelled share (data.labels.val: true)")
    ap.add_argument("--compare-jsonl", default="",
                    help="a JSONL of the same tasks with full validation labels: print the paired difference")
    ap.add_argument("--recipe", action="store_true",
                    help="the new default (distill.recipe: auto): plain scratch, scratch_aug, fm and the exported "
                         "student, at --budgets (default 0.1) with --vals full,cut; results kd_pays_recipe.*")
    ap.add_argument("--vals", default="full,cut", help="--recipe: validation variants (full, cut)")
    ap.add_argument("--factor", default="", help="--recipe: epochs_factor (default: kdhw.train.recipe.FM_EPOCHS_FACTOR)")
    a = ap.parse_args()
    sets = names(a.sets)
    if a.quick:
        shorten(sets, 2)
    if a.recipe:
        main_recipe(a, sets)
        return
    t0 = time.perf_counter()
    teachers = shared_teachers(sets)
    budgets = tuple(float(b) for b in names(a.budgets)) or BUDGETS
    tasks = make_tasks(sets, a.seeds, names(a.students) or None, budgets, names(a.arms) or None, a.val_budget)
    run_logged(run_task, tasks, teachers, a.jsonl, a.workers, a.address)
    rows = task_rows(a.jsonl, tasks)
    table = summarize(rows, {s: teachers[s]["acc"]["test"] for s in sets})
    meta = {"seeds": a.seeds, "sets": sets, "kd_grid": KD_GRID, "pseudo_grid": PSEUDO_GRID, "long": LONG,
            "budgets": budgets, "val_budget": a.val_budget, "wall_seconds": time.perf_counter() - t0,
            "teachers": {s: teachers[s]["acc"] for s in sets}}
    md = markdown(table, meta)
    if a.compare_jsonl:
        ref = [r for r in load_done(Path(a.compare_jsonl)).values() if r.get("arm") in {t["arm"] for t in tasks}]
        meta["compare"] = compare(rows, ref)
        md += "\n" + compare_markdown(meta["compare"])
    print(md)
    out = Path(a.out)
    write_results(out, md, meta, table, plot)
    print(f"total {time.perf_counter() - t0:.0f} s -> {out}.md/.json/.png")


if __name__ == "__main__":
    main()
