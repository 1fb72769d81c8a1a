"""``kdhw pareto``: resource-aware students over a grid of cost weights, the accuracy-LUT front, and the best
student per board.

Each point of the grid is one student spec (``pareto.students``, each overriding keys of the student
section; none = the student section itself) trained resource-aware (``kdhw.train.resource``) at one ``beta``, once
from labels alone (scratch) and, when a teacher is configured, once with the distillation method, paired
(same seed, initial weights and batch order), so every point says what the teacher bought at that budget;
``pareto.seeds`` repeats each point with further seeds, because on a small validation split one training's
top points are a row or two apart and move with the seed (and with the CPU).
``pareto.input_noise`` trains each point with Gaussian noise on its inputs (shares of the training inputs'
std; one training per level): a regularizer that moved both validation fronts of
``benchmarks/pareto_vs_hgq2.py`` up at most budgets.
Every arm is a task on ``kdhw.flows.grid`` (sequential, or Ray with ``--workers``; finished tasks land in
``DIR/runs.jsonl``, so an interrupted run resumes): it trains, folds the learned precisions into a brevitas
student, checks the fold exact, exports QONNX, generates the da4ml RTL and synthesizes it with yosys for
``pareto.synth_board`` (LUTs come from synthesis; the analytic estimate is recorded beside them for
screening).  The front is the set of arms no other arm beats on validation accuracy at no more LUTs;
every front point is then converted to an hls4ml project and verified bit-exact (C-sim, RTL interpreter,
RTL simulation) in its own folder under ``DIR/points/``.

``--board B`` (repeatable) marks per board the most accurate front point (by validation accuracy) that fits
its LUT/FF/DSP, its pins and, where an open timing model exists (iCE40, ECP5 through nextpnr), its clock, in
the least folded RTL form that fits (``kdhw.hw.board_fit``: the parallel form, else a stream form; ``pareto.pins:
parallel`` judges the parallel form by its real ports, ``serialize`` behind the serial pin wrapper the
Lattice flow synthesizes).  A board no front point fits is an error (exit 2) that names the smallest point
found.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.config import Config
from kdhw.errors import InputError
from kdhw.util.atomic import save_figure
from kdhw.util.runtime import in_torch_threads

RUNS_FILE = "runs.jsonl"
VERIFY_FILE = "verify.jsonl"
POINTS_DIR = "points"


# ---------------------------------------------------------------- the grid

def point_specs(cfg: Config) -> list[dict[str, Any]]:
    """``pareto.students`` merged over the student section (or the student section alone), times every
    combination of the ``pareto.search`` dimensions (input_bits sets ``input.bits``; ``student.input: auto`` is
    resolved by ``load_data`` before this runs, so its integer bits and sign stay as derived)."""
    base = {k: v for k, v in cfg.student.items() if k not in ("auto", "resource") and v is not None}
    entries = cfg.pareto["students"] or [{}]
    search = cfg.pareto["search"]
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise InputError(f"{cfg.source}: pareto.students[{i}] must be a mapping of student keys")
        for combo in itertools.product(*search.values()):
            spec = {**copy.deepcopy(base), **copy.deepcopy(e)}
            for dim, v in zip(search, combo):
                if dim == "input_bits":
                    inp = dict(spec.get("input") or {})
                    if not isinstance(spec.get("input"), dict) or int(inp.get("int_bits", 1)) > v:
                        raise InputError(f"{cfg.source}: pareto.search.input_bits = {v}: the student input "
                                         f"{spec.get('input')!r} needs more bits than that (its integer bits)")
                    spec["input"] = {**inp, "bits": int(v)}
                else:
                    spec[dim] = int(v)
            out.append(spec)
    return out


def _label(spec: dict[str, Any], dims: tuple[str, ...] = ()) -> str:
    """A short name of a student spec for tables: layer widths, the input width and any searched bit width."""
    parts = []
    for layer in spec["layers"]:
        t = layer["type"]
        if t == "dense":
            parts.append(str(layer["units"]))
        elif t in ("conv1d", "conv2d"):
            parts.append(f"c{layer['filters']}")
    extra = "".join(f" {tag}{spec.get(d)}" for d, tag in (("act_bits", "a"), ("weight_bits", "w")) if d in dims)
    return "-".join(parts) + f" in{(spec.get('input') or {}).get('bits', 8)}" + extra


def search_order(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every index of a grid of ``shape``, in an order whose every prefix is spread over the grid: the middle
    first, then each time the index farthest (in grid steps, each axis scaled to [0, 1]) from all taken so far;
    ties go to the lower index.  A budget that stops the search anywhere has then sampled every region."""
    cells = list(itertools.product(*(range(n) for n in shape)))
    if not cells:
        return []
    scale = [max(n - 1, 1) for n in shape]
    pos = np.array([[c / s for c, s in zip(cell, scale)] for cell in cells])
    first = int(np.argmin(((pos - 0.5) ** 2).sum(1)))
    order, dist = [first], ((pos - pos[first]) ** 2).sum(1)
    while len(order) < len(cells):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, ((pos - pos[nxt]) ** 2).sum(1))
    return [cells[i] for i in order]


# with pareto.checkpoints, a training's beta ramps over CKPT_RAMP of its epochs and the epochs from CKPT_FROM on
# are its candidates: the early epochs describe a student still far from trained, and a ramp across most of the
# run sweeps the cost weight through two decades, so one training leaves a trail of sizes as HGQ2's runs do
CKPT_RAMP = 0.9
CKPT_FROM = 0.3


def ramp_checkpoints(seen: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Up to ``k`` of a training's epochs, each a candidate: those on its own front (no other epoch has at
    least the validation accuracy at no more EBOPs), spread evenly by rank from the smallest to the most
    accurate, both ends kept."""
    on = [e for e in seen if not any(o["ebops"] <= e["ebops"] and o["val_acc"] >= e["val_acc"]
                                     and (o["ebops"] < e["ebops"] or o["val_acc"] > e["val_acc"]) for o in seen)]
    by_cost: dict[tuple[float, float], dict[str, Any]] = {}
    for e in sorted(on, key=lambda e: e["epoch"]):  # equal (EBOPs, accuracy): the earliest epoch
        by_cost.setdefault((e["ebops"], e["val_acc"]), e)
    on = sorted(by_cost.values(), key=lambda e: e["ebops"])
    if len(on) <= k:
        return on
    if k == 1:
        return [on[-1]]
    return [on[i] for i in sorted({round(j * (len(on) - 1) / (k - 1)) for j in range(k)})]


def _hardware_record(model: Any, spec: dict[str, Any], data: Any, task: dict[str, Any]) -> dict[str, Any]:
    """Fold a trained resource-aware student, export it, generate its RTL and synthesize it: the hardware half
    of a candidate's record (+ its files as bytes)."""
    from kdhw.boards import load_board
    from kdhw.hw.estimate import estimate
    from kdhw.hw.export import export_qonnx
    from kdhw.hw.rtl import qonnx_to_rtl
    from kdhw.hw.synth import synthesize
    from kdhw.train.distill import student_input
    from kdhw.train.resource import fold
    from kdhw.train.student import save_student

    x_val, x_test = student_input(data.x_val, spec), student_input(data.x_test, spec)
    student, fspec = fold(model, check_x=np.concatenate([x_val, x_test]))
    stats = model.stats()
    board = load_board(task["synth_board"])
    shape = tuple(x_test.shape[1:])
    with tempfile.TemporaryDirectory(prefix="kdhw-pareto-") as td:
        d = Path(td)
        onnx = export_qonnx(student, shape, d / "student.qonnx.onnx")
        save_student(student, fspec, shape, d / "student.pt")
        est = estimate(onnx)
        try:
            rmeta = qonnx_to_rtl(onnx, d / "rtl", clock_period_ns=board.clock_period_ns)
        except InputError as e:  # every weight pruned: no logic reads the input
            rmeta, syn = None, {"ok": False, "error": str(e)}
        else:
            syn = synthesize(d / "rtl", board, d / "syn")
        files = {"student_pt": (d / "student.pt").read_bytes(), "onnx": onnx.read_bytes()}
    return {
        **files, "ebops": stats["ebops"], "weights": stats["weights"], "live_weights": stats["live_weights"],
        "inputs": stats["inputs"], "inputs_read": stats["inputs_read"], "layers": stats["layers"],
        "spec": fspec, "lut": syn.get("lut") if syn.get("ok") else None, "ff": syn.get("ff") if syn.get("ok") else None,
        "dsp": syn.get("dsp"), "synth_ok": bool(syn.get("ok")), "synth_error": syn.get("error"),
        "synth_tool": syn.get("tool"), "synth_board": task["synth_board"], "lut_estimate": est["lut"],
        "ff_estimate": est["ff"], "latency_cycles": None if rmeta is None else rmeta["latency_cycles"],
        "input_bits_total": None if rmeta is None else rmeta["input_bits_total"],
        "output_bits_total": None if rmeta is None else rmeta["output_bits_total"],
    }


def _point_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Train one arm resource-aware, fold, export, RTL, yosys; return the record (+ files as bytes).  With
    ``task["checkpoints"]`` > 0: the records of up to that many epochs along the arm's beta ramp
    (``ramp_checkpoints``), under ``"checkpoints"``."""
    from kdhw.train.distill import student_input, train_arm
    from kdhw.train.loop import accuracy

    data = shared["data"]
    spec, dcfg = task["spec"], task["dcfg"]
    kd = task["kind"] == "kd"
    k = int(task.get("checkpoints") or 0)
    start = int(CKPT_FROM * int(dcfg["epochs"]))
    seen: list[dict[str, Any]] = []

    def keep(model: Any, row: dict[str, Any]) -> None:
        import torch

        if row["epoch"] >= start:
            with torch.no_grad():
                ebops = float(model.ebops())
            seen.append({"epoch": row["epoch"], "val_acc": row["val_acc"], "ebops": ebops,
                         "state": copy.deepcopy(model.state_dict())})

    c0 = time.process_time()
    arm = train_arm(task["kind"], spec, dcfg, data, shared["teacher_train"] if kd else None,
                    dcfg["method"] if kd else "none", False, task["source"],
                    teacher=shared["teacher"] if kd else None,
                    teacher_unlab=shared["teacher_unlab"] if kd else None, after_epoch=keep if k else None)
    train_cpu = time.process_time() - c0
    common = {"kind": task["kind"], "student": task["student"], "label": task["label"], "beta": task["beta"],
              "input_noise": task.get("input_noise"), "augment_noise": float(dcfg.get("augment_noise") or 0),
              "seed": int(dcfg["seed"]), "method": dcfg["method"] if kd else "none", "epochs": arm.fit.epochs_run,
              "train_cpu_s": train_cpu, "info": json.loads(json.dumps(arm.info, default=float))}
    if not k:
        return {**common, **_hardware_record(arm.model, spec, data, task), "val_acc": arm.fit.best_val_acc,
                "test_acc": arm.test_acc, "best_epoch": arm.fit.best_epoch, "history": arm.fit.history}
    x_test = student_input(data.x_test, spec)
    out = []
    for e in ramp_checkpoints(seen, k):
        arm.model.load_state_dict(e["state"])
        arm.model.eval()
        out.append({**common, **_hardware_record(arm.model, spec, data, task), "val_acc": e["val_acc"],
                    "test_acc": accuracy(arm.model, x_test, data.y_test), "best_epoch": e["epoch"],
                    "checkpoint_epoch": e["epoch"]})
    return {"checkpoints": out, "history": arm.fit.history, **common}


def mark_front(points: list[dict[str, Any]], acc: str = "val_acc") -> list[bool]:
    """Non-dominated points: no other point has at least the accuracy at no more LUTs, one of them strictly.
    Points without a synthesis result are never on the front."""
    flags = []
    for p in points:
        if p.get("lut") is None:
            flags.append(False)
            continue
        dominated = any(q is not p and q.get("lut") is not None and q["lut"] <= p["lut"] and q[acc] >= p[acc]
                        and (q["lut"] < p["lut"] or q[acc] > p[acc]) for q in points)
        flags.append(not dominated)
    return flags


# ---------------------------------------------------------------- verification of front points

def _verify_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """One front point through ``kdhw.flows.to_hardware`` (QONNX, hls4ml project, RTL, bit-exact verification), in its
    folder under points/, exactly as ``kdhw run`` takes its student."""
    from kdhw.boards import load_board
    from kdhw.train.distill import student_input
    from kdhw.train.student import load_student
    from kdhw.util.atomic import atomic_dir

    from .to_hardware import student_to_hardware

    data, cfg = shared["data"], shared["cfg"]
    spec = task["spec"]
    pt = Path(task["root"]) / task["arm"]
    with atomic_dir(Path(task["dir"])) as d:
        (d / "student.pt").write_bytes(pt.read_bytes())
        model = load_student(d / "student.pt")
        x_test = student_input(data.x_test, spec).astype(np.float32)
        hw = student_to_hardware(model, tuple(x_test.shape[1:]), d, cfg, load_board(cfg.hls["board"]), x_test,
                                 y_test=data.y_test, teacher_test=shared["teacher_test"], student_pt=d / "student.pt",
                                 log=lambda *a: None)
    ver = hw.verify
    levels = {k: {kk: v[kk] for kk in ("rows", "exact_rows") if kk in v} for k, v in ver["levels"].items()}
    return {"bit_exact": bool(ver["bit_exact"]), "rows": int(ver["rows"]), "levels": levels,
            "first_divergence": ver["first_divergence"], "teacher_agreement": ver.get("teacher_agreement")}


# ---------------------------------------------------------------- boards

def _fits(point: dict[str, Any], board: Any, out: Path, pins: str) -> dict[str, Any]:
    """Whether ``point`` fits ``board`` in some RTL form: ``kdhw.hw.board_fit.choose_form`` judges the parallel form
    first (its yosys counts reused when the grid already synthesized it for this board's flow) and, when that
    does not fit, the stream forms from least to most folded; pins, estimate, then yosys (+ nextpnr place,
    route and fmax against the board clock on iCE40/ECP5; Xilinx parts have no open timing model).

    ``pins: serialize`` judges the parallel form without its pin count (the serial pin wrapper the Lattice flow
    synthesizes); ``pins: parallel`` demands its real ports.  Stream forms always bring their real ports.
    """
    from kdhw.hw.board_fit import choose_form
    from kdhw.hw.report import synth_flow_key

    if point.get("lut") is None:
        return {"fits": False, "why": "no synthesis result"}
    known = None
    if board.vendor == "xilinx" and synth_flow_key(board) == point.get("_synth_flow"):
        known = {"parallel": {"lut": point["lut"], "ff": point["ff"], "dsp": point.get("dsp") or 0, "ok": True,
                              "fmax_mhz": None}}
    res = choose_form(out / point["onnx"], board, out / POINTS_DIR / point["id"] / f"fit_{board.name}",
                      parallel_pins=pins == "parallel", known=known, log=lambda *a: None)
    chosen = next((c for c in res["candidates"] if c["verdict"] == "chosen"), None)
    if chosen is None:
        last = res["candidates"][-1]
        return {"fits": False, "why": f"{last['label']}: {last['why']}", "form": None,
                "lut": (last["synthesis"] or {}).get("lut") or last["estimate"]["lut"],
                "candidates": res["candidates"]}
    syn = chosen["synthesis"] or {}
    return {"fits": True, "why": "fits" if chosen["label"] == "parallel" else f"fits as {chosen['label']}",
            "form": chosen["label"], "lut": syn.get("lut"), "ff": syn.get("ff"), "fmax_mhz": syn.get("fmax_mhz"),
            "pins": chosen["pins"], "board_pins": board.io_pins, "initiation_interval": chosen["initiation_interval"],
            "latency_cycles": chosen["latency_cycles"], "clock_checked": res["clock_checked"],
            "candidates": res["candidates"]}


def pick_for_boards(points: list[dict[str, Any]], boards: list[Any], out: Path, pins: str,
                    log: Any = print) -> list[dict[str, Any]]:
    """Per board, the most accurate front point (validation accuracy; fewer LUTs break ties) that fits."""
    front = sorted((p for p in points if p["pareto"]), key=lambda p: (-p["val_acc"], p["lut"]))
    res = []
    for b in boards:
        entry: dict[str, Any] = {"board": b.name, "pick": None, "checked": []}
        for p in front:
            f = _fits(p, b, out, pins)
            entry["checked"].append({"point": p["id"], **f})
            if f["fits"]:
                entry.update(pick=p["id"], val_acc=p["val_acc"], test_acc=p["test_acc"], lut=f["lut"], ff=f["ff"],
                             form=f["form"])
                log(f"[pareto] {b.name}: point {p['id']} ({100 * p['test_acc']:.1f} % test, {f['lut']:,} LUT)")
                break
        res.append(entry)
    return res


# ---------------------------------------------------------------- the verb

def train_points(cfg: Config, specs: list[dict[str, Any]], data: Any, out: Path, synth_board: Any, tmodel: Any,
                 tl: dict[str, np.ndarray] | None, kd_on: bool, progress: bool, log: Any, workers: int | None = 1,
                 address: str | None = None) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """Every (student, beta, noise, seed, arm) candidate of the search as a resumable task in ``out/runs.jsonl``,
    until ``pareto.budget_min`` is spent; the records of those trained, with checkpoints and QONNX files under
    ``out/points/`` and the front marked (``pareto``, ``pareto_test``), the grid's stats and what was searched."""
    from kdhw.hw.report import synth_flow_key
    from kdhw.train.recipe import input_noise, resolve
    from kdhw.util.atomic import write_bytes

    from .grid import Grid, task_digest

    pc = cfg.pareto
    fp = task_digest(data.manifest["sha256_16"], b"" if tl is None else tl["train"].tobytes(),
                 b"" if tl is None or "unlab" not in tl else tl["unlab"].tobytes())
    epochs = int(pc["epochs"] or cfg.distill["epochs"])
    dcfg0 = {**cfg.distill, "epochs": epochs, "lr": pc["lr"] or cfg.distill["lr"], "select": "best_val",
             "float_warmup_epochs": 0}
    # [] = one training per point with the distill section's augmentation; else one per noise level
    noises: list[float | None] = [float(n) for n in pc["input_noise"]] or [None]
    dims = tuple(pc["search"])
    betas = [float(b) for b in pc["betas"]]
    ckpts = int(pc["checkpoints"])
    tasks = []
    # candidates: (student spec, beta, noise level) in a space-filling order, every seed of one before the
    # next seed of any, so a budget that ends the search early has sampled the whole space once
    order = search_order((len(specs), len(betas), len(noises)))
    noise_of = [None if n is None else input_noise(data.x_train, n) for n in noises]
    # the arms of each candidate: the run's recipe (kdhw.train.recipe), so with a transfer set and a teacher
    # that runs here the distilled arm is function matching's, beside its labels-only control scratch_aug
    recipe = resolve(dcfg0, data, tmodel, src=cfg.source) if kd_on and tmodel is not None else None
    if recipe is not None and recipe.name == "function_matching":
        plan = recipe.arms(dcfg0["method"])
        arms_of = {k: {**c, "method": m} for k, (c, m) in plan.items()}
    else:
        arms_of = {"scratch": {**dcfg0, "method": "none"}, **({"kd": dcfg0} if kd_on else {})}
    for k in range(int(pc["seeds"])):  # seed 0 keeps the keys of a one-seed run, so it resumes
        seed = int(dcfg0["seed"]) + k
        for si, bi, ni in order:
            spec, beta, noise = specs[si], betas[bi], noises[ni]
            # the first level keeps the keys of a one-level run, so adding levels resumes it
            ntag = "" if noise is None or noise == noises[0] else f" noise={noise:g}"
            for kind, base in arms_of.items():
                dcfg = {**base, "seed": seed, **({} if noise is None else {"augment_noise": noise_of[ni]})}
                # the beta ramp spans the arm's own epochs (function matching's arms train longer)
                rspec = {**spec, "resource": {"beta": beta, "epochs": int(base["epochs"]),
                                              "ramp": CKPT_RAMP if ckpts else float(pc["ramp"]),
                                              "granularity": pc["granularity"]}}
                h = task_digest(rspec, dcfg, fp if kind == "kd" else data.manifest["sha256_16"], pc["synth_board"],
                                *([f"checkpoints={ckpts}"] if ckpts else []))
                tag = f"s{si}_b{beta:g}" + ntag.replace(" noise=", "_n") + (f"_seed{seed}" if k else "")
                tasks.append({"key": f"{kind} s{si} beta={beta:g}{ntag}" + (f" seed={seed}" if k else "")
                              + f" #{h}", "kind": kind, "student": si, "label": _label(spec, dims),
                              "beta": beta, "input_noise": noise, "spec": rspec, "dcfg": dcfg,
                              "source": cfg.source, "synth_board": synth_board.name, "checkpoints": ckpts,
                              "file": f"{tag}_{kind}_{h[:8]}"})
    shared = {"data": data, "teacher_train": None if tl is None else tl["train"],
              "teacher_unlab": None if tl is None else tl.get("unlab"), "teacher": tmodel}

    def save_one(file: str, res: dict[str, Any]) -> dict[str, Any]:
        res = dict(res)
        write_bytes(out / POINTS_DIR / f"{file}.pt", res.pop("student_pt"))
        write_bytes(out / POINTS_DIR / f"{file}.onnx", res.pop("onnx"))
        res.update(arm=f"{POINTS_DIR}/{file}.pt", onnx=f"{POINTS_DIR}/{file}.onnx", id=file)
        lut = f"{res['lut']:,} LUT" if res["lut"] is not None else "no synthesis"
        at = f" epoch {res['checkpoint_epoch']}" if "checkpoint_epoch" in res else ""
        log(f"[pareto] {res['label']} beta={res['beta']:g} {res['kind']}{at}: test {100 * res['test_acc']:.2f} %, "
            f"{lut}, EBOPs {res['ebops']:,.0f}, {res['live_weights']}/{res['weights']} weights live")
        return res

    def save(task: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
        if "checkpoints" not in res:
            return save_one(task["file"], res)
        return {**res, "checkpoints": [save_one(f"{task['file']}_e{c['checkpoint_epoch']}", c)
                                       for c in res["checkpoints"]]}

    jsonl = out / RUNS_FILE
    budget_s = 60 * float(pc["budget_min"])
    deadline = time.perf_counter() + budget_s if budget_s > 0 else None
    with Grid(workers, address, progress) as grid:
        results = grid.run(_point_task, tasks, shared, jsonl, desc="pareto points", on_result=save, deadline=deadline)
        stats = grid.stats
    ran = [(p, t) for p, t in zip(results, tasks) if p is not None]
    trained = len(ran)
    # a training along a ramp offers several candidates: one point each, under the training's task
    ran = [(c, t) for p, t in ran for c in (p["checkpoints"] if "checkpoints" in p else [p])]
    points, tasks = [p for p, _ in ran], [t for _, t in ran]
    search = {"dimensions": {**{d: list(v) for d, v in pc["search"].items()}, "beta": betas,
                             "seed": [int(dcfg0["seed"]) + k for k in range(int(pc["seeds"]))],
                             **({"input_noise": noises} if len(noises) > 1 else {})},
              "students": len(cfg.pareto["students"] or [{}]), "arms": trained,
              "candidates": len({(t["student"], t["beta"], t["input_noise"], t["dcfg"]["seed"]) for t in tasks}),
              "candidates_total": len(order) * int(pc["seeds"]), "budget_min": float(pc["budget_min"]),
              "stopped_by_budget": trained < len(results), "arms_per_candidate": list(arms_of),
              "checkpoints_per_training": ckpts, "trainings": trained,
              "recipe": None if recipe is None else recipe.describe()}
    if trained < len(results):
        log(f"[pareto] budget of {float(pc['budget_min']):g} min spent: {search['candidates']} of "
            f"{search['candidates_total']} candidates trained (rerun with the same --out to go on)")
    for p, t in zip(points, tasks):
        p["id"] = p.get("id") or t["file"]
        p["_synth_flow"] = synth_flow_key(synth_board)
    for p, flag in zip(points, mark_front(points)):
        p["pareto"] = flag
    for p, flag in zip(points, mark_front(points, "test_acc")):
        p["pareto_test"] = flag
    return points, stats, search


@in_torch_threads
def run_pareto(cfg: Config, out: str | Path, *, boards: list[str] | None = None, teacher_path: str | None = None,
               progress: bool = False, log: Any = print, workers: int | None = 1,
               address: str | None = None) -> dict[str, Any]:
    """Train the grid, find the front, verify it, pick per board; write pareto.{json,md,png} into ``out``."""
    from kdhw.boards import load_board
    from kdhw.train.data import load_data
    from kdhw.train.distill import check_distill, student_input
    from kdhw.train.resource import FineNet

    from .grid import check_address, jsonl_lock
    from .to_hardware import check_hardware_tools

    t_start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a directory")
    board_objs = [load_board(b) for b in (boards or [])]  # unknown names fail before any work
    synth_board = load_board(cfg.pareto["synth_board"])
    if synth_board.vendor != "xilinx":
        raise InputError(f"{cfg.source}: pareto.synth_board = {synth_board.name} must be a Xilinx board (the front "
                         "is measured in yosys synth_xilinx LUTs)")
    check_hardware_tools(cfg, [synth_board, *board_objs])
    check_address(address)
    data = load_data(cfg)  # layout + input contract (student.input: auto resolved here)
    specs = point_specs(cfg)
    for i, s in enumerate(specs):  # bad specs fail before any training
        FineNet({**s, "resource": {"beta": 0.0}}, student_input(data.x_val[:1], s).shape[1:], data.n_classes,
                f"{cfg.source}: pareto.students[{i}]" if cfg.pareto["students"] else cfg.source)
        check_distill(s, cfg.distill, data, cfg.source, teacher_known=False)
    kd_on = cfg.pareto["kd"] and cfg.distill["method"] != "none"
    if len(data.unlab) and not kd_on:
        why = "pareto.kd is false" if not cfg.pareto["kd"] else "distill.method is none"
        raise InputError(f"{cfg.source}: the data has a transfer set ({len(data.unlab):,} rows without labels: "
                         f"data.labels / data.unlabeled) but no teacher reads it ({why}); set pareto.kd: true and "
                         "a distill.method, or drop the transfer set")
    check_budget(cfg, specs[0], data, 2 if kd_on else 1)
    out.mkdir(parents=True, exist_ok=True)
    with jsonl_lock(out / RUNS_FILE):
        return _run_locked(cfg, out, specs, data, board_objs, synth_board, teacher_path, progress, log, workers,
                           address, t_start)


def check_budget(cfg: Config, spec: dict[str, Any], data: Any, arms: int) -> None:
    """Refuse a ``pareto.budget_min`` too small for one candidate.  A few timed forward and backward passes of
    the first student at the training batch size, times the steps of its epochs, halved: a floor that the real
    training (plus its synthesis) only exceeds, so a budget below it can never train a point."""
    import torch
    import torch.nn.functional as F

    from kdhw.train.distill import student_input
    from kdhw.train.resource import FineNet

    budget_s = 60 * float(cfg.pareto["budget_min"])
    if budget_s <= 0:
        return
    epochs = int(cfg.pareto["epochs"] or cfg.distill["epochs"])
    batch = int(cfg.distill["batch_size"])
    x = torch.from_numpy(student_input(data.x_train[:batch], spec).astype(np.float32))
    y = torch.from_numpy(np.asarray(data.y_train[:batch])).long()
    model = FineNet({**spec, "resource": {"beta": 1e-4, "epochs": epochs}}, tuple(x.shape[1:]), data.n_classes,
                    cfg.source)
    t0 = 0.0
    for i in range(4):  # the first pass warms up
        if i == 1:
            t0 = time.perf_counter()
        model.zero_grad()
        (F.cross_entropy(model(x), y) + model.resource_loss()).backward()
    steps = epochs * -(-len(data.x_train) // batch)
    floor_s = 0.5 * arms * steps * (time.perf_counter() - t0) / 3
    if budget_s < floor_s:
        need = math.ceil(floor_s / 6) / 10
        raise InputError(f"{cfg.source}: pareto.budget_min = {float(cfg.pareto['budget_min']):g} ({budget_s:.0f} s) "
                         f"cannot train one candidate: its {arms} arm(s) of {epochs} epochs x {steps // epochs} steps "
                         f"take at least {floor_s:.0f} s here before synthesis; allowed: 0 (no budget) or >= {need:g}")


def _run_locked(cfg: Config, out: Path, specs: list[dict[str, Any]], data: Any, board_objs: list[Any],
                synth_board: Any, teacher_path: str | None, progress: bool, log: Any, workers: int | None,
                address: str | None, t_start: float) -> dict[str, Any]:
    from kdhw.train.teacher import shared_teacher, teacher_accuracy, teacher_logits
    from kdhw.util.atomic import write_json, write_text

    from .grid import Grid, task_digest

    pc = cfg.pareto
    kd_on = pc["kd"] and cfg.distill["method"] != "none"
    tl, tacc, tmodel, how = None, None, None, "none"
    if kd_on:
        tmodel, tcfg, how = shared_teacher(cfg, data, out, teacher_path, progress)
        tl = teacher_logits(tmodel, tcfg["arch"], data)
        tacc = teacher_accuracy(tl, data)
        log(f"[teacher] {tcfg['arch']}: test {100 * tacc['test']:.2f} % ({how})")
    points, stats, search = train_points(cfg, specs, data, out, synth_board, tmodel, tl, kd_on, progress, log,
                                         workers, address)
    front = [p for p in points if p["pareto"]]
    log(f"[pareto] front: {len(front)} of {len(points)} points; verifying each bit-exact")

    # ---- every front point through the one export -> hls -> rtl -> verify path (kdhw.flows.to_hardware), in points/<id>/
    vcfg = copy.deepcopy(cfg)
    vcfg.verify["random_inputs"] = int(pc["verify_random_inputs"])
    vcfg.rtl["sim_rows"] = int(pc["sim_rows"])
    vcfg.rtl["enabled"] = True
    vtasks = []
    for p in front:
        p["dir"] = f"{POINTS_DIR}/{p['id']}"
        vtasks.append({"key": f"verify {p['id']} #{task_digest(p['onnx'], (out / p['arm']).read_bytes(), vcfg.verify)}",
                       "dir": str(out / p["dir"]), "root": str(out), "arm": p["arm"], "spec": specs[p["student"]]})
    with Grid(1, None, progress) as vgrid:
        vres = vgrid.run(_verify_task, vtasks, {"data": data, "cfg": vcfg,
                                                "teacher_test": None if tl is None else tl["test"]},
                         out / VERIFY_FILE, desc="verify front")
    for p, r in zip(front, vres):
        p["bit_exact"] = r["bit_exact"]
        p["verify"] = r
    for p in points:
        p.setdefault("bit_exact", None)

    picks = pick_for_boards(points, board_objs, out, pc["pins"], log)
    pairs = _pairs(points)
    result = {
        "config_source": cfg.source, "data": data.manifest,
        "teacher": None if tacc is None else {"test_acc": tacc["test"], "val_acc": tacc["val"], "how": how},
        "synth_board": synth_board.name, "synth_part": synth_board.part,
        "students": [{"index": i, "label": _label(s, tuple(pc["search"])), "layers": s["layers"], "input": s.get("input")}
                     for i, s in enumerate(specs)],
        "betas": [float(b) for b in pc["betas"]], "epochs": int(pc["epochs"]), "seeds": int(pc["seeds"]), "kd": kd_on,
        "input_noise": [float(n) for n in pc["input_noise"]], "search": search,
        "points": [{k: v for k, v in p.items() if not k.startswith("_")} for p in points],
        "front": [p["id"] for p in sorted(front, key=lambda p: p["lut"])],
        "pairs": pairs, "boards": picks,
        "grid": {"mode": stats.mode, "workers": stats.workers, "tasks": search["trainings"], "executed": stats.executed,
                 "resumed": stats.resumed, "wall_s": time.perf_counter() - t_start, "runs_file": RUNS_FILE},
    }
    write_json(out / "pareto.json", result)
    write_text(out / "pareto.md", pareto_markdown(result))
    pareto_plot(result, out / "pareto.png")
    not_exact = [p["id"] for p in front if not p["bit_exact"]]
    result["not_bit_exact"] = not_exact
    for e in picks:
        if e["pick"] is None:
            small = min(front, key=lambda p: p["lut"]) if front else None
            b = next(x for x in board_objs if x.name == e["board"])
            what = ("no point was synthesized" if small is None else
                    f"the smallest point found is {small['id']} ({100 * small['test_acc']:.1f} % test) at "
                    f"{small['lut']:,} LUT / {small['ff']:,} FF ({e['checked'][-1]['why'] if e['checked'] else ''})")
            raise InputError(f"board {b.name}: no point of the front fits ({b.lut:,} LUT, {b.ff:,} FF, {b.dsp} DSP, "
                             f"{b.io_pins} pins, {b.clock_mhz:g} MHz); {what}; lower pareto.betas' smallest "
                             "model further (larger beta) or choose a larger board")
    return result


def auto_student(cfg: Config, data: Any, tmodel: Any, tl: dict[str, np.ndarray] | None, work: Path,
                 board_name: str, progress: bool = False, log: Any = print) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``student: {auto: {board: B}}`` in ``kdhw run``: train the pareto grid into ``work``, pick the most accurate
    front point that fits ``B``; returns (the arms of that candidate, scratch, kd and under function matching
    scratch_aug, as brevitas students, the arm
    to export, what was chosen and why, with ``arm_specs``: each arm's folded spec).  No point fitting is an
    InputError naming the smallest point."""
    from kdhw.boards import load_board
    from kdhw.train.distill import Arm
    from kdhw.train.loop import FitResult
    from kdhw.train.student import load_student

    board = load_board(board_name)
    synth_board = load_board(cfg.pareto["synth_board"])
    specs = point_specs(cfg)
    kd_on = cfg.pareto["kd"] and cfg.distill["method"] != "none" and tl is not None
    points, _, _ = train_points(cfg, specs, data, work, synth_board, tmodel, tl, kd_on, progress, log)
    pick = pick_for_boards(points, [board], work, cfg.pareto["pins"], log)[0]
    if pick["pick"] is None:
        front = [p for p in points if p["pareto"]]
        small = min(front, key=lambda p: p["lut"]) if front else None
        raise InputError(f"{cfg.source}: student.auto: no point of the front fits board {board.name} ({board.lut:,} LUT, "
                         f"{board.ff:,} FF); " + ("no point was synthesized" if small is None else
                                                  f"the smallest point found has {small['lut']:,} LUT / {small['ff']:,} "
                                                  f"FF at {100 * small['test_acc']:.1f} % test"))
    chosen = next(p for p in points if p["id"] == pick["pick"])
    arms, arm_specs = {}, {}
    cand = ("student", "beta", "input_noise", "seed")
    # each arm of the chosen candidate; with checkpoints along the ramps, the chosen point for its arm and the
    # most accurate checkpoint on validation for the others
    by_kind: dict[str, dict[str, Any]] = {}
    for p in points:
        if all(p.get(k) == chosen.get(k) for k in cand):
            o = by_kind.get(p["kind"])
            if o is not chosen and (p is chosen or o is None or p["val_acc"] > o["val_acc"]):
                by_kind[p["kind"]] = p
    for kind, p in by_kind.items():
        fit = FitResult(p["val_acc"], p["best_epoch"], p["epochs"], p.get("history") or [])
        arms[kind] = Arm(kind, load_student(work / p["arm"]), fit, p["test_acc"], p.get("info") or {})
        arm_specs[kind] = p["spec"]
    form = pick.get("form") or "parallel"
    why = (f"pareto point {chosen['id']}: the most accurate front point (validation) that fits {board.name}"
           + ("" if form == "parallel" else f" as {form} (set rtl.mode: auto with rtl.board: {board.name} to "
                                            "generate that form)")
           + f", {chosen['lut']:,} LUT parallel (yosys, {synth_board.name}), beta {chosen['beta']:g}")
    info = {"board": board.name, "point": chosen["id"], "beta": chosen["beta"], "lut": chosen["lut"], "form": form,
            "ebops": chosen["ebops"], "front": sorted(p["id"] for p in points if p["pareto"]), "spec": chosen["spec"],
            "arm_specs": arm_specs}
    return arms, chosen["kind"], {"reason": why, **info}


def _pairs(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scratch (and function matching's control scratch_aug) vs KD at the same (student, beta, input noise,
    seed): accuracy and LUTs side by side, and the teacher's own share, KD − scratch_aug.  With checkpoints
    along each ramp, each arm is represented by its most accurate checkpoint on validation."""
    by: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for p in points:
        noise = p.get("input_noise")
        arms = by.setdefault((p["student"], p["beta"], -1.0 if noise is None else noise, p["seed"]), {})
        o = arms.get(p["kind"])  # an arm with checkpoints along its ramp: its most accurate one on validation
        if o is None or (p["val_acc"], -(p["lut"] or 0)) > (o["val_acc"], -(o["lut"] or 0)):
            arms[p["kind"]] = p
    out = []
    for (si, beta, noise, seed), arms in sorted(by.items()):
        s, k, c = arms.get("scratch"), arms.get("kd"), arms.get("scratch_aug")
        row = {"student": si, "label": (s or k or c)["label"], "beta": beta, "seed": seed,
               "input_noise": None if noise < 0 else noise}
        for name, a in (("scratch", s), ("scratch_aug", c), ("kd", k)):
            row[name] = None if a is None else {"id": a["id"], "test_acc": a["test_acc"], "val_acc": a["val_acc"],
                                                "lut": a["lut"], "ebops": a["ebops"]}
        if s and k:
            row["kd_minus_scratch_test"] = k["test_acc"] - s["test_acc"]
        if c and k:
            row["teacher_share_test"] = k["test_acc"] - c["test_acc"]
        out.append(row)
    return out


# ---------------------------------------------------------------- outputs a person reads

def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _n(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f}"


def pareto_markdown(res: dict[str, Any]) -> str:
    t = res["teacher"]
    s = res.get("search") or {}
    arms = s.get("arms_per_candidate") or (["scratch", "kd"] if res["kd"] else ["scratch"])
    fm = (s.get("recipe") or {}).get("augmented") if "scratch_aug" in arms else None
    ck = s.get("checkpoints_per_training") or 0
    lines = ["# kdhw pareto: accuracy vs LUT", "",
             f"Data {res['data']['dataset']} ({res['data']['test']} test rows); "
             + (f"teacher {100 * t['test_acc']:.2f} % test; " if t else "")
             + (f"{len(res['points'])} points from {s.get('trainings')} trainings " if ck else
                f"{len(res['points'])} arms ")
             + f"({len(res['betas'])} betas x {len(res['students'])} student(s)"
             + (f" x {res['seeds']} seeds" if res.get("seeds", 1) > 1 else "")
             + (f" x input noise {', '.join(f'{n:g}' for n in res['input_noise'])} of the inputs' std"
                if res.get("input_noise") else "")
             + (f" x {'/'.join(arms)}" if len(arms) > 1 else "") + f"), {res['epochs']} epochs each"
             + (f", up to {ck} checkpoints along each training's beta ramp (over {int(100 * CKPT_RAMP)} % of its "
                f"epochs, kept from {int(100 * CKPT_FROM)} % on)" if ck else "")
             + (f" (function matching: scratch_aug and kd {fm['epochs']} epochs of {fm['batch_size']} rows, the "
                "teacher on every augmented batch)" if fm else "") + ". LUTs: yosys "
             f"synth_xilinx for {res['synth_part']} ({res['synth_board']}); the front is chosen on validation "
             f"accuracy (`pareto`, {res['data']['val']} rows: one row is {100 / max(res['data']['val'], 1):.2f} "
             "points, so front points that close are a draw); `front (test)` marks the front by test accuracy.", ""]
    if s:
        dims = " x ".join(f"{d} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}"
                          for d, vs in s["dimensions"].items())
        budget = (f"budget {s['budget_min']:g} min of training and synthesis: "
                  + ("spent, " if s["stopped_by_budget"] else "not reached, ") if s["budget_min"] else "no budget: ")
        lines += [f"Search: {dims} ({s['students']} student spec(s)) = {s['candidates_total']} candidates, taken "
                  f"in a space-filling order; {budget}{s['candidates']} trained"
                  + (" (rerun with the same --out to go on)" if s["stopped_by_budget"] else "") + ".", ""]
    lines += ["## Front", "",
             "| point | student | arm | beta | val % | test % | yosys LUT | FF | est. LUT | EBOPs | live weights "
             "| inputs read | latency | bit-exact |", "|" + "---|" * 14]
    pts = {p["id"]: p for p in res["points"]}
    levels = len(res.get("input_noise") or []) > 1  # name the noise level beside the student when it varies
    for pid in res["front"]:
        p = pts[pid]
        lab = p["label"] + (f" noise {p['input_noise']:g}" if levels else "")
        lines.append(f"| `{pid}` | {lab} | {p['kind']} | {p['beta']:g} | {_pct(p['val_acc'])} | "
                     f"{_pct(p['test_acc'])} | {_n(p['lut'])} | {_n(p['ff'])} | {_n(p['lut_estimate'])} | "
                     f"{_n(p['ebops'])} | {p['live_weights']}/{p['weights']} | {p['inputs_read']}/{p['inputs']} | "
                     f"{p['latency_cycles']} | {'yes' if p['bit_exact'] else '**NO**'} |")
    if res["boards"]:
        lines += ["", "## Best student per board", "", "| board | point | RTL form | val % | test % | LUT | FF | checked |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in res["boards"]:
            chk = "; ".join(f"`{c['point']}`: {c['why']}" for c in e["checked"])
            lines.append(f"| {e['board']} | {('`' + e['pick'] + '`') if e['pick'] else '**none fits**'} | "
                         f"{e.get('form') or '—'} | {_pct(e.get('val_acc'))} | {_pct(e.get('test_acc'))} | {_n(e.get('lut'))} | "
                         f"{_n(e.get('ff'))} | {chk} |")
    if res["kd"]:
        lines += ["", "## Distillation at each point (paired: same student, beta, seed and initial weights)", ""]
        if fm:
            lines += ["The teacher's share is KD − scratch_aug: the same augmentation, mixup and steps without the "
                      "teacher, so what is left is the teacher's own.", ""]
        aug = ["scratch_aug test % | scratch_aug LUT | "] if fm else [""]
        lines += ["| student | beta | seed | scratch test % | scratch LUT | " + aug[0] + "KD test % | KD LUT | "
                  "KD − scratch (points) |" + (" teacher's share: KD − scratch_aug (points) |" if fm else ""),
                  "|" + "---|" * (8 + (3 if fm else 0))]
        for r in res["pairs"]:
            sc, k, c = r["scratch"] or {}, r["kd"] or {}, r.get("scratch_aug") or {}
            d, share = r.get("kd_minus_scratch_test"), r.get("teacher_share_test")
            lab = r["label"] + (f" noise {r['input_noise']:g}" if levels else "")
            lines.append(f"| {lab} | {r['beta']:g} | {r['seed']} | {_pct(sc.get('test_acc'))} | {_n(sc.get('lut'))} | "
                         + (f"{_pct(c.get('test_acc'))} | {_n(c.get('lut'))} | " if fm else "")
                         + f"{_pct(k.get('test_acc'))} | {_n(k.get('lut'))} | "
                         f"{'—' if d is None else f'{100 * d:+.2f}'} |"
                         + (f" {'—' if share is None else f'{100 * share:+.2f}'} |" if fm else ""))
    lines += ["", "## Every point", "", "| point | arm | beta | val % | test % | yosys LUT | est. LUT | EBOPs | front "
              "| front (test) |", "|" + "---|" * 10]
    for p in sorted(res["points"], key=lambda p: (p["lut"] is None, p["lut"] or 0)):
        lines.append(f"| `{p['id']}` | {p['kind']} | {p['beta']:g} | {_pct(p['val_acc'])} | {_pct(p['test_acc'])} | "
                     f"{_n(p['lut'])} | {_n(p['lut_estimate'])} | {_n(p['ebops'])} | {'yes' if p['pareto'] else ''} | "
                     f"{'yes' if p['pareto_test'] else ''} |")
    g = res["grid"]
    lines += ["", f"{g['tasks']} tasks ({g['executed']} run now, {g['resumed']} resumed from `{g['runs_file']}`), "
              f"{g['mode']} with {g['workers']} worker(s), {g['wall_s']:.0f} s wall.", "", "![front](pareto.png)"]
    return "\n".join(lines) + "\n"


def pareto_plot(res: dict[str, Any], path: Path) -> None:
    """Test accuracy vs yosys LUT, one marker per arm kind, the (validation) front joined and circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    pts = [p for p in res["points"] if p["lut"] is not None]
    names = {"kd": "distilled", "scratch": "scratch (labels only)",
             "scratch_aug": "scratch_aug (labels only, augmented)"}
    for kind, marker in (("scratch", "o"), ("scratch_aug", "^"), ("kd", "s")):
        ps = [p for p in pts if p["kind"] == kind]
        if ps:
            ax.scatter([p["lut"] for p in ps], [100 * p["test_acc"] for p in ps], marker=marker, alpha=0.6,
                       label=names[kind])
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["lut"])
    if front:
        ax.plot([p["lut"] for p in front], [100 * p["test_acc"] for p in front], "k-", lw=1, drawstyle="steps-post")
        ax.scatter([p["lut"] for p in front], [100 * p["test_acc"] for p in front], s=90, facecolors="none",
                   edgecolors="k", label="front (by validation accuracy)")
    for e in res["boards"]:
        if e["pick"]:
            p = next(q for q in pts if q["id"] == e["pick"])
            ax.annotate(e["board"], (p["lut"], 100 * p["test_acc"]), textcoords="offset points", xytext=(5, -12),
                        fontsize=8)
    if res["teacher"]:
        ax.axhline(100 * res["teacher"]["test_acc"], color="gray", ls="--", lw=1, label="teacher (float)")
    luts = [p["lut"] for p in pts]
    if luts and max(luts) / max(min(luts), 1) >= 4:
        ax.set_xscale("log")
    ax.set_xlabel(f"LUTs (yosys synth_xilinx, {res['synth_part']})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Resource-aware students: accuracy vs LUT")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------- CLI (hooked into kdhw/cli.py)

def add_pareto_parser(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("pareto", help="resource-aware students searched over cost weights and bit widths "
                                             "within a budget; the accuracy-LUT front, verified; the best student "
                                             "per board")
    s.add_argument("config", nargs="?", default=None, help="YAML config (its pareto section; the student section is "
                                                            "each point's base); absent: the embedded default")
    s.add_argument("--out", required=True, help="folder; holds runs.jsonl, so rerunning the command resumes")
    s.add_argument("--board", action="append", default=[], help="mark the best front point that fits this board "
                                                                "(repeat for several)")
    s.add_argument("--teacher", help="teacher.pt to share (else the config's teacher is trained once)")
    s.add_argument("--workers", type=int, default=None, help="tasks at once on a local Ray (0 = every core); "
                                                             "default 1 = sequential")
    s.add_argument("--address", help="an existing Ray cluster (HOST:PORT of its head, or auto)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (the summary lines stay)")
    s.set_defaults(fn=cmd_pareto)
    return s


def cmd_pareto(a: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from kdhw.config import load_config

    from .grid import cpu_workers

    cfg = load_config(a.config)
    workers = cpu_workers(a.workers)
    if workers is None and a.address is None:
        workers = 1
    res = run_pareto(cfg, a.out, boards=a.board, teacher_path=a.teacher, progress=not a.no_progress,
                     log=tqdm.write, workers=workers, address=a.address)
    print(f"wrote {str(a.out).rstrip('/')}/ (pareto.json, pareto.md, pareto.png, {RUNS_FILE}, {POINTS_DIR}/); "
          f"{len(res['front'])} front points of {len(res['points'])}")
    if res["not_bit_exact"]:
        print(f"kdhw pareto: error: not bit-exact: {', '.join(res['not_bit_exact'])} (see DIR/points/<id>/verify.json)",
              file=sys.stderr)
        return 1
    return 0


__all__ = ["add_pareto_parser", "auto_student", "train_points", "cmd_pareto", "mark_front", "pick_for_boards", "point_specs", "run_pareto"]
