"""The default `kdhw run` on digits, 3 seeds: accuracy, stage times and the per-board hardware figures.

Runs the real pipeline (`kdhw.flows.run.run`, the embedded default config and its student, hls4ml project,
RTL, verification, open synthesis for pynq-z2, ulx3s-85f and icebreaker) once per seed (teacher and student
seed both set; the data split stays fixed) and records, per seed: teacher / scratch / KD test accuracy, the
exported arm, bit-exactness, each stage's wall time, the run's wall and CPU time (this process and the
tools it starts: g++, yosys, nextpnr, Icarus), and every board's figures from `hw_report.json`.

Each seed is a `kdhw.flows.grid` task: finished seeds are appended to `spine.jsonl` and skipped on a rerun, so an
interrupted benchmark resumes.  The summary goes to `spine.json` and `spine.md` (tables and the figures the
README quotes; `benchmarks/readme_results.py` renders the README's blocks from `spine.json`).

    .venv/bin/python -m benchmarks.spine [--seeds 3] [--out-dir benchmarks/results]
    .venv/bin/python -m benchmarks.spine --smoke --out-dir /tmp/spine   # minutes -> seconds, for development
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, mean_std

VERSION = "spine-v6"  # part of every task key: a change to what a task records or trains reruns it (v6: ReLU leak)


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _board(e: dict[str, Any]) -> dict[str, Any]:
    s, lat, io = e["synthesis"] or {}, e["latency"], e["io"]
    return {"board": e["board"], "lut_estimate": e["estimate"]["lut"], "lut": s.get("lut"), "ff": s.get("ff"),
            "lut_util_pct": e["utilization_pct"]["lut"], "basis": e["utilization_basis"], "fits": e["fits"],
            "fmax_mhz": lat["fmax_mhz"], "meets_board_clock": lat["meets_board_clock"],
            "clock_mhz": e["clock_mhz"], "latency_cycles": lat["cycles"], "ns_at_board_clock": lat["ns_at_board_clock"],
            "pins_needed": io["pins_needed_parallel"], "pins": io["pins"],
            "serialization_factor": io["serialization_factor"], "synth_seconds": s.get("seconds"),
            "error": s.get("error")}


def run_seed(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """One `kdhw run` of the default config with teacher and student seed ``task['seed']``."""
    from kdhw.config import load_config, validate
    from kdhw.flows.run import run

    cfg = load_config(None) if not shared["smoke"] else validate(shared["smoke"], "<smoke>")
    cfg.teacher["seed"] = task["seed"]
    cfg.distill["seed"] = task["seed"]
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / f"seed{task['seed']}"
        t, c, load0 = time.perf_counter(), _cpu_seconds(), os.getloadavg()[0]
        rep = run(cfg, out, progress=False, log=lambda *_: None)
        wall, cpu = time.perf_counter() - t, _cpu_seconds() - c
        hw = json.loads((out / "hw_report.json").read_text()) if (out / "hw_report.json").is_file() else None
    return {"seed": task["seed"], "teacher": rep["teacher"]["test_acc"],
            "scratch": rep["students"]["scratch"]["test_acc"], "kd": rep["students"]["kd"]["test_acc"],
            "chosen": rep["chosen"]["arm"], "bit_exact": rep["verify"]["bit_exact"], "verify_rows": rep["verify"]["rows"],
            "sim_rows": rep["verify"]["levels"].get("rtl_sim", {}).get("rows"),
            "teacher_params": rep["teacher"]["params"], "student_params": rep["student"]["params"],
            "timings_s": rep["timings_s"], "total_s": wall, "cpu_s": cpu,
            "load_avg_before_after": [load0, os.getloadavg()[0]],
            "boards": [_board(e) for e in hw["boards"]] if hw else []}


def _cpu_model() -> str:
    """", CPU name" for the report line (see kdhw.util.runtime.cpu_model for why it is recorded)."""
    from kdhw.util.runtime import cpu_model

    name = cpu_model()
    return f", {name}" if name else ""


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the README quotes, computed once here so the README and spine.md cannot disagree."""
    acc = {k: mean_std([100 * r[k] for r in rows]) for k in ("teacher", "scratch", "kd")}
    totals = [r["total_s"] for r in rows]
    stages = {st: statistics.mean(r["timings_s"][st] for r in rows) for st in rows[0]["timings_s"]}
    boards: dict[str, dict[str, Any]] = {}
    for r in rows:
        for b in r["boards"]:
            e = boards.setdefault(b["board"], {"lut": [], "fmax_mhz": [], "fits": []})
            e["lut"].append(b["lut"])
            e["fmax_mhz"].append(b["fmax_mhz"])
            e["fits"].append(b["fits"])
    return {
        "seeds": len(rows), "accuracy_mean_std": acc,
        "kd_minus_scratch_points": [100 * (r["kd"] - r["scratch"]) for r in rows],
        "chosen": [r["chosen"] for r in rows], "all_bit_exact": all(r["bit_exact"] for r in rows),
        "verify_rows": sorted({r["verify_rows"] for r in rows}), "sim_rows": sorted({r["sim_rows"] for r in rows}),
        "stage_mean_s": stages, "total_mean_s": statistics.mean(totals), "total_min_s": min(totals),
        "total_max_s": max(totals), "cpu_mean_s": statistics.mean(r["cpu_s"] for r in rows),
        "report_share_pct": 100 * stages.get("report", 0.0) / sum(stages.values()),
        "cpu_min_s": min(r["cpu_s"] for r in rows), "cpu_max_s": max(r["cpu_s"] for r in rows),
        "load_avg": [x for r in rows for x in r.get("load_avg_before_after", [])],
        "report_min_s": min(r["timings_s"].get("report", 0.0) for r in rows),
        "report_max_s": max(r["timings_s"].get("report", 0.0) for r in rows),
        "boards_over_seeds": {k: {"lut_min": min(v["lut"]) if None not in v["lut"] else None,
                                  "lut_max": max(v["lut"]) if None not in v["lut"] else None,
                                  "fmax_min": min((f for f in v["fmax_mhz"] if f), default=None),
                                  "fmax_max": max((f for f in v["fmax_mhz"] if f), default=None),
                                  "fits": sum(v["fits"]), "seeds": len(v["fits"])}
                              for k, v in boards.items()},
    }


def _min_s(s: float) -> str:
    return f"{int(s // 60)} min {round(s % 60):02d} s"


# ---------------------------------------------------------------- tables (also rendered into the README)

def _student_label() -> str:
    """The embedded default student in a few words (digits: 64 input features)."""
    from kdhw.config import load_config

    st = load_config(None).student
    dims = "-".join(["64"] + [str(x["units"]) for x in st["layers"] if x["type"] == "dense"])
    bits = (f"learned weight precisions, beta {st['resource']['beta']:g}" if st.get("resource")
            else f"w{st['weight_bits']} a{st['act_bits']}")
    return f"{dims}, {bits}, {st['input']['bits']}-bit input"


def accuracy_table(res: dict[str, Any]) -> str:
    s, r0 = res["summary"], res["runs"][0]
    a = s["accuracy_mean_std"]
    rows = [("teacher", f"teacher (float CNN, {r0['teacher_params'] / 1000:.1f} k params)"),
            ("scratch", f"student scratch ({_student_label()}, {r0['student_params']} params)"),
            ("kd", "student KD (Hinton, T = 1, alpha = 0.5)")]
    out = [f"| model | test accuracy (%), mean ± std over {s['seeds']} seeds |", "|---|---|"]
    out += [f"| {label} | {a[k][0]:.2f} ± {a[k][1]:.2f} |" for k, label in rows]
    return "\n".join(out)


STAGE_LABELS = {
    "data": "data (load, split, input contract)", "teacher": "teacher (float CNN, early stopping)",
    "distill": "distill (scratch + KD, 60 epochs each)", "export": "export (QONNX + clean-up)",
    "hls": "hls (hls4ml project)", "rtl": "rtl (da4ml Verilog)",
    "verify": "verify (C-sim built from headers, RTL interpreter on every row, Icarus, traced rows)",
    "report": "report (yosys for pynq-z2, yosys + nextpnr for ulx3s-85f and icebreaker)",
}


def stage_table(res: dict[str, Any]) -> str:
    s = res["summary"]
    out = [f"| stage | seconds (mean over {s['seeds']} seeds) |", "|---|---|"]
    order = [k for k in STAGE_LABELS if k in s["stage_mean_s"]] + [k for k in s["stage_mean_s"] if k not in STAGE_LABELS]
    out += [f"| {STAGE_LABELS.get(k, k)} | {s['stage_mean_s'][k]:.1f} |" for k in order]
    out.append(f"| **total `kdhw run`** | **{s['total_mean_s']:.1f}** ({_min_s(s['total_mean_s'])}) |")
    return "\n".join(out)


def hardware_table(res: dict[str, Any]) -> str:
    """Seed 0 is exactly `kdhw run --out out/` (the default config's seeds); the range columns span the seeds."""
    run0 = next(r for r in res["runs"] if r["seed"] == 0) if any(r["seed"] == 0 for r in res["runs"]) else res["runs"][0]
    over = res["summary"]["boards_over_seeds"]

    def f(v: Any, nd: int = 0) -> str:
        return "—" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}")

    out = ["| board | est. LUT | synth LUT | synth FF | LUT util | fmax MHz | latency cycles / at board clock | fits "
           f"| I/O pins needed / available | over the {res['summary']['seeds']} seeds: synth LUT, fmax, fits |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for b in run0["boards"]:
        o = over[b["board"]]
        fm = "—" if b["fmax_mhz"] is None else f"{b['fmax_mhz']:.1f}" + ("" if b["meets_board_clock"] else
                                                                         " (misses the board clock)")
        rng = f"{f(o['lut_min'])}–{f(o['lut_max'])}" + ("" if o["fmax_min"] is None else
                                                         f", {o['fmax_min']:.1f}–{o['fmax_max']:.1f} MHz") \
            + f"; fits {o['fits']} of {o['seeds']}"
        io = f"{b['pins_needed']} / {b['pins']}" + ("" if b["serialization_factor"] == 1 else
                                                     f" (serialize ×{b['serialization_factor']})")
        out.append(f"| {b['board']} | {f(b['lut_estimate'])} | {f(b['lut'])} | {f(b['ff'])} | "
                   f"{b['lut_util_pct']:.1f} % ({b['basis']}) | {fm} | {b['latency_cycles']} / "
                   f"{b['ns_at_board_clock']:.1f} ns | {'yes' if b['fits'] else 'no'} | {io} | {rng} |")
    return "\n".join(out)


def misfit_lines(res: dict[str, Any]) -> list[str]:
    """Every seed's board that did not fit, with what it needed (packed logic cells for Lattice parts)."""
    out = []
    for r in res["runs"]:
        for b in r["boards"]:
            if not b["fits"]:
                avail = round(100 * b["lut"] / b["lut_util_pct"])
                out.append(f"- seed {r['seed']}, {b['board']}: does not fit; needs {b['lut']:,} LUT / logic cells "
                           f"of {avail:,} ({b['lut_util_pct']:.1f} %)" + (f"; {b['error']}" if b.get("error") else ""))
    return out or ["Every seed's student fits every board."]


def render_md(res: dict[str, Any]) -> str:
    s = res["summary"]
    diffs = ", ".join(f"{d:+.2f}" for d in s["kd_minus_scratch_points"])
    return "\n".join([
        "# Default run on digits (`benchmarks/spine.py`)", "",
        accuracy_table(res), "",
        f"KD − scratch, paired per seed: {diffs} points; exported: {', '.join(s['chosen'])}; "
        f"bit-exact on every seed: {'yes' if s['all_bit_exact'] else 'NO'} "
        f"({', '.join(map(str, s['verify_rows']))} rows; {', '.join(map(str, s['sim_rows']))} through Icarus).", "",
        "Test accuracy per seed (teacher / scratch / KD, %): " + "; ".join(
            f"seed {r['seed']} {100 * r['teacher']:.2f} / {100 * r['scratch']:.2f} / {100 * r['kd']:.2f}"
            for r in res["runs"]) + ".", "",
        stage_table(res), "",
        f"Total wall time per run: mean {s['total_mean_s']:.1f} s ({_min_s(s['total_mean_s'])}), "
        f"min {s['total_min_s']:.1f} s ({_min_s(s['total_min_s'])}), max {s['total_max_s']:.1f} s "
        f"({_min_s(s['total_max_s'])}); {s['total_min_s'] / 60:.1f}–{s['total_max_s'] / 60:.1f} min. "
        f"The report stage is {s['report_share_pct']:.0f} % of the stage time "
        f"({s['report_min_s']:.0f}–{s['report_max_s']:.0f} s). CPU time per run (kdhw and the tools it "
        f"starts: g++, yosys, nextpnr, Icarus) {s['cpu_min_s']:.0f}–{s['cpu_max_s']:.0f} s, mean "
        f"{s['cpu_mean_s']:.0f} s ({_min_s(s['cpu_mean_s'])})"
        + (f"; load average {min(s['load_avg']):.1f}–{max(s['load_avg']):.1f} before and after the runs"
           if s["load_avg"] else "") + ".", "",
        "## Hardware, seed 0 (= `kdhw run --out out/`)", "",
        hardware_table(res), "",
        *misfit_lines(res), "",
        f"Measured on {res['machine']}.", ""])


def main() -> None:
    from kdhw.flows.grid import run_tasks
    from kdhw.util.atomic import write_json, write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--smoke", action="store_true", help="tiny settings (2 epochs, 100 random rows, pynq-z2 only)")
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    smoke = {"teacher": {"epochs": 2, "channels": [4, 8], "hidden": 16}, "distill": {"epochs": 2},
             "verify": {"random_inputs": 100}, "rtl": {"sim_rows": 50}, "report": {"boards": ["pynq-z2"]}} if a.smoke else None
    key = VERSION + (":smoke" if a.smoke else "")
    tasks = [{"key": f"{key}:seed{s}", "seed": s} for s in range(a.seeds)]
    rows = run_tasks(run_seed, tasks, {"smoke": smoke}, out / "spine.jsonl", workers=1, desc="spine seeds")
    for r in rows:
        print(f"seed {r['seed']}: teacher {100 * r['teacher']:.2f}  scratch {100 * r['scratch']:.2f}  "
              f"kd {100 * r['kd']:.2f}  exported {r['chosen']}  bit-exact {r['bit_exact']}  {r['total_s']:.0f} s", flush=True)
    import platform

    res = {"script": "benchmarks/spine.py", "smoke": a.smoke,
           "machine": f"{os.cpu_count()} cores ({platform.machine()}{_cpu_model()}), shared with other jobs",
           "runs": [{k: v for k, v in r.items() if k not in ("key", "task_seconds")} for r in rows],
           "summary": summarize(rows)}
    write_json(out / "spine.json", res)
    write_text(out / "spine.md", render_md(res))
    print(render_md(res))


if __name__ == "__main__":
    main()
