"""Thin command line: parse arguments, call one public function per stage, map errors to exit codes.

Exit codes: 0 ok, 1 verification or fit failure, 2 bad input/config/missing tool (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import CheckFailed, InputError, KdhwError

# Third-party warnings that say nothing about the user's model or data, each silenced by its exact text;
# everything else (brevitas' and hls4ml's precision and quantization warnings among them) is shown.
_NOISE = (
    (UserWarning, r"fast_hadamard_transform package not found"),  # brevitas: an optional speed-up, unused here
    (UserWarning, r"The GemmToMatMul transformation only offers explicit support"),  # qonnx, on every export
    (DeprecationWarning, r"brevitas\.fx is deprecated"),
    (FutureWarning, r"You are using `torch\.load` with `weights_only=False`"),
)


def _quiet_libraries(keep_warnings: bool = False) -> None:
    """The CLI is an application: it may set process-wide logging.  Noise is silenced where it is made
    (onnxruntime's logger, named warnings), never by hiding every warning (``kdhw.util.quiet`` for the API)."""
    from kdhw.util.quiet import silence_onnxruntime

    for cat, msg in () if keep_warnings else _NOISE:
        warnings.filterwarnings("ignore", message=msg, category=cat)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    silence_onnxruntime()
    from kdhw.util.runtime import set_torch_threads

    set_torch_threads()


def cmd_run(a: argparse.Namespace) -> int:
    from kdhw.flows.run import check_out_dir, run

    from .config import load_config

    cfg = load_config(a.config)
    rep = run(cfg, check_out_dir(a.out), progress=_progress(a))
    print(f"wrote {a.out.rstrip('/')}/ (report.md, verify.json, hls/" + (", rtl/, hw_report.md)" if rep.get("hardware") else ")"))
    if not rep["verify"]["bit_exact"]:
        return 1
    if cfg.report["require_fit"] and not all(h["fits"] for h in rep.get("hardware") or []):
        print("kdhw run: error: design does not fit: " + ", ".join(h["board"] for h in rep["hardware"]
                                                                  if not h["fits"]), file=sys.stderr)
        return 1
    return 0


def cmd_teacher(a: argparse.Namespace) -> int:
    from kdhw.flows.stages import teacher_stage
    from kdhw.train.data import load_data
    from kdhw.util.atomic import atomic_dir, write_json

    from .config import load_config

    cfg = load_config(a.config)
    data = load_data(cfg, enforce=False)  # laid out as the student will read it; no student is trained here
    with atomic_dir(a.out) as d:
        teacher = teacher_stage(cfg, data, progress=_progress(a))
        teacher.save(d / "teacher.pt", data)
        write_json(d / "teacher.json", {"accuracy": teacher.accuracy, "epochs": teacher.epochs, "data": data.manifest})
    _say(a, f"teacher test accuracy {100 * teacher.accuracy['test']:.2f} % -> {a.out}/teacher.pt")
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from kdhw.flows.stages import check_student, distill_stage, teacher_stage
    from kdhw.train.data import load_data
    from kdhw.train.distill import summary
    from kdhw.util.atomic import atomic_dir, write_json

    from .config import load_config

    cfg = load_config(a.config)
    if a.teacher:
        cfg.teacher["path"] = a.teacher  # the handed-over teacher's input shape decides an open layout
    data = load_data(cfg)
    check_student(cfg, data)
    with atomic_dir(a.out) as d:
        teacher = teacher_stage(cfg, data, progress=_progress(a))
        students = distill_stage(cfg, data, teacher, progress=_progress(a), work=d, log=_log(a))
        students.save_all(d)
        write_json(d / "distill.json", {"arms": summary(students.arms), "chosen": students.chosen,
                                        "reason": students.reason, "auto": students.auto,
                                        "teacher": {k: teacher.config.get(k) for k in ("arch", "path", "format", "outputs")}})
    _say(a, ", ".join(f"{k}: test {100 * v.test_acc:.2f} %" for k, v in students.arms.items())
         + f"; exported {students.chosen}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from kdhw.hw.export import export_qonnx
    from kdhw.train.student import load_student

    model = load_student(a.student)
    shape = tuple(int(s) for s in _student_shape(a.student))
    export_qonnx(model, shape, a.out)
    print(f"wrote {a.out}")
    return 0


def _student_shape(path: str) -> list[int]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["input_shape"]


def cmd_hls(a: argparse.Namespace) -> int:
    from kdhw.hw.hls import build_hls_project

    from .boards import load_board

    board = load_board(a.board)
    tb = None
    if a.inputs:  # test vectors for hls4ml's testbench; the shape is checked against the model's
        try:
            tb = np.load(a.inputs, allow_pickle=False)
        except (OSError, ValueError):
            raise InputError(f"{a.inputs}: not a readable .npy array file") from None
    meta = build_hls_project(
        a.model, a.out, part=board.part, clock_period_ns=a.clock_period or board.clock_period_ns,
        backend=a.backend, io_type=a.io_type, reuse_factor=a.reuse_factor, strategy=a.strategy, board=board.name,
        tb_inputs=tb, tb_source=a.inputs,
    )
    vectors = (f"{meta['tb_data']['rows']} test vectors in tb_data/" if meta["tb_data"] else
               "no test vectors (give --inputs X.npy for tb_data/)")
    print(f"wrote hls4ml {meta['backend']} project {a.out}/ for {board.name} ({board.part}); "
          f"input {meta['input_type']}; C-sim compiled; {vectors}")
    return 0


def _find_dirs(d: Path) -> tuple[Path | None, Path | None]:
    """(hls4ml project, RTL directory) in DIR: a run folder holds both as hls/ and rtl/; ``kdhw hls`` and
    ``kdhw rtl`` write one each directly."""
    from kdhw.hw.hls import META_FILE

    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    project = d / "hls" if (d / "hls" / META_FILE).is_file() else (d if (d / META_FILE).is_file() else None)
    rtl = d / "rtl" if (d / "rtl" / "rtl.json").is_file() else (d if (d / "rtl.json").is_file() else None)
    if project is None and rtl is None:
        raise InputError(f"{d}: neither a run folder, an hls4ml project (kdhw hls) nor an RTL directory (kdhw rtl)")
    return project, rtl


def cmd_verify(a: argparse.Namespace) -> int:
    import numpy as np

    from kdhw.flows.to_hardware import VERIFY_INPUTS, VERIFY_LABELS
    from kdhw.verify.levels import load_inputs, verify_project, verify_rtl

    d = Path(a.dir)
    project, rtl_dir = _find_dirs(d)
    if a.model and project is not None:
        raise InputError(f"--model: {d} holds an hls4ml project, whose own copy of the model is checked")
    if project is not None:
        from kdhw.hw.hls import read_meta

        meta = read_meta(project)
    else:
        from kdhw.hw.rtl import load_meta

        meta = load_meta(rtl_dir)
    if a.inputs is None:  # a run folder verifies the rows the run verified
        if not (d / VERIFY_INPUTS).is_file():
            raise InputError(f"{d}: no {VERIFY_INPUTS} here (a run folder has one); give --inputs X.npy")
        a.inputs = str(d / VERIFY_INPUTS)
    x = load_inputs(a.inputs, tuple(meta["input_shape"]))
    labels = None
    run_labels = d / VERIFY_LABELS  # a run's own verification rows come with their labels
    if a.labels:
        labels = np.load(a.labels, allow_pickle=False)
        if labels.shape != (len(x),):
            raise InputError(f"{a.labels}: labels must have shape ({len(x)},) (-1 for a row without one), "
                             f"got {labels.shape}")
    elif run_labels.is_file() and Path(a.inputs).resolve() == (d / VERIFY_INPUTS).resolve():
        labels = np.load(run_labels, allow_pickle=False)
    if project is None:  # an RTL directory alone: its levels against the QONNX reference
        res = verify_rtl(rtl_dir, x, model=a.model, simulator=a.simulator, sim_rows=a.sim_rows, labels=labels,
                         out_json=d / "verify.json")
    else:
        teacher_logits = _teacher_logits_for(d, x) if project != d else None
        res = verify_project(project, x, student_pt=d / "student.pt", rtl_dir=rtl_dir, simulator=a.simulator,
                             sim_rows=a.sim_rows, teacher_logits=teacher_logits, labels=labels,
                             out_json=d / "verify.json")
    for name, lv in res["levels"].items():
        if "rows" in lv:
            lat = (f"; latency {lv['latency_measured']} cycles (reported {lv['latency_reported']})"
                   if "latency_ok" in lv else "")
            if "ii_measured" in lv:
                lat += (f"; II {lv['ii_measured']} (reported {lv['ii_reported']}); stalls, reset, tlast "
                        f"{'ok' if lv['protocol_ok'] else 'FAILED'}")
            print(f"{name:11s} {lv['exact_rows']}/{lv['rows']} rows exact{lat}")
        elif name == "weights":
            print(f"weights   .h and .txt copies {'agree' if lv['consistent'] else 'DIFFER: ' + str(lv['h_vs_txt_mismatches'])}")
    if res["first_divergence"]:
        fd = res["first_divergence"]
        print(f"first diverging layer: {fd['layer']} ({fd['class']}), row {fd['row']}")
    print(f"bit_exact={res['bit_exact']} -> {d / 'verify.json'}")
    if not res["bit_exact"]:
        raise CheckFailed(f"{d}: not bit-exact" + (f"; first diverging layer {res['first_divergence']['layer']}"
                                                  if res["first_divergence"] else ""))
    return 0


def _teacher_logits_for(run_dir: Path, x: Any) -> Any:
    """Teacher logits for the verify inputs when DIR is a run directory holding ``teacher.pt``."""
    tp = run_dir / "teacher.pt"
    if not tp.is_file():
        return None
    import torch

    from kdhw.train.loop import predict_logits
    from kdhw.train.teacher import load_teacher, teacher_input

    model, tcfg = load_teacher(tp)
    shape = torch.load(tp, map_location="cpu", weights_only=True)["input_shape"]
    if x[0].size != int(np.prod(shape)) or not getattr(model, "runnable", True):
        return None  # a logits-file teacher has no outputs for the random verification rows
    return predict_logits(model, teacher_input(x.reshape(len(x), *shape), tcfg["arch"]))


def _fold_arg(text: str) -> dict[str, Any]:
    """``--fold PE,SIMD[,auto|bram|lut]`` -> the rtl.fold mapping (ranges are checked with the config's rules)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:2]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected PE,SIMD (two positive integers), optionally "
                                         ",auto, ,bram or ,lut")
    fold: dict[str, Any] = {"pe": int(parts[0]), "simd": int(parts[1])}
    if len(parts) == 3:
        fold["memory"] = parts[2]
    return fold


def cmd_rtl(a: argparse.Namespace) -> int:
    from kdhw.hw.export import load_qonnx
    from kdhw.hw.rtl import DEFAULT_TOP, STREAM_OPTIONS, qonnx_to_rtl

    from .config import check_rtl_options

    opts = {k: getattr(a, k) for k in STREAM_OPTIONS}
    if a.target_ii is not None:
        opts["fold"] = {**(opts["fold"] or {}), "target_ii": a.target_ii}
    check_rtl_options(a.mode, {**opts, "board": a.board, "pipeline": a.pipeline, "latency_cutoff": a.latency_cutoff,
                               "top": a.top}, lambda k: f"--{k.replace('_', '-')}", "")
    if a.mode == "auto" and not a.board:
        raise InputError("--mode auto needs --board B (the board to fit; kdhw boards lists them)")
    if a.no_synth and a.mode != "auto":
        raise InputError("--no-synth applies to --mode auto")
    load_qonnx(a.model)  # one-line errors for files that are not (supported) QONNX
    if a.mode == "auto":
        from kdhw.hw.board_fit import fit_board

        from .boards import load_board

        board = load_board(a.board)
        if not a.no_synth:
            from kdhw.hw.synth import check_tools

            check_tools([board])
        meta = fit_board(Path(a.model), Path(a.out), board, synth=not a.no_synth, latency_cutoff=a.latency_cutoff,
                         output=opts["output"], out_elements=opts["out_elements"], top=a.top, tlast=opts["tlast"])
    else:
        meta = qonnx_to_rtl(Path(a.model), Path(a.out), latency_cutoff=a.latency_cutoff, pipeline=a.pipeline,
                            mode=a.mode, top=a.top or DEFAULT_TOP, **opts)
    fit = f"; chosen for {meta['fit']['board']}: {meta['fit']['chosen']}" if meta.get("fit") else ""
    if meta["mode"] == "stream":
        st = meta["stream"]
        print(f"wrote Verilog {a.out.rstrip('/')}/ (top {meta['top']}, AXI4-Stream: {st['beats_in']} beats in, "
              f"{st['beats_out']} out per frame; latency {meta['latency_cycles']} cycles, II "
              f"{meta['initiation_interval']} cycles{fit})")
    else:
        print(f"wrote Verilog {a.out.rstrip('/')}/ (top {meta['top']}, latency {meta['latency_cycles']} cycles{fit})")
    return 0


def cmd_package(a: argparse.Namespace) -> int:
    from kdhw.hw.vivado import package_stream_core

    from .boards import load_board

    info = package_stream_core(Path(a.rtl_dir), load_board(a.board), Path(a.out), name=a.name)
    what = (f"block design {info['block_design']}, PYNQ driver pynq/" if info["block_design"] else
            "no block design for this board (IP only)")
    _say(a, f"wrote Vivado IP {info['vlnv']} in {a.out.rstrip('/')}/ip/ for {info['board']} ({info['part']}); "
            f"package_ip.tcl, {what}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from kdhw.hw.report import hardware_report, require_fit

    from .boards import load_board

    d = Path(a.dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    boards = [load_board(b) for b in (a.board or _run_boards(d))]
    rtl = d / "rtl" if (d / "rtl" / "rtl.json").is_file() else (d if (d / "rtl.json").is_file() else None)
    copy = None
    if rtl is not None:  # kdhw rtl keeps a copy of the model it was generated from
        from kdhw.hw.rtl import load_meta

        name = load_meta(rtl).get("model_file")
        copy = rtl / name if name and (rtl / name).is_file() else None
    if a.model:
        onnx_path = Path(a.model)
        if not onnx_path.is_file():
            raise InputError(f"{onnx_path}: --model file not found")
    elif (d / "student.qonnx.onnx").is_file():  # a run folder
        onnx_path = d / "student.qonnx.onnx"
    elif copy is not None:
        onnx_path = copy
    else:
        raise InputError(f"{d}: no QONNX model found (student.qonnx.onnx of a run, or the copy kdhw rtl writes); "
                         "name it with --model")
    rep = hardware_report(d, boards, onnx_path, rtl, Path(a.vendor_report) if a.vendor_report else None,
                          synth=not a.no_synth)
    print(f"wrote {d}/hw_report.md, hw_report.html, hw_report.json")
    if a.require_fit:
        require_fit(rep)
    return 0


def _run_boards(d: Path) -> list[str]:
    """``report.boards`` of the run whose folder is ``d`` (its config.yaml), for ``kdhw report RUN``."""
    from .config import load_config

    if not (d / "config.yaml").is_file():
        raise InputError(f"{d}: no config.yaml (a run folder has one) to take report.boards from; give --board B")
    return load_config(d / "config.yaml").report["boards"]


def cmd_select(a: argparse.Namespace) -> int:
    from kdhw.flows.run import check_out_dir
    from kdhw.flows.select import run_select

    from .config import load_config

    cfg = load_config(a.config)
    rep = run_select(cfg, check_out_dir(a.out), teacher_path=a.teacher, progress=_progress(a))
    print(f"wrote {a.out.rstrip('/')}/ (selector.md, selector.json, selector.png, student_<i>.pt, selector.pt, "
          f"one folder per part); system test accuracy {100 * rep['system']['test_acc']:.2f} %")
    bad = [name for name, part in rep["parts"].items() if not part["bit_exact"]]
    if bad:
        print(f"kdhw select: error: not bit-exact: {', '.join(bad)} (see {a.out}/<part>/verify.json)",
              file=sys.stderr)
        return 1
    return 0


def cmd_board(a: argparse.Namespace) -> int:
    from kdhw.flows.board import build_board

    x = None
    if a.inputs:
        try:
            x = np.load(a.inputs)
        except (OSError, ValueError) as e:
            raise InputError(f"{a.inputs}: not a readable .npy file ({e})") from None
    log = _log(a)
    rep = build_board(Path(a.dir), a.board, out=a.out, baud=a.baud, sim_rows=a.sim_rows,
                      bitstream_rows=a.bitstream_rows, simulator=a.simulator, netlist_simulator=a.netlist_simulator,
                      inputs=x, seed=a.seed, progress=None if a.quiet else (lambda m: log(f"kdhw board: {m}")))
    out = a.out or str(Path(a.dir) / f"board_{rep['board']}")
    lc = rep["cells"].get("ICESTORM_LC") or rep["cells"].get("TRELLIS_COMB") or {}
    bs = rep["bitstream_sim"]
    print(f"wrote {out.rstrip('/')}/ ({rep['bitstream']} for {rep['board']}: {lc.get('used')}/{lc.get('available')} logic "
          f"cells, fmax {rep['fmax_mhz']:.1f} MHz >= {rep['clock_mhz']:g} MHz; board simulation "
          f"{rep['sim']['exact_rows']}/{rep['sim']['rows']} frames exact"
          + (f", decoded bitstream {bs['exact_rows']}/{bs['rows']}" if bs else "")
          + f"; {rep['baud']} baud: {rep['frames_per_s']:.1f} frames/s)")
    return 0


def cmd_boards(a: argparse.Namespace) -> int:
    from .boards import boards_table, list_boards

    if a.json:
        print(json.dumps([b.__dict__ for b in list_boards()], indent=2, default=list))
    else:
        print(boards_table())
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    from .config import default_yaml, json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n" if a.schema else default_yaml())
    return 0


_OUT_HELP = "output folder (built beside it and swapped in: a failed run leaves an earlier one as it was)"


def _common(s: argparse.ArgumentParser) -> None:
    """-q / -v / --progress after the verb too (``kdhw run -q``); SUPPRESS keeps the main parser's value
    when they are given before it (``kdhw -q run``)."""
    s.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="errors only: no progress, no summary lines")
    s.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and every third-party warning")
    s.add_argument("--progress", action="store_true", default=argparse.SUPPRESS,
                   help="progress bars even when stderr is not a terminal (a CI log)")


def _add(sub: Any, name: str, fn: Any, help: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help, description=help)
    _common(s)
    s.set_defaults(fn=fn)
    return s


def _no_progress(s: argparse.ArgumentParser) -> None:
    s.add_argument("--no-progress", action="store_true", help="no progress bars (the summary lines stay)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="kdhw", description="Distil a float teacher into a bit-exact fixed-point FPGA "
                                                         "student.")
    p.add_argument("--version", action="version", version=f"kdhw {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress, no summary lines")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and every third-party warning")
    p.add_argument("--progress", action="store_true",
                   help="progress bars even when stderr is not a terminal (a CI log)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="VERB")

    s = _add(sub, "run", cmd_run, "whole pipeline; no CONFIG = the embedded default (digits)")
    s.add_argument("config", nargs="?", help="YAML config (kdhw config prints the default to start from)")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    _no_progress(s)

    s = _add(sub, "teacher", cmd_teacher, "train the float teacher (teacher.pt + cached logits)")
    s.add_argument("config", help="YAML config (its data and teacher sections)")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    _no_progress(s)

    s = _add(sub, "distill", cmd_distill, "QAT student from scratch and with distillation")
    s.add_argument("config", help="YAML config (its data, student and distill sections)")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    s.add_argument("--teacher", help="teacher.pt to distil from (else the config's teacher is trained)")
    _no_progress(s)

    s = _add(sub, "export", cmd_export, "brevitas student -> QONNX")
    s.add_argument("student", help="student.pt written by kdhw run / distill")
    s.add_argument("--out", required=True, help="QONNX file to write (e.g. student.qonnx.onnx)")

    s = _add(sub, "hls", cmd_hls, "QONNX -> hls4ml project + compiled C-sim")
    s.add_argument("model", help="QONNX model (kdhw export, or your own: see docs/hardware.md)")
    s.add_argument("--board", default="pynq-z2", help="board whose part and clock the project targets "
                                                      "(kdhw boards; default pynq-z2)")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    s.add_argument("--backend", default="Vitis", choices=["Vitis", "Vivado", "VivadoAccelerator"],
                   help="hls4ml backend (default Vitis); VivadoAccelerator (pynq-z2, zcu102) adds an AXI4-Stream "
                        "wrapper, a Zynq block design with bitstream Tcl (design.tcl) and a PYNQ driver")
    s.add_argument("--inputs", help="X.npy rows to write as hls4ml testbench vectors (tb_data/), the QONNX "
                                    "reference's outputs as the expected predictions; default: none")
    s.add_argument("--io-type", default="io_parallel", choices=["io_parallel", "io_stream"],
                   help="arrays in parallel or hls::stream (default io_parallel)")
    s.add_argument("--reuse-factor", type=int, default=1,
                   help="multiplications per multiplier: higher trades throughput for DSPs (default 1)")
    s.add_argument("--strategy", default="Latency", choices=["Latency", "Resource"],
                   help="hls4ml strategy (default Latency)")
    s.add_argument("--clock-period", type=float, help="ns; default: the board's clock")

    s = _add(sub, "rtl", cmd_rtl, "QONNX -> pipelined Verilog (da4ml): parallel block or AXI4-Stream core")
    s.add_argument("model", help="QONNX model (kdhw export)")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    s.add_argument("--mode", default="parallel", choices=["parallel", "stream", "auto"],
                   help="parallel: one unrolled block; stream: AXI4-Stream core, line buffers, one datapath per layer; "
                        "auto: the least folded of those that fits --board")
    s.add_argument("--board", help="auto: the board to fit (LUT/FF/DSP, pins, clock)")
    s.add_argument("--no-synth", action="store_true",
                   help="auto: decide on the analytic estimate alone (no yosys / nextpnr confirmation)")
    s.add_argument("--latency-cutoff", type=float, default=None,
                   help="da4ml delay budget per pipeline stage (smaller = deeper pipeline)")
    s.add_argument("--pipeline", type=int, default=None, help="parallel mode: exact latency in cycles")
    s.add_argument("--parallelism", type=int, default=None,
                   help="stream: output positions per issue of a conv/pool layer, MAC lanes of a folded dense (1)")
    s.add_argument("--in-elements", type=int, default=None,
                   help="stream, MLPs (first layer dense): input elements per beat (1)")
    s.add_argument("--out-elements", type=int, default=None, help="stream: logits per output beat (1)")
    s.add_argument("--output", default=None, choices=["logits", "class", "both"], help="stream: output frame (logits)")
    s.add_argument("--dense", default=None, choices=["auto", "folded", "unrolled"],
                   help="stream: dense layers folded over their input or unrolled (auto: folded when the input "
                        "arrives in several beats)")
    s.add_argument("--tlast", default=None, choices=["required", "ignore"],
                   help="stream: required (default): s_axis_tlast delimits input frames, a frame of the wrong length "
                        "is repaired and flagged; ignore: frames are counted, tlast only flagged on tlast_err (for "
                        "sources without TLAST)")
    s.add_argument("--fold", type=_fold_arg, default=None, metavar="PE,SIMD[,auto|bram|lut]",
                   help="stream: every conv and dense layer computes PE outputs x SIMD inputs per cycle with its "
                        "weights in block RAM (registered read; auto, the default: tables of up to 512 bits in a LUT "
                        "ROM) and its multipliers in DSP blocks, e.g. --fold 1,1 "
                        "(unset: the units of --dense; per-layer settings: rtl.fold.layers in a config)")
    s.add_argument("--target-ii", type=int, default=None, metavar="N",
                   help="stream: fold every conv and dense layer with the fewest multipliers whose slowest layer "
                        "still takes a frame every N cycles (rtl.fold.target_ii; instead of --fold's PE,SIMD)")
    s.add_argument("--top", default=None, metavar="NAME",
                   help="name of the top module (default kdhw_top); every generated module starts with it, so cores "
                        "with different tops can share one design")

    s = _add(sub, "verify", cmd_verify, "bit-exact check of every level present; exit 1 on mismatch")
    s.add_argument("dir", help="run folder, hls4ml project (kdhw hls) or RTL directory (kdhw rtl)")
    s.add_argument("--model", help="QONNX model of an RTL directory that holds no copy of it")
    s.add_argument("--inputs", help="inputs.npy, one row per sample; default: a run folder's verify_inputs.npy")
    s.add_argument("--labels", help="labels.npy, one per input row (-1 where there is none): fidelity figures; "
                                    "a run's own verify_labels.npy is used by default")
    s.add_argument("--simulator", default="icarus", choices=["icarus", "verilator"],
                   help="RTL simulator cocotb drives (default icarus)")
    s.add_argument("--sim-rows", type=int, default=1000, help="rows driven through the RTL simulator")

    s = _add(sub, "report", cmd_report, "resources / latency / fit per board")
    s.add_argument("dir", help="run folder (student.qonnx.onnx, rtl/) or an RTL directory written by kdhw rtl")
    s.add_argument("--model", help="QONNX model, where DIR holds none")
    s.add_argument("--board", action="append", help="board name (repeat for several); default: a run folder's "
                                                    "report.boards")
    s.add_argument("--vendor-report", help="HLS csynth.xml, Vivado report_utilization .rpt, or a folder with either")
    s.add_argument("--require-fit", action="store_true", help="exit 1 when the design does not fit a board")
    s.add_argument("--no-synth", action="store_true", help="estimate only: skip yosys / nextpnr")

    s = _add(sub, "package", cmd_package, "AXI4-Stream core (kdhw rtl --mode stream) -> Vivado IP, Zynq block "
                                          "design with bitstream Tcl, PYNQ driver")
    s.add_argument("rtl_dir", help="RTL folder written by `kdhw rtl M.onnx --out DIR --mode stream`")
    s.add_argument("--board", default="pynq-z2", help="Xilinx board whose part the IP and Tcl target (kdhw boards; "
                                                      "default pynq-z2); pynq-z2 and zcu102 also get a block design")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    s.add_argument("--name", default=None, help="IP name (the wrapper module and the VLNV's name; "
                                                "default <top>_axis)")

    s = _add(sub, "board", cmd_board, "stream core -> bitstream for a board with an open flow (iCE40, ECP5): UART "
                                      "link, reset, LEDs; proved bit-exact in a board-level simulation")
    s.add_argument("dir", help="run folder (its stream rtl/, else a stream core is generated from student.qonnx.onnx) "
                               "or a stream RTL folder (kdhw rtl --mode stream)")
    s.add_argument("--board", required=True, help="board from the catalog with pins and an open flow (icebreaker, "
                                                  "ulx3s-85f)")
    s.add_argument("--out", default=None, help="output folder (default DIR/board_<board>; built beside it and swapped "
                                               "in: a failed build leaves an earlier one as it was)")
    s.add_argument("--baud", type=int, default=115200, help="UART rate of the link, 8N1 (default 115200)")
    s.add_argument("--sim-rows", type=int, default=200,
                   help="frames driven through the UART pins of the board top's RTL simulation (default 200)")
    s.add_argument("--bitstream-rows", type=int, default=20,
                   help="iCE40: frames through the netlist decoded from the bitstream (default 20; 0 skips it)")
    s.add_argument("--simulator", default="icarus", choices=["icarus", "verilator"],
                   help="simulator of the board top's RTL (default icarus)")
    s.add_argument("--netlist-simulator", default="verilator", choices=["icarus", "verilator"],
                   help="simulator of the decoded bitstream (default verilator: Icarus runs it ~20x slower)")
    s.add_argument("--inputs", help="inputs.npy to drive (default: a run folder's verify_inputs.npy, else random "
                                    "rows over the input format's range)")
    s.add_argument("--seed", type=int, default=1, help="nextpnr placement seed and random-input seed (default 1)")

    s = _add(sub, "boards", cmd_boards, "list the board catalog")
    s.add_argument("--json", action="store_true", help="the catalog as JSON (every field)")

    s = _add(sub, "config", cmd_config, "print the embedded default config")
    s.add_argument("--schema", action="store_true",
                   help="print the config's JSON Schema instead (for editor completion, e.g. yaml-language-server)")

    from kdhw.flows.pareto import add_pareto_parser
    from kdhw.flows.sweep import add_sweep_parser  # light: argparse + config only

    for add in (add_sweep_parser, add_pareto_parser):
        _common(add(sub))

    s = _add(sub, "select", cmd_select, "several students + a brevitas selector; each part exported, converted and "
                                        "verified bit-exact")
    s.add_argument("config", help="YAML config with a selector section")
    s.add_argument("--out", required=True, help=_OUT_HELP)
    s.add_argument("--teacher", help="teacher.pt to distil from (else the config's teacher is trained)")
    _no_progress(s)
    return p


# verbs whose standard output is the product (a config, a catalog): -q does not silence it
_DATA_VERBS = ("config", "boards")


def _progress(a: argparse.Namespace) -> bool:
    return not a.no_progress


def _log(a: argparse.Namespace) -> Any:
    return (lambda *_: None) if a.quiet else print


def _say(a: argparse.Namespace, line: str) -> None:
    if not a.quiet:
        print(line)


def _settle_output(a: argparse.Namespace) -> None:
    """Progress bars only on a terminal, or with --progress; none with -q or --no-progress.  -v turns on
    debug logging and leaves every third-party warning visible."""
    import logging

    a.no_progress = bool(getattr(a, "no_progress", False) or a.quiet
                         or not (a.progress or sys.stderr.isatty()))
    if a.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("kdhw").setLevel(logging.DEBUG)
    elif a.quiet:
        logging.getLogger("kdhw").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    import contextlib

    args = build_parser().parse_args(argv)
    if args.quiet and args.verbose:
        print("kdhw: error: -q and -v exclude each other", file=sys.stderr)
        return 2
    _settle_output(args)
    _quiet_libraries(keep_warnings=args.verbose)
    silence = args.quiet and args.cmd not in _DATA_VERBS
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")) if silence else contextlib.nullcontext():
            return int(args.fn(args))
    except KdhwError as e:
        print(f"kdhw {args.cmd}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kdhw: interrupted; previous outputs left as they were", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `kdhw boards | head`: the reader left; not an error of ours, and no traceback for it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
