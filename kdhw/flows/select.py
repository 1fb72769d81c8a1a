"""Several fixed-point students behind a small model selector that routes each input to one of them.

The selector is itself a tiny brevitas MLP built by ``build_student`` (same power-of-two quantizers, same
8-bit input format as the students), not a float network: in hardware the routing decision is made on the
chip next to the students, and only a selector that goes through the same QONNX -> hls4ml path is
bit-exact there.  A float selector would make the system accuracy measured here a claim about a circuit
nobody can build.  It also exports, converts and verifies exactly like a student.

Training: every student is trained on its own (with the configured distillation method and arm selection,
like ``kdhw distill``); the selector then learns, per input, the probability that each student is right
(one sigmoid per student, binary cross-entropy on the students' correctness on the training rows) and
routes to the most probable one.  Its checkpoint is chosen on the *system's* validation accuracy.  Equal
selector outputs (the 8-bit output can tie) go to the student listed first: list the cheapest first.

``kdhw select CONFIG --out DIR`` (``run_select``) trains the system and takes every part (selector and each
student) through QONNX -> hls4ml -> bit-exact verification, one folder per part; ``selector.json`` records
each part's result and the command exits 1 if any part is not bit-exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdhw.config import Config
from kdhw.errors import InputError
from kdhw.train.data import Dataset
from kdhw.train.distill import Arm, choose, distill, student_input
from kdhw.train.loop import FitResult, fit, predict_logits
from kdhw.train.student import StudentNet, build_student, param_count, save_student, set_relu_grad_leak
from kdhw.util.atomic import save_figure


@dataclass
class System:
    specs: list[dict[str, Any]]
    students: list[Arm]
    selector_spec: dict[str, Any]
    selector: StudentNet
    selector_fit: FitResult
    report: dict[str, Any] = field(default_factory=dict)


def student_specs(cfg: Config) -> list[dict[str, Any]]:
    """``selector.students``: each entry overrides keys of the ``student`` section (layers, bit widths)."""
    entries = cfg.selector["students"]
    if len(entries) < 2:
        raise InputError(f"{cfg.source}: selector.students needs at least 2 student specs, got {len(entries)}")
    allowed = set(cfg.student)
    out = []
    for i, e in enumerate(entries):
        extra = set(e) - allowed
        if extra:
            raise InputError(f"{cfg.source}: selector.students[{i}]: unknown key '{sorted(extra)[0]}'; "
                             f"allowed: {', '.join(sorted(allowed))}")
        out.append({**copy.deepcopy(cfg.student), **copy.deepcopy(e)})
    return out


def selector_spec(cfg: Config, n_students: int) -> dict[str, Any]:
    """A dense-ReLU-dense brevitas MLP on the flattened input, one output per student."""
    s, sel = cfg.student, cfg.selector
    return {"input": copy.deepcopy(s["input"]), "output": copy.deepcopy(s["output"]), "scaling": "po2",
            "weight_bits": sel["weight_bits"], "act_bits": sel["act_bits"], "bias_bits": s["bias_bits"],
            "layers": [{"type": "dense", "units": sel["hidden"]}, {"type": "relu"},
                       {"type": "dense", "units": n_students}]}


def route(selector: nn.Module, x: np.ndarray) -> np.ndarray:
    """Index of the student each row goes to (``x`` in any shape; the selector reads it flattened)."""
    return predict_logits(selector, x.reshape(len(x), -1)).argmax(1)


def _preds(arms: list[Arm], specs: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """(rows, students) predicted classes."""
    return np.stack([predict_logits(a.model, student_input(x, s)).argmax(1) for a, s in zip(arms, specs)], 1)


def train_system(cfg: Config, data: Dataset, teacher_train: np.ndarray | None = None, progress: bool = True,
                 *, teacher: nn.Module | None = None, teacher_cfg: dict[str, Any] | None = None,
                 extra_teachers: list[nn.Module] | None = None, teacher_unlab: np.ndarray | None = None) -> System:
    specs = student_specs(cfg)
    src = cfg.source
    for i, spec in enumerate(specs):  # fail fast, before any training
        build_student(spec, student_input(data.x_val[:1], spec).shape[1:], data.n_classes,
                      f"{src}: selector.students[{i}]")
    students = []
    for i, spec in enumerate(specs):
        arms = distill(spec, cfg.distill, data, teacher_train, progress, f"{src}: selector.students[{i}]",
                       teacher=teacher, teacher_cfg=teacher_cfg, extra_teachers=extra_teachers,
                       teacher_unlab=teacher_unlab)
        chosen, _ = choose(arms, cfg.distill["select"], data)
        students.append(arms[chosen])

    k = len(specs)
    sspec = selector_spec(cfg, k)
    flat = {s: getattr(data, f"x_{s}").reshape(len(getattr(data, f"x_{s}")), -1) for s in ("train", "val")}
    correct_train = (_preds(students, specs, data.x_train) == data.y_train[:, None]).astype(np.float32)
    pred_val = _preds(students, specs, data.x_val)
    rows = np.arange(len(data.x_val))

    def system_val_acc(m: nn.Module) -> float:
        return float((pred_val[rows, route(m, flat["val"])] == data.y_val).mean())

    def loss_fn(m: nn.Module, x: torch.Tensor, c: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(m(x), c)

    seed = int(cfg.distill["seed"])
    torch.manual_seed(seed)
    sel = build_student(sspec, flat["train"].shape[1:], k, f"{src}: selector")
    set_relu_grad_leak(sel, float(cfg.distill["relu_grad_leak"]))  # like every student kdhw trains
    sres = fit(sel, loss_fn, flat["train"], correct_train, flat["val"], data.y_val, epochs=cfg.selector["epochs"],
               lr=cfg.selector["lr"], batch_size=cfg.distill["batch_size"], seed=seed, desc="selector",
               progress=progress, metric=system_val_acc)
    system = System(specs, students, sspec, sel, sres)
    system.report = system_report(system, data)
    return system


def system_report(system: System, data: Dataset) -> dict[str, Any]:
    """Accuracy of the routed system and of each student, parameters of each part, how often each is picked."""
    pred = _preds(system.students, system.specs, data.x_test)
    pick = route(system.selector, data.x_test)
    rows = np.arange(len(pick))
    correct = pred == data.y_test[:, None]
    k = len(system.students)
    students = []
    for i, (a, s) in enumerate(zip(system.students, system.specs)):
        students.append({"index": i, "layers": s["layers"], "weight_bits": s["weight_bits"], "act_bits": s["act_bits"],
                         "params": param_count(a.model), "val_acc": a.fit.best_val_acc,
                         "test_acc": float(correct[:, i].mean()), "picked_fraction": float((pick == i).mean()),
                         "acc_when_picked": float(correct[pick == i, i].mean()) if (pick == i).any() else None})
    sel_params = param_count(system.selector)
    return {
        "system": {"test_acc": float(correct[rows, pick].mean()), "val_acc": system.selector_fit.best_val_acc,
                   "params_total": sel_params + sum(s["params"] for s in students),
                   "best_single_student_test_acc": float(correct.mean(0).max()),
                   "oracle_test_acc": float(correct.any(1).mean()),
                   "test_rows": int(len(pick))},
        "selector": {"kind": "brevitas MLP", "layers": system.selector_spec["layers"],
                     "weight_bits": system.selector_spec["weight_bits"],
                     "act_bits": system.selector_spec["act_bits"], "params": sel_params,
                     "best_epoch": system.selector_fit.best_epoch},
        "students": students,
        "n_students": k,
    }


def report_markdown(rep: dict[str, Any]) -> str:
    s = rep["system"]
    lines = [
        "# Multi-student system with a model selector", "",
        f"System test accuracy **{100 * s['test_acc']:.2f} %** on {s['test_rows']} rows "
        f"(best single student {100 * s['best_single_student_test_acc']:.2f} %, oracle "
        f"{100 * s['oracle_test_acc']:.2f} %); {s['params_total']} parameters in all.", "",
        "![per student: test accuracy, parameters, how often the selector picks it](selector.png)", "",
        "| part | params | test accuracy | picked | accuracy when picked |", "|---|---|---|---|---|",
        f"| selector ({rep['selector']['kind']}, w{rep['selector']['weight_bits']}a{rep['selector']['act_bits']}) "
        f"| {rep['selector']['params']} | — | — | — |",
    ]
    for st in rep["students"]:
        when = "—" if st["acc_when_picked"] is None else f"{100 * st['acc_when_picked']:.2f} %"
        lines.append(f"| student {st['index']} (w{st['weight_bits']}a{st['act_bits']}) | {st['params']} | "
                     f"{100 * st['test_acc']:.2f} % | {100 * st['picked_fraction']:.1f} % | {when} |")
    parts = rep.get("parts")
    if parts:
        lines += ["", f"## Bit-exactness ({rep.get('board', '')}, one folder per part)", "",
                  "| part | rows | brevitas | C-sim | C-sim layers (traced rows) | weights .h = .txt | RTL | RTL sim "
                  "| bit-exact |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, p in parts.items():
            lv = p["levels"]

            def cell(k: str) -> str:
                return f"{lv[k]['exact_rows']}/{lv[k]['rows']}" if k in lv else "—"

            lines.append(f"| `{name}/` | {p['rows']} | {cell('brevitas')} | {cell('csim')} | {cell('csim_layers')} | "
                         f"{'yes' if lv.get('weights', {}).get('consistent') else 'NO'} | {cell('rtl')} | "
                         f"{cell('rtl_sim')} | {'**yes**' if p['bit_exact'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


def selector_plot(rep: dict[str, Any], path: Path) -> None:
    """Per student: test accuracy (with its parameter count) beside how often the selector routes to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = rep["students"]
    names = [f"student {s['index']}\nw{s['weight_bits']}a{s['act_bits']}, {s['params']} params" for s in st]
    xs = np.arange(len(st))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110)
    bars = a1.bar(xs, [100 * s["test_acc"] for s in st], color="tab:blue")
    for b, s in zip(bars, st):
        a1.annotate(f"{100 * s['test_acc']:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    a1.axhline(100 * rep["system"]["test_acc"], color="k", ls="--", lw=1, label="routed system")
    a1.axhline(100 * rep["system"]["oracle_test_acc"], color="tab:green", ls=":", lw=1, label="oracle")
    lo = min(100 * s["test_acc"] for s in st)
    a1.set_ylim(max(0.0, lo - 10), 100)
    a1.set_ylabel("test accuracy (%)")
    a1.set_xticks(xs, names, fontsize=8)
    a1.legend(fontsize=7, loc="lower right")
    a1.set_title("accuracy of each student alone", fontsize=9)
    a2.bar(xs, [100 * s["picked_fraction"] for s in st], color="tab:orange")
    a2.set_ylim(0, 100)
    a2.set_ylabel("test rows routed to it (%)")
    a2.set_xticks(xs, names, fontsize=8)
    a2.set_title(f"selector's picks (selector: {rep['selector']['params']} params)", fontsize=9)
    for a in (a1, a2):
        a.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def part_inputs(system: System, data: Dataset) -> dict[str, tuple[nn.Module, dict[str, Any], tuple[int, ...]]]:
    """``name -> (model, spec, input shape)`` for the selector and every student, in file-name order."""
    parts = {"selector": (system.selector, system.selector_spec, (int(np.prod(data.shape)),))}
    for i, (a, s) in enumerate(zip(system.students, system.specs)):
        parts[f"student_{i}"] = (a.model, s, tuple(student_input(data.x_test[:1], s).shape[1:]))
    return parts


def write_system(system: System, data: Dataset, d: Path, report: dict[str, Any] | None = None) -> None:
    """``student_<i>.pt`` and ``selector.pt`` (each loadable by ``kdhw export``), the report and its plot."""
    from kdhw.util.atomic import write_json, write_text

    for name, (model, spec, shape) in part_inputs(system, data).items():
        save_student(model, spec, shape, d / f"{name}.pt")
    rep = system.report if report is None else report
    write_json(d / "selector.json", rep)
    write_text(d / "selector.md", report_markdown(rep))
    selector_plot(rep, d / "selector.png")


def save_system(system: System, data: Dataset, out: str | Path) -> Path:
    """The trained system alone (no hardware stages), written atomically into ``out``."""
    from kdhw.util.atomic import atomic_dir

    out = Path(out)
    with atomic_dir(out) as d:
        write_system(system, data, d)
    return out


# ---------------------------------------------------------------- ``kdhw select``: train, then every part to hardware

def run_select(cfg: Config, out: str | Path, *, teacher_path: str | None = None, progress: bool = True,
               log: Any = print) -> dict[str, Any]:
    """Train the system, then export, convert and verify each part bit-exact (one folder per part).

    This is ``kdhw run``'s counterpart for a system: it imports the hardware stages, which sit to the right
    of training in the pipeline, inside the function so that importing this module stays a training-side
    import.  The hls4ml projects are written without compiling hls4ml's own C-sim library: verification
    compiles its private copy from the header weights synthesis uses, and nothing else here needs it.
    Everything lands in a sibling folder swapped in at the end, as for ``kdhw run``.
    """
    from kdhw.util.runtime import torch_threads

    with torch_threads():
        return _run_select(cfg, Path(out), teacher_path, progress, log)


def _run_select(cfg: Config, out: Path, teacher_path: str | None, progress: bool, log: Any) -> dict[str, Any]:
    import time

    from tqdm import tqdm

    from kdhw.boards import load_board
    from kdhw.train.data import load_data
    from kdhw.train.losses import get_method
    from kdhw.train.teacher import obtain_teacher, teacher_accuracy, teacher_logits
    from kdhw.util.atomic import atomic_dir

    from .to_hardware import check_hardware_tools, student_to_hardware

    timings: dict[str, float] = {}
    t = time.perf_counter()
    board = load_board(cfg.hls["board"])
    check_hardware_tools(cfg)
    data = load_data(cfg)  # layout + input contract (each selector student's own input too)
    specs = student_specs(cfg)
    for i, spec in enumerate(specs):  # fail fast, before the teacher is trained
        build_student(spec, student_input(data.x_val[:1], spec).shape[1:], data.n_classes,
                      f"{cfg.source}: selector.students[{i}]")
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    tpath = teacher_path or cfg.teacher["path"]
    meth = get_method(cfg.distill["method"])
    tmodel = tcfg = tl = None
    if tpath or meth.needs_teacher or meth.needs_teacher_model:
        tmodel, tcfg, _ = obtain_teacher(cfg.teacher, data, tpath, progress, cfg.source)
    teacher_info = None
    if tmodel is not None:
        tl = teacher_logits(tmodel, tcfg["arch"], data)
        teacher_info = {"arch": tcfg["arch"], "test_acc": teacher_accuracy(tl, data)["test"], "loaded_from": tpath}
        log(f"[teacher] {tcfg['arch']}: test {100 * teacher_info['test_acc']:.2f} %")
    timings["teacher"] = time.perf_counter() - t

    t = time.perf_counter()
    system = train_system(cfg, data, None if tl is None else tl["train"], progress, teacher=tmodel, teacher_cfg=tcfg,
                          teacher_unlab=None if tl is None else tl.get("unlab"))
    timings["train"] = time.perf_counter() - t
    alone = ", ".join(f"{100 * s['test_acc']:.2f} %" for s in system.report["students"])
    log(f"[select] system test {100 * system.report['system']['test_acc']:.2f} % (students alone: {alone})")

    parts: dict[str, Any] = {}
    out = Path(out)
    with atomic_dir(out) as d:
        items = part_inputs(system, data)
        bar = tqdm(items.items(), desc="export/hls/verify", unit="part", disable=not progress, leave=False)
        for k, (name, (model, spec, shape)) in enumerate(bar):
            sub = d / name
            sub.mkdir()
            save_student(model, spec, shape, sub / "student.pt")
            # the selector reads the flattened input; a student reads it in its own layout
            x_test = data.x_test.reshape(len(data.x_test), -1) if name == "selector" else student_input(data.x_test,
                                                                                                       spec)
            y_test = None if name == "selector" else data.y_test  # the selector's outputs are not classes
            hw = student_to_hardware(model, shape, sub, cfg, board, x_test, y_test=y_test,
                                     student_pt=sub / "student.pt", seed_offset=k, log=lambda *_: None, name=name)
            ver = hw.verify
            parts[name] = {"dir": name, "bit_exact": hw.bit_exact, "rows": ver["rows"],
                           "levels": {lk: {kk: vv for kk, vv in lv.items() if kk != "layers"}
                                      for lk, lv in ver["levels"].items()},
                           "first_divergence": ver["first_divergence"], "params": param_count(model),
                           "seconds": sum(hw.timings.values())}
            log(f"[{name}] QONNX -> hls4ml{' + RTL' if hw.rtl_dir else ''} -> verify: "
                f"bit-exact={ver['bit_exact']} on {ver['rows']} rows")
        bar.close()
        timings["export_hls_verify"] = sum(p["seconds"] for p in parts.values())
        rep = {**system.report, "parts": parts, "bit_exact": all(p["bit_exact"] for p in parts.values()),
               "board": board.name, "teacher": teacher_info, "data": data.manifest, "config_source": cfg.source,
               "distill": cfg.distill, "timings_s": timings}
        write_system(system, data, d, rep)
    return rep
