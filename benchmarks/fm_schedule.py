"""How patient should function matching be?  Accuracy and CPU cost of 1x, 3x, 10x, 30x the plain epochs.

The four `kd_pays` students (digits MLP 64-8-10 w4 and 64-16-10 w2; mnist1d Conv1D 4-8 and 8-16 w4) at
10 % labels with the handed-over teacher, the recipe `kdhw run` resolves there (`distill.recipe: auto` ->
function matching, augmentation checked against the teacher), trained with `distill.epochs_factor` in
FACTORS: the distilled arm (fm) and its control (scratch_aug: the same augmentation and schedule, labels
only), paired by seed with plain scratch.  Validation keeps all its labels here, so the curve measures
training, not selection noise.

Every (student, seed, arm, factor) is a task on `kdhw.flows.grid`, appended to `benchmarks/results/kd_recipe.jsonl`
(shared with `kd_pays.py --recipe`, so the tasks both need run once; keys carry the teacher's digest).
An interrupted run resumes.

The default `FM_EPOCHS_FACTOR` in `kdhw/recipe.py` is set from this curve by a rule fixed before the run:
the smallest factor whose fm validation accuracy, averaged over the four students, is within
CHOICE_TOLERANCE points of the best factor's.

    nice -n 10 .venv/bin/python -m benchmarks.fm_schedule [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import RECIPE_JSONL, SETS, bootstrap_ci, names, parser, recipe_tasks, run_recipe_task
from benchmarks.common import shared_teachers, shorten, task_rows
from kdhw.util.atomic import save_figure

warnings.filterwarnings("ignore")

FACTORS = (1, 3, 10, 30)
CHOICE_TOLERANCE = 1.0  # points of validation accuracy


def order(tasks: list[dict[str, Any]], seeds_first: int) -> list[dict[str, Any]]:
    """Plain scratch first (cheap), then fm, then scratch_aug, each for the first ``seeds_first`` seeds
    before any later seed: an interrupted run has whole curves for as many seeds as it got through."""
    rank = {"scratch": 0, "fm": 1, "scratch_aug": 2}
    return sorted(tasks, key=lambda t: (t["seed"] >= seeds_first, rank[t["arm"]], t["seed"], t["factor"] or 0))


def summarize(rows: list[dict[str, Any]], teachers: dict[str, float]) -> list[dict[str, Any]]:
    """Per (set, student, arm, factor): test and validation accuracy, paired Δ vs plain scratch with a
    bootstrap CI, gap closed, fm − scratch_aug, CPU seconds per arm."""
    by: dict[tuple[str, str], dict[tuple[str, Any], dict[int, dict[str, Any]]]] = {}
    for r in rows:
        by.setdefault((r["set"], r["student"]), {}).setdefault((r["arm"], r["factor"]), {})[r["seed"]] = r
    table = []
    for (s, stu), cells in sorted(by.items()):
        base = cells.get(("scratch", None), {})
        for (arm, f), per_seed in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            seeds = sorted(set(per_seed) & set(base))
            if not seeds:
                continue
            acc = [per_seed[k]["test"] for k in seeds]
            sc = statistics.mean(base[k]["test"] for k in seeds)
            e: dict[str, Any] = {"set": s, "student": stu, "arm": arm, "factor": f, "n": len(seeds),
                                 "test": statistics.mean(acc), "test_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                                 "val": statistics.mean(per_seed[k]["val_acc"] for k in seeds),
                                 "cpu_seconds": statistics.mean(per_seed[k]["cpu_seconds"] for k in seeds),
                                 "epochs": statistics.mean(per_seed[k]["epochs"] for k in seeds),
                                 "teacher": teachers[s], "scratch": sc}
            if arm != "scratch":
                d = [100 * (per_seed[k]["test"] - base[k]["test"]) for k in seeds]
                e.update(diff=statistics.mean(d), ci=bootstrap_ci(d),
                         gap_closed=(e["test"] - sc) / (teachers[s] - sc) if teachers[s] > sc else None)
            ctrl = cells.get(("scratch_aug", f), {}) if arm == "fm" else {}
            both = sorted(set(per_seed) & set(ctrl))
            if both:
                d = [100 * (per_seed[k]["test"] - ctrl[k]["test"]) for k in both]
                e["vs_scratch_aug"] = {"n": len(both), "diff": statistics.mean(d), "ci": bootstrap_ci(d)}
            table.append(e)
    return table


def choose_factor(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule in the module docstring, on fm's mean validation accuracy over the students that have every
    factor."""
    fm = [e for e in table if e["arm"] == "fm"]
    students = {(e["set"], e["student"]) for e in fm}
    factors = sorted({e["factor"] for e in fm})
    complete = [st for st in students if {e["factor"] for e in fm if (e["set"], e["student"]) == st} == set(factors)]
    if not complete:
        return {}
    mean_val = {f: statistics.mean(100 * e["val"] for e in fm if e["factor"] == f and (e["set"], e["student"]) in complete)
                for f in factors}
    best = max(mean_val.values())
    chosen = min(f for f in factors if mean_val[f] >= best - CHOICE_TOLERANCE)
    return {"mean_val_by_factor": mean_val, "students": sorted(complete), "tolerance_points": CHOICE_TOLERANCE,
            "chosen": chosen}


def markdown(table: list[dict[str, Any]], choice: dict[str, Any], meta: dict[str, Any]) -> str:
    from kdhw.train.recipe import FM_EPOCHS_FACTOR

    lines = [f"# Function-matching schedule: 1x, 3x, 10x, 30x the plain epochs ({meta['seeds']} seeds, 10 % labels, "
             "full validation)", "",
             "Plain epochs: " + ", ".join(f"{s} {SETS[s]['epochs']}" for s in meta["sets"]) +
             ".  Test accuracy %, mean ± std over seeds; Δ = arm − plain scratch, paired, 95 % bootstrap CI; gap = "
             "Δ / (teacher − scratch); CPU s = process CPU seconds per arm (one core; the machine was shared).", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in table:
        groups.setdefault((e["set"], e["student"]), []).append(e)
    factors = sorted({e["factor"] for e in table if e["arm"] == "fm"})
    lines += ["## Summary: fm test accuracy % (gap closed) and CPU seconds per arm, by epochs_factor", "",
              "| student | teacher | plain scratch | " + " | ".join(f"fm {f:g}x" for f in factors) + " | seeds |",
              "|---|---|---|" + "---|" * len(factors) + "---|"]
    for (s, stu), es in groups.items():
        sc = next((e for e in es if e["arm"] == "scratch"), None)
        cells = []
        for f in factors:
            e = next((e for e in es if e["arm"] == "fm" and e["factor"] == f), None)
            cells.append("—" if e is None else f"{100 * e['test']:.1f} ({100 * (e['gap_closed'] or 0):+.0f} %), "
                                                f"{e['cpu_seconds']:.0f} s")
        n = min((e["n"] for e in es if e["arm"] == "fm"), default=0)
        lines.append(f"| {s} {stu} | {100 * es[0]['teacher']:.1f} | "
                     + ("—" if sc is None else f"{100 * sc['test']:.1f}") + " | " + " | ".join(cells) + f" | {n} |")
    lines.append("")
    for (s, stu), es in groups.items():
        sc = next((e for e in es if e["arm"] == "scratch"), None)
        lines += [f"## {s} / {stu} (teacher {100 * es[0]['teacher']:.2f} %, plain scratch "
                  + (f"{100 * sc['test']:.2f} ± {100 * sc['test_std']:.2f} %, {sc['cpu_seconds']:.0f} CPU s)" if sc else "—)"),
                  "", "| arm | × epochs | epochs | test % | val % | Δ vs scratch [95 % CI] | gap closed | "
                  "fm − scratch_aug [95 % CI] | CPU s | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
        for e in es:
            if e["arm"] == "scratch":
                continue
            d = f"{e['diff']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]"
            g = "—" if e.get("gap_closed") is None else f"{100 * e['gap_closed']:+.0f} %"
            v = e.get("vs_scratch_aug")
            vs = "—" if not v else f"{v['diff']:+.2f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}]"
            lines.append(f"| {e['arm']} | {e['factor']:g} | {e['epochs']:.0f} | {100 * e['test']:.2f} ± "
                         f"{100 * e['test_std']:.2f} | {100 * e['val']:.2f} | {d} | {g} | {vs} | {e['cpu_seconds']:.0f} | "
                         f"{e['n']} |")
        lines.append("")
    if choice:
        lines += ["## Default", "", "fm validation accuracy averaged over " + ", ".join(f"{a}/{b}" for a, b in choice["students"])
                  + ": " + ", ".join(f"{f:g}x {v:.2f} %" for f, v in choice["mean_val_by_factor"].items())
                  + f".  Rule fixed before the run: the smallest factor within {choice['tolerance_points']:g} point of "
                  f"the best -> **{choice['chosen']:g}x**.  `FM_EPOCHS_FACTOR` in kdhw/recipe.py is "
                  f"**{FM_EPOCHS_FACTOR:g}x**" + ("." if choice["chosen"] == FM_EPOCHS_FACTOR else
                  " (not the rule's choice: see the test accuracy and CPU seconds per factor above)."), ""]
    return "\n".join(lines)


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(e["set"], e["student"]) for e in table})
    fig, axes = plt.subplots(2, len(groups), figsize=(4.0 * len(groups), 6.4), dpi=110, squeeze=False,
                             sharex=True)
    for j, (s, stu) in enumerate(groups):
        es = [e for e in table if (e["set"], e["student"]) == (s, stu)]
        ax, cx = axes[0][j], axes[1][j]
        for arm, mk in (("fm", "o"), ("scratch_aug", "s")):
            pts = sorted((e["factor"], e["test"], e["test_std"], e["cpu_seconds"]) for e in es if e["arm"] == arm)
            if pts:
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                            marker=mk, ms=4, capsize=2, label=arm)
                cx.plot([p[0] for p in pts], [p[3] for p in pts], marker=mk, ms=4, label=arm)
        sc = next((e for e in es if e["arm"] == "scratch"), None)
        if sc:
            ax.axhline(100 * sc["test"], color="gray", lw=1, label="plain scratch (1x)")
        ax.axhline(100 * es[0]["teacher"], color="k", ls="--", lw=1, label="teacher")
        ax.set_xscale("log")
        ax.set_title(f"{s} / {stu}", fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        cx.set_xscale("log")
        cx.set_yscale("log")
        cx.set_xticks(list(FACTORS), [f"{f}x" for f in FACTORS])
        cx.set_xlabel("epochs_factor (x plain epochs)")
        cx.set_ylabel("CPU seconds per arm")
        cx.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    from kdhw.flows.grid import run_tasks
    from kdhw.util.atomic import write_json, write_text

    ap = parser(__doc__, seeds=3, out="benchmarks/results/fm_schedule")
    ap.add_argument("--students", default="", help="comma list of student names (default: all four)")
    ap.add_argument("--factors", default=",".join(map(str, FACTORS)))
    ap.add_argument("--arms", default="scratch,fm,scratch_aug")
    ap.add_argument("--address", default=None)
    ap.add_argument("--jsonl", default=RECIPE_JSONL)
    ap.add_argument("--quick", action="store_true", help="2-epoch smoke run (numbers meaningless)")
    ap.add_argument("--no-run", action="store_true", help="only summarize the tasks already in --jsonl")
    a = ap.parse_args()
    sets = names(a.sets)
    if a.quick:
        shorten(sets, 1)
    t0 = time.perf_counter()
    teachers = shared_teachers(sets)
    factors = tuple(float(f) if "." in f else int(f) for f in names(a.factors))
    tasks = recipe_tasks(sets, a.seeds, names(a.students) or None, (0.1,), factors, ("full",), tuple(names(a.arms)),
                         teachers)
    tasks = order(tasks, 3)
    print(f"{len(tasks)} tasks; results append to {a.jsonl}", flush=True)
    if not a.no_run:
        run_tasks(run_recipe_task, tasks, shared=teachers, jsonl=Path(a.jsonl), workers=a.workers, address=a.address)
    rows = task_rows(a.jsonl, tasks)
    table = summarize(rows, {s: teachers[s]["acc"]["test"] for s in sets})
    choice = choose_factor(table)
    meta = {"seeds": a.seeds, "sets": sets, "factors": factors, "budget": 0.1, "validation": "full",
            "tasks": len(tasks), "tasks_done": len(rows),
            "teachers": {s: teachers[s]["acc"] for s in sets}, "wall_seconds": time.perf_counter() - t0,
            "jsonl": a.jsonl, "quick": a.quick}
    md = markdown(table, choice, meta)
    print(md)
    out = Path(a.out)
    write_text(out.with_suffix(".md"), md)
    write_json(out.with_suffix(".json"), {"meta": meta, "table": table, "choice": choice})
    plot(table, out.with_suffix(".png"))
    print(f"total {time.perf_counter() - t0:.0f} s -> {out}.md/.json/.png")


if __name__ == "__main__":
    main()
