"""One path from a trained student to verified hardware: QONNX -> hls4ml project -> RTL -> verify -> report.

``kdhw run``, ``kdhw select`` and ``kdhw pareto`` all hand their students to ``student_to_hardware``, so a
student is exported, converted, verified and reported the same way whichever verb trained it, and a fix
to one stage reaches every verb.  It sits to the right of training: it reads a trained model and writes
artifacts, and imports nothing from the training side but the student's checkpoint format.

Fidelity figures (student and teacher accuracy, top-1 agreement with the teacher) are measured on the
rows of the verification inputs that carry a label, and ``verify.json`` says how many those were: a run
verifies the labelled test split followed by unlabelled off-grid random inputs, and writes the labels beside
the inputs (``verify_labels.npy``, -1 for an unlabelled row), so ``kdhw verify DIR`` later measures the same
figures on the same rows.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdhw.boards import Board
from kdhw.config import Config
from kdhw.errors import ToolMissing
from kdhw.util.atomic import write_json
from kdhw.verify.levels import UNLABELLED

VERIFY_INPUTS = "verify_inputs.npy"
VERIFY_LABELS = "verify_labels.npy"


@dataclass
class Hardware:
    """What ``student_to_hardware`` produced, with each stage's wall time."""

    onnx: Path
    hls_dir: Path | None
    rtl_dir: Path | None
    rtl_meta: dict[str, Any] | None
    verify: dict[str, Any]
    hw_report: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bit_exact(self) -> bool:
        return bool(self.verify["bit_exact"])


def random_inputs(n: int, shape: tuple[int, ...], fmt: Any, seed: int) -> np.ndarray:
    """Off-grid floats covering the input type's range and 10 % beyond it (exercises rounding and saturation)."""
    rng = np.random.default_rng(seed)
    hi = 2.0 ** fmt.int_bits
    lo = -hi if fmt.signed else 0.0
    span = hi - lo
    return rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(n, *shape)).astype(np.float32)


def check_hardware_tools(cfg: Config, report_boards: Sequence[Board] = ()) -> None:
    """Look up the external tools the later stages need now, so a missing one costs seconds, not a training:
    g++ (C-sim) always, the simulator when the RTL is simulated on some rows (the condition verify uses),
    yosys/nextpnr when the report synthesizes that RTL for ``report_boards``."""
    if shutil.which("g++") is None:
        raise ToolMissing("g++ not found; the hls4ml C-sim and kdhw verify need it (apt-get install g++)")
    if cfg.rtl["enabled"] and cfg.rtl["sim_rows"] > 0:
        from kdhw.verify.sim.runner import check_simulator

        try:
            check_simulator(cfg.rtl["simulator"])
        except ToolMissing as e:
            raise ToolMissing(f"{e} (or set rtl.sim_rows: 0 in the config to skip the RTL simulation)") from None
    boards = list(report_boards)
    if cfg.rtl["enabled"] and cfg.rtl["mode"] == "auto":  # the board rtl.mode: auto fits is synthesized too
        from kdhw.boards import load_board

        boards.append(load_board(cfg.rtl["board"] or cfg.hls["board"]))
    if cfg.rtl["enabled"] and cfg.report["synth"] and boards:
        from kdhw.hw.synth import check_tools

        try:
            check_tools(boards)
        except ToolMissing as e:
            raise ToolMissing(f"{e} (in a run config: report.synth: false)") from None


def verification_rows(x_labelled: np.ndarray, y: np.ndarray | None, n_random: int, fmt: Any,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels ``kdhw verify`` checks: the labelled rows, then ``n_random`` off-grid random inputs."""
    shape = tuple(x_labelled.shape[1:])
    xr = random_inputs(n_random, shape, fmt, seed)
    x = np.concatenate([np.asarray(x_labelled, dtype=np.float32), xr])
    lab = np.full(len(x), UNLABELLED, dtype=np.int64)
    if y is not None:
        if len(y) != len(x_labelled):
            raise ValueError(f"{len(y)} labels for {len(x_labelled)} labelled rows")
        lab[:len(x_labelled)] = np.asarray(y, dtype=np.int64)
    return x, lab


def student_to_hardware(
    model: Any,
    shape: tuple[int, ...],
    out: Path,
    cfg: Config,
    board: Board,
    x_test: np.ndarray,
    *,
    y_test: np.ndarray | None = None,
    teacher_test: np.ndarray | None = None,
    student_pt: Path | None = None,
    seed_offset: int = 0,
    report_boards: Sequence[Board] = (),
    log: Any = print,
    name: str = "",
) -> Hardware:
    """Export ``model`` and take it through every hardware stage the config enables, into ``out``.

    ``out`` is a folder being assembled (the caller's ``atomic_dir``); it receives ``student.qonnx.onnx``,
    ``hls/``, ``rtl/`` (when ``rtl.enabled``), ``verify_inputs.npy``/``verify_labels.npy``, ``verify.json``
    and, for ``report_boards``, the hardware report.  ``x_test``/``y_test``/``teacher_test``: the labelled
    rows verified first and the fidelity figures are measured on (``teacher_test``: the teacher's logits on
    them); ``seed_offset`` varies the random verification inputs between the parts of one system.

    The hls4ml project is written but hls4ml's own C-sim library is not compiled: verification compiles a
    private copy from the header weights synthesis uses (``kdhw.verify.csim``), and nothing here reads the other.
    """
    from kdhw.hw.export import export_qonnx, load_qonnx
    from kdhw.hw.hls import build_hls_project
    from kdhw.verify.levels import verify_project

    tag = f"[{name}] " if name else ""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    onnx_path = export_qonnx(model, shape, out / "student.qonnx.onnx")
    mw = load_qonnx(onnx_path)
    timings["export"] = time.perf_counter() - t
    log(f"{tag}[export] {onnx_path.name}: {len(mw.graph.node)} nodes")

    t = time.perf_counter()
    # the rows verify checks below are also the hls4ml testbench's vectors (hls/tb_data/)
    xv, labels = verification_rows(x_test, y_test, cfg.verify["random_inputs"], model.input_format,
                                   cfg.verify["random_seed"] + seed_offset)
    period = cfg.hls["clock_period_ns"] or board.clock_period_ns
    build_hls_project(onnx_path, out / "hls", part=board.part, clock_period_ns=period, backend=cfg.hls["backend"],
                      io_type=cfg.hls["io_type"], reuse_factor=cfg.hls["reuse_factor"],
                      strategy=cfg.hls["strategy"], board=board.name, compile_csim=False, tb_inputs=xv,
                      tb_source=f"{VERIFY_INPUTS}: the test rows, then {cfg.verify['random_inputs']} random rows")
    timings["hls"] = time.perf_counter() - t
    log(f"{tag}[hls] {cfg.hls['backend']} project for {board.name} ({board.part})")

    rtl_dir = rmeta = None
    if cfg.rtl["enabled"]:
        from kdhw.boards import load_board
        from kdhw.hw.board_fit import rtl_for_config

        t = time.perf_counter()
        fit_board = load_board(cfg.rtl["board"]) if cfg.rtl["board"] else board  # rtl.mode: auto fits this one
        rmeta = rtl_for_config(onnx_path, out / "rtl", cfg.rtl, fit_board, synth=cfg.report["synth"], log=log)
        rtl_dir = out / "rtl"
        timings["rtl"] = time.perf_counter() - t
        log(f"{tag}[rtl] Verilog {rmeta['top']} ({rmeta['mode']}): latency {rmeta['latency_cycles']} cycles, "
            + (f"{rmeta['input_bits_total']} input bits, {rmeta['output_bits_total']} output bits"
               if rmeta["mode"] == "parallel" else
               f"II {rmeta['initiation_interval']} cycles, {rmeta['stream']['beats_in']} beats in, "
               f"{rmeta['stream']['beats_out']} out"))

    t = time.perf_counter()
    np.save(out / VERIFY_INPUTS, xv)
    np.save(out / VERIFY_LABELS, labels)
    teacher_rows = None
    if teacher_test is not None:  # the random rows have no teacher logits: they are unlabelled anyway
        teacher_rows = np.concatenate([np.asarray(teacher_test),
                                       np.zeros((len(xv) - len(teacher_test), np.asarray(teacher_test).shape[1]))])
    ver = verify_project(out / "hls", xv, student_pt=student_pt, rtl_dir=rtl_dir, simulator=cfg.rtl["simulator"],
                         sim_rows=cfg.rtl["sim_rows"], labels=labels, teacher_logits=teacher_rows)
    write_json(out / "verify.json", ver)
    timings["verify"] = time.perf_counter() - t
    agree = ver["teacher_agreement"]
    log(f"{tag}[verify] bit-exact={ver['bit_exact']} on {ver['rows']} rows"
        + ("" if agree is None else f"; teacher agreement {100 * agree:.1f} % on {ver['fidelity_rows']} test rows"))

    hw = None
    if report_boards:
        from kdhw.hw.report import hardware_report

        t = time.perf_counter()
        hw = hardware_report(out, list(report_boards), onnx_path, rtl_dir, cfg.report["vendor_report"],
                             synth=cfg.report["synth"], log=log)
        timings["report"] = time.perf_counter() - t
        for e in hw["boards"]:
            s_ = e["synthesis"] or {}
            log(f"{tag}[report] {e['board']}: LUT {s_.get('lut', e['estimate']['lut'])} ({e['utilization_basis']}), "
                f"fits={e['fits']}" + (f", fmax {s_['fmax_mhz']:.1f} MHz" if s_.get("fmax_mhz") else ""))
    return Hardware(onnx_path, out / "hls", rtl_dir, rmeta, ver, hw, timings)


def hardware_summary(hw: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The per-board lines a training report shows (the full figures stay in hw_report.json)."""
    if hw is None:
        return None
    fit = hw.get("fit") or {}
    form = {"form": fit["chosen"], "fit_board": fit["board"]} if fit.get("chosen") else {}
    return [{**form, "board": e["board"], "fits": e["fits"], "lut": (e["synthesis"] or {}).get("lut"),
             "lut_estimate": e["estimate"]["lut"], "fmax_mhz": (e["synthesis"] or {}).get("fmax_mhz"),
             "latency_cycles": e["latency"]["cycles"], "mode": e.get("mode"), "dsp": e["used"]["dsp"],
             "initiation_interval": e["latency"]["initiation_interval"],
             "latency_ns_at_board_clock": e["latency"]["ns_at_board_clock"],
             "frames_per_s_at_board_clock": e["latency"]["frames_per_s_at_board_clock"],
             "frames_per_s_at_fmax": e["latency"]["frames_per_s_at_fmax"],
             "pins_needed": e["io"]["pins_needed"], "pins": e["io"]["pins"]} for e in hw["boards"]]
