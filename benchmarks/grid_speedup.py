"""Wall time of one sweep grid run sequentially and on a local Ray with 2 workers (``kdhw.flows.grid``).

The grid: the default digits student (MLP 64-8-10, w4a4), ``distill.temperature`` in {1, 2, 4, 8} x 2 seeds,
60 epochs per arm: 2 scratch tasks + 8 distilled tasks, each a few seconds of brevitas QAT on one thread.
One teacher is trained first and handed to both runs as a file, so neither timing includes it; each run
writes into a fresh folder (nothing resumed).  The Ray timing includes starting Ray and its workers
(reported separately), because a user pays for it.  Both runs must produce the same accuracies (the
tasks are fully seeded): the script checks that, since a speed-up of a different computation means nothing.

The machine is shared: the load average before and after each run is recorded, and other jobs on the
same cores lower the speed-up.

    .venv/bin/python -m benchmarks.grid_speedup [--epochs 60] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

VALUES = [1, 2, 4, 8]


def _runs(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["value"], r["seed"], r["scratch_test"], r["kd_test"]) for r in res["runs"]]


def main() -> None:
    import torch

    from kdhw.config import load_config
    from kdhw.flows.sweep import config_with, run_sweep
    from kdhw.train.data import load_dataset
    from kdhw.train.teacher import save_teacher, train_teacher
    from kdhw.util.atomic import write_json, write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="alternate sequential and Ray runs this many times")
    ap.add_argument("--out", default="benchmarks/results/grid_speedup")
    a = ap.parse_args()
    torch.set_num_threads(1)

    cfg = config_with(load_config(None), "distill.epochs", a.epochs)
    work = Path(tempfile.mkdtemp(prefix="grid_speedup."))
    data = load_dataset(cfg.data, cfg.source)
    teacher, _ = train_teacher(cfg.teacher, data, progress=False)
    tpath = work / "teacher.pt"
    save_teacher(teacher, cfg.teacher, data.shape, data.n_classes, tpath)
    n_tasks = a.seeds + a.seeds * len(VALUES)
    print(f"grid: distill.temperature in {VALUES} x {a.seeds} seeds, {a.epochs} epochs: {n_tasks} tasks "
          f"({a.seeds} scratch + {a.seeds * len(VALUES)} distilled); {os.cpu_count()} cores", flush=True)

    runs: list[dict[str, Any]] = []
    ref = None
    for rep in range(a.repeats):
        for mode, workers in (("sequential", 1), ("ray", a.workers)):
            out = work / f"{mode}{rep}"
            load0 = os.getloadavg()
            t = time.perf_counter()
            res = run_sweep(cfg, "distill.temperature", VALUES, out, seeds=a.seeds, teacher_path=str(tpath),
                            log=lambda *_: None, workers=workers)
            wall = time.perf_counter() - t
            g = res["grid"]
            assert g["executed"] == n_tasks and g["mode"] == mode, g
            ref = ref or _runs(res)
            same = _runs(res) == ref
            runs.append({"mode": mode, "workers": workers, "repeat": rep, "wall_s": wall,
                         "ray_startup_s": g["ray_startup_s"], "same_results": same,
                         "loadavg_1min_before": load0[0], "loadavg_1min_after": os.getloadavg()[0]})
            print(f"{mode:10s} workers={workers}: {wall:6.1f} s wall (Ray start-up {g['ray_startup_s']:.1f} s); "
                  f"same results as the first run: {same}; load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)

    seq = [r["wall_s"] for r in runs if r["mode"] == "sequential"]
    par = [r for r in runs if r["mode"] == "ray"]
    s_mean = sum(seq) / len(seq)
    p_mean = sum(r["wall_s"] for r in par) / len(par)
    p_nostart = sum(r["wall_s"] - r["ray_startup_s"] for r in par) / len(par)
    summary = {"grid": {"param": "distill.temperature", "values": VALUES, "seeds": a.seeds, "epochs": a.epochs,
                        "tasks": n_tasks, "student": "MLP 64-8-10 w4a4 (default config)", "data": "digits"},
               "cores": os.cpu_count(), "workers": a.workers, "runs": runs,
               "sequential_wall_s": s_mean, "ray_wall_s": p_mean, "speedup": s_mean / p_mean,
               "speedup_excluding_ray_startup": s_mean / p_nostart,
               "all_results_identical": all(r["same_results"] for r in runs)}
    md = "\n".join([
        f"# Grid speed-up: {a.workers} Ray workers vs sequential", "",
        f"Sweep of distill.temperature over {VALUES}, {a.seeds} seeds, {a.epochs} epochs per arm, default digits "
        f"student: {n_tasks} tasks.  {os.cpu_count()}-core machine shared with other jobs (load average in "
        "the table); the teacher is trained once beforehand and not timed.", "",
        "| run | workers | wall (s) | of which Ray start-up (s) | identical results | load avg before → after |",
        "|---|---|---|---|---|---|",
        *[f"| {r['mode']} #{r['repeat']} | {r['workers']} | {r['wall_s']:.1f} | "
          f"{r['ray_startup_s']:.1f} | {'yes' if r['same_results'] else 'NO'} | "
          f"{r['loadavg_1min_before']:.2f} → {r['loadavg_1min_after']:.2f} |" for r in runs],
        "", f"**Speed-up {s_mean / p_mean:.2f}×** ({s_mean:.1f} s → {p_mean:.1f} s wall, Ray start-up included); "
            f"{s_mean / p_nostart:.2f}× on the tasks alone.", ""])
    write_json(Path(a.out).with_suffix(".json"), summary)
    write_text(Path(a.out).with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
