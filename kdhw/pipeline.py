"""``kdhw run``: every stage in order, each reading the previous stage's artifact from disk.

The whole output directory is assembled beside the destination and swapped in at the end, so a run that
fails on bad input or crashes leaves an earlier good result untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from .atomic import atomic_dir, write_json, write_text
from .config import Config
from .data import load_dataset
from .distill import choose, distill, student_input, summary
from .errors import InputError, ToolMissing
from .export import export_qonnx, hls_input_type, load_qonnx
from .hls import build_hls_project
from .report import training_plot, write_report
from .student import build_student, describe, param_count, save_student
from .teacher import obtain_teacher, save_teacher, teacher_accuracy, teacher_logits
from .verify import verify_project


def random_inputs(n: int, shape: tuple[int, ...], fmt: Any, seed: int) -> np.ndarray:
    """Off-grid floats covering the input type's range and 10 % beyond it (exercises rounding and saturation)."""
    rng = np.random.default_rng(seed)
    hi = 2.0 ** fmt.int_bits
    lo = -hi if fmt.signed else 0.0
    span = hi - lo
    return rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(n, *shape)).astype(np.float32)


def _noise_note(val_diff: float, n_val: int) -> str:
    """Is a validation difference within seed noise?  One binomial standard error of a paired difference."""
    se = 100 * np.sqrt(2 * 0.1 * 0.9 / max(n_val, 1))
    if abs(val_diff) <= 2 * se:
        return f"Within seed noise (|diff| ≤ 2 × {se:.1f} points, one seed); see benchmarks/ for multi-seed figures."
    return f"Larger than 2 × {se:.1f} points of single-seed noise."


def set_torch_threads() -> None:
    """One intra-op thread by default: these students are so small that thread hand-offs dominate, and on
    a shared 2-core machine two threads ran an epoch 4-9x slower than one.  ``KDHW_TORCH_THREADS`` overrides."""
    import os

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("KDHW_TORCH_THREADS", "1"))))


def check_hardware_tools(cfg: Config, report_boards: Sequence[Any] = ()) -> None:
    """Look up the external tools the later stages need now, so a missing one costs seconds, not a training:
    g++ (C-sim) always, the simulator when the RTL is simulated on some rows (the condition verify uses),
    yosys/nextpnr when the report synthesizes that RTL for ``report_boards``."""
    import shutil

    if shutil.which("g++") is None:
        raise ToolMissing("g++ not found; the hls4ml C-sim and kdhw verify need it (apt-get install g++)")
    if cfg.rtl["enabled"] and cfg.rtl["sim_rows"] > 0:
        from .sim.runner import check_simulator

        try:
            check_simulator(cfg.rtl["simulator"])
        except ToolMissing as e:
            raise ToolMissing(f"{e} (or set rtl.sim_rows: 0 in the config to skip the RTL simulation)") from None
    if cfg.rtl["enabled"] and cfg.report["synth"] and report_boards:
        from .synth import check_tools

        try:
            check_tools(list(report_boards))
        except ToolMissing as e:
            raise ToolMissing(f"{e} (in a run config: report.synth: false)") from None


def run(cfg: Config, out: str | Path, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns report.json's dict."""
    from .boards import load_board

    set_torch_threads()
    board = load_board(cfg.hls["board"])
    report_boards = [load_board(b) for b in cfg.report["boards"]]  # unknown names fail before any work
    check_hardware_tools(cfg, report_boards)
    timings: dict[str, float] = {}
    out = Path(out)
    with atomic_dir(out) as d:
        t = time.perf_counter()
        data = load_dataset(cfg.data, cfg.source)
        write_json(d / "data_manifest.json", data.manifest)
        write_text(d / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        # fail fast: a bad student spec must not cost a teacher training first
        build_student(cfg.student, student_input(data.x_val[:1], cfg.student).shape[1:], data.n_classes, cfg.source)
        timings["data"] = time.perf_counter() - t
        log(f"[data] {data.name}: {data.manifest['train']}/{data.manifest['val']}/{data.manifest['test']} rows, "
            f"shape {data.shape}, {data.n_classes} classes")

        t = time.perf_counter()
        tmodel, tcfg, tres = obtain_teacher(cfg.teacher, data, cfg.teacher["path"], progress, cfg.source)
        save_teacher(tmodel, tcfg, data.shape, data.n_classes, d / "teacher.pt")
        tl = teacher_logits(tmodel, tcfg["arch"], data)
        np.savez(d / "teacher_logits.npz", **tl)
        tacc = teacher_accuracy(tl, data)
        timings["teacher"] = time.perf_counter() - t
        log(f"[teacher] {tcfg['arch']}: test {100 * tacc['test']:.2f} %")

        t = time.perf_counter()
        arms = distill(cfg.student, cfg.distill, data, tl["train"], progress, cfg.source, teacher=tmodel,
                       teacher_cfg=tcfg, teacher_unlab=tl.get("unlab"))
        chosen, reason = choose(arms, cfg.distill["select"])
        shape = student_input(data.x_test, cfg.student).shape[1:]
        for k, a in arms.items():
            save_student(a.model, cfg.student, shape, d / f"student_{k}.pt")
        save_student(arms[chosen].model, cfg.student, shape, d / "student.pt")
        timings["distill"] = time.perf_counter() - t
        summ = summary(arms)
        log("[distill] " + ", ".join(f"{k} test {100 * a.test_acc:.2f} %" for k, a in arms.items())
            + f" -> exporting {chosen}")
        training_plot({k: a.fit.history for k, a in arms.items()}, tacc["val"], d / "training.png")

        t = time.perf_counter()
        onnx_path = export_qonnx(arms[chosen].model, shape, d / "student.qonnx.onnx")
        mw = load_qonnx(onnx_path)
        timings["export"] = time.perf_counter() - t
        log(f"[export] {onnx_path.name}: {len(mw.graph.node)} nodes")

        t = time.perf_counter()
        period = cfg.hls["clock_period_ns"] or board.clock_period_ns
        build_hls_project(onnx_path, d / "hls", part=board.part, clock_period_ns=period,
                          backend=cfg.hls["backend"], io_type=cfg.hls["io_type"],
                          reuse_factor=cfg.hls["reuse_factor"], strategy=cfg.hls["strategy"], board=board.name)
        timings["hls"] = time.perf_counter() - t
        log(f"[hls] {cfg.hls['backend']} project for {board.name} ({board.part}), C-sim compiled")

        rtl_dir = None
        if cfg.rtl["enabled"]:
            from .rtl import qonnx_to_rtl

            t = time.perf_counter()
            rmeta = qonnx_to_rtl(onnx_path, d / "rtl", latency_cutoff=cfg.rtl["latency_cutoff"],
                                 pipeline=cfg.rtl["pipeline"], clock_period_ns=board.clock_period_ns)
            rtl_dir = d / "rtl"
            timings["rtl"] = time.perf_counter() - t
            log(f"[rtl] Verilog {rmeta['top']}: latency {rmeta['latency_cycles']} cycles, "
                f"{rmeta['input_bits_total']} input bits, {rmeta['output_bits_total']} output bits")

        t = time.perf_counter()
        x_test = student_input(data.x_test, cfg.student)
        xr = random_inputs(cfg.verify["random_inputs"], tuple(shape), arms[chosen].model.input_format,
                           cfg.verify["random_seed"])
        xv = np.concatenate([x_test.astype(np.float32), xr])
        np.save(d / "verify_inputs.npy", xv)
        ver = verify_project(d / "hls", xv, student_pt=d / "student.pt", rtl_dir=rtl_dir,
                             simulator=cfg.rtl["simulator"], sim_rows=cfg.rtl["sim_rows"])
        # fidelity is measured on the labelled test rows only
        ver_test = _fidelity(ver, mw, x_test, data.y_test, tl["test"])
        write_json(d / "verify.json", ver_test)
        timings["verify"] = time.perf_counter() - t
        log(f"[verify] bit-exact={ver_test['bit_exact']} on {ver_test['rows']} rows; "
            f"teacher agreement {100 * ver_test['teacher_agreement']:.1f} %")

        hw = None
        if report_boards:
            from .hwreport import hardware_report

            t = time.perf_counter()
            hw = hardware_report(d, report_boards, onnx_path, rtl_dir, cfg.report["vendor_report"],
                                 synth=cfg.report["synth"], log=log)
            timings["report"] = time.perf_counter() - t
            for e in hw["boards"]:
                s_ = e["synthesis"] or {}
                log(f"[report] {e['board']}: LUT {s_.get('lut', e['estimate']['lut'])} "
                    f"({e['utilization_basis']}), fits={e['fits']}"
                    + (f", fmax {s_['fmax_mhz']:.1f} MHz" if s_.get("fmax_mhz") else ""))

        val_diff = 100 * (summ.get("kd", summ["scratch"])["val_acc"] - summ["scratch"]["val_acc"])
        test_diff = 100 * (summ.get("kd", summ["scratch"])["test_acc"] - summ["scratch"]["test_acc"])
        rep = {
            "config_source": cfg.source,
            "data": data.manifest,
            "teacher": {"arch": tcfg["arch"], "test_acc": tacc["test"], "val_acc": tacc["val"],
                        "params": sum(p.numel() for p in tmodel.parameters()),
                        "epochs": None if tres is None else tres.epochs_run,
                        "loaded_from": cfg.teacher["path"]},
            "students": summ,
            "chosen": {"arm": chosen, "reason": reason, "val_diff_points": val_diff, "test_diff_points": test_diff,
                       "noise_note": _noise_note(val_diff, data.manifest["val"])},
            "student": {"layers": describe(arms[chosen].model), "params": param_count(arms[chosen].model),
                        "input_type": hls_input_type(mw), "distill": cfg.distill},
            "verify": ver_test,
            "verify_random_inputs": cfg.verify["random_inputs"],
            "board": board.name,
            "hardware_report": "hw_report.md" if hw else None,
            "hardware": None if hw is None else [
                {"board": e["board"], "fits": e["fits"], "lut": (e["synthesis"] or {}).get("lut"),
                 "lut_estimate": e["estimate"]["lut"], "fmax_mhz": (e["synthesis"] or {}).get("fmax_mhz"),
                 "latency_cycles": e["latency"]["cycles"]} for e in hw["boards"]],
            "timings_s": timings,
        }
        write_report(d, rep)
    return rep


def _fidelity(ver: dict[str, Any], mw: Any, x_test: np.ndarray, y_test: np.ndarray,
              t_test: np.ndarray) -> dict[str, Any]:
    from .export import reference

    pred = reference(mw, x_test).argmax(1)
    ver = dict(ver)
    ver["teacher_agreement"] = float((pred == t_test.argmax(1)).mean())
    ver["student_accuracy"] = float((pred == y_test).mean())
    ver["teacher_accuracy"] = float((t_test.argmax(1) == y_test).mean())
    ver["fidelity_rows"] = int(len(x_test))
    return ver


def check_out_dir(out: str | Path) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: --out exists and is not a directory")
    return p
