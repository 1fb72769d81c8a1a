"""Default student on digits: teacher / scratch / KD accuracy over 3 seeds, and the time of each stage.

Runs the real pipeline (`kdhw.pipeline.run`) once per seed (teacher seed and student seed both set; the
data split stays fixed) and prints mean ± std of test accuracy plus per-stage wall time.  Usage:

    .venv/bin/python benchmarks/spine.py [--seeds 3] [--out benchmarks/results/spine.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> None:
    from kdhw.config import load_config
    from kdhw.pipeline import run

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/spine.json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for s in range(a.seeds):
            cfg = load_config(None)
            cfg.teacher["seed"] = s
            cfg.distill["seed"] = s
            t = time.perf_counter()
            rep = run(cfg, Path(td) / f"seed{s}", progress=False, log=lambda *_: None)
            total = time.perf_counter() - t
            rows.append({"seed": s, "teacher": rep["teacher"]["test_acc"],
                         "scratch": rep["students"]["scratch"]["test_acc"], "kd": rep["students"]["kd"]["test_acc"],
                         "chosen": rep["chosen"]["arm"], "bit_exact": rep["verify"]["bit_exact"],
                         "verify_rows": rep["verify"]["rows"], "timings_s": rep["timings_s"], "total_s": total})
            print(f"seed {s}: teacher {100 * rows[-1]['teacher']:.2f}  scratch {100 * rows[-1]['scratch']:.2f}  "
                  f"kd {100 * rows[-1]['kd']:.2f}  exported {rows[-1]['chosen']}  bit-exact {rows[-1]['bit_exact']} "
                  f"({rows[-1]['verify_rows']} rows)  {total:.0f} s", flush=True)

    def ms(key: str) -> str:
        v = [100 * r[key] for r in rows]
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    print(f"\n| model | test accuracy (%), mean ± std over {len(rows)} seeds |")
    print("|---|---|")
    for k in ("teacher", "scratch", "kd"):
        print(f"| {k} | {ms(k)} |")
    diffs = [100 * (r["kd"] - r["scratch"]) for r in rows]
    print(f"\nKD − scratch (paired, per seed): {', '.join(f'{d:+.2f}' for d in diffs)} points")
    print("\n| stage | seconds (mean over seeds) |")
    print("|---|---|")
    for st in rows[0]["timings_s"]:
        print(f"| {st} | {statistics.mean(r['timings_s'][st] for r in rows):.1f} |")
    print(f"| total `kdhw run` | {statistics.mean(r['total_s'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
