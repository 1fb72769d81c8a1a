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


def _quiet_libraries() -> None:
    """The CLI is an application: it may set process-wide logging.  Noise is silenced where it is made
    (onnxruntime's logger, named warnings), never by hiding every warning (``kdhw.quiet`` for the API)."""
    from .quiet import silence_onnxruntime

    for cat, msg in _NOISE:
        warnings.filterwarnings("ignore", message=msg, category=cat)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    silence_onnxruntime()
    from .runtime import set_torch_threads

    set_torch_threads()


def cmd_run(a: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import check_out_dir, run

    cfg = load_config(a.config)
    rep = run(cfg, check_out_dir(a.out), progress=not a.no_progress)
    print(f"wrote {a.out.rstrip('/')}/ (report.md, verify.json, hls/" + (", rtl/, hw_report.md)" if rep.get("hardware") else ")"))
    if not rep["verify"]["bit_exact"]:
        return 1
    if cfg.report["require_fit"] and not all(h["fits"] for h in rep.get("hardware") or []):
        print("kdhw run: error: design does not fit: " + ", ".join(h["board"] for h in rep["hardware"]
                                                                  if not h["fits"]), file=sys.stderr)
        return 1
    return 0


def cmd_teacher(a: argparse.Namespace) -> int:
    import numpy as np

    from .atomic import atomic_dir, write_json
    from .config import load_config
    from .data import load_data
    from .teacher import save_teacher, teacher_accuracy, teacher_logits, train_teacher

    cfg = load_config(a.config)
    data = load_data(cfg, enforce=False)  # laid out as the student will read it; no student is trained here
    with atomic_dir(a.out) as d:
        model, res = train_teacher(cfg.teacher, data, not a.no_progress)
        save_teacher(model, cfg.teacher, data.shape, data.n_classes, d / "teacher.pt")
        tl = teacher_logits(model, cfg.teacher["arch"], data)
        np.savez(d / "teacher_logits.npz", **tl)
        acc = teacher_accuracy(tl, data)
        write_json(d / "teacher.json", {"accuracy": acc, "epochs": res.epochs_run, "data": data.manifest})
    print(f"teacher test accuracy {100 * acc['test']:.2f} % -> {a.out}/teacher.pt")
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from .atomic import atomic_dir, write_json
    from .config import load_config
    from .data import load_data
    from .distill import choose, distill, student_input, summary
    from .resource import fold_arms
    from .student import build_student, save_student
    from .teacher import obtain_teacher, teacher_logits

    cfg = load_config(a.config)
    if a.teacher:
        cfg.teacher["path"] = a.teacher  # the handed-over teacher's input shape decides an open layout
    data = load_data(cfg)
    build_student(cfg.student, student_input(data.x_val[:1], cfg.student).shape[1:], data.n_classes, cfg.source)
    tmodel, tcfg, _ = obtain_teacher(cfg.teacher, data, a.teacher or cfg.teacher["path"], not a.no_progress,
                                     cfg.source)
    tl = teacher_logits(tmodel, tcfg["arch"], data)
    spec = cfg.student
    arms = distill(spec, cfg.distill, data, tl["train"], not a.no_progress, cfg.source, teacher=tmodel,
                   teacher_cfg=tcfg, teacher_unlab=tl.get("unlab"))
    chosen, reason = choose(arms, cfg.distill["select"], data)
    arms, specs = fold_arms(arms, student_input(np.concatenate([data.x_val, data.x_test]), spec))  # resource-aware
    shape = student_input(data.x_test, cfg.student).shape[1:]
    with atomic_dir(a.out) as d:
        for k, arm in arms.items():
            save_student(arm.model, specs[k] or cfg.student, shape, d / f"student_{k}.pt")
        save_student(arms[chosen].model, specs[chosen] or cfg.student, shape, d / "student.pt")
        write_json(d / "distill.json", {"arms": summary(arms), "chosen": chosen, "reason": reason,
                                        "teacher": {k: tcfg.get(k) for k in ("arch", "path", "format", "outputs")}})
    print(", ".join(f"{k}: test {100 * v.test_acc:.2f} %" for k, v in arms.items()) + f"; exported {chosen}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export_qonnx
    from .student import load_student

    model = load_student(a.student)
    shape = tuple(int(s) for s in _student_shape(a.student))
    export_qonnx(model, shape, a.out)
    print(f"wrote {a.out}")
    return 0


def _student_shape(path: str) -> list[int]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["input_shape"]


def cmd_hls(a: argparse.Namespace) -> int:
    from .boards import load_board
    from .hls import build_hls_project

    board = load_board(a.board)
    meta = build_hls_project(
        a.model, a.out, part=board.part, clock_period_ns=a.clock_period or board.clock_period_ns,
        backend=a.backend, io_type=a.io_type, reuse_factor=a.reuse_factor, strategy=a.strategy, board=board.name,
    )
    print(f"wrote hls4ml {meta['backend']} project {a.out}/ for {board.name} ({board.part}); "
          f"input {meta['input_type']}; C-sim compiled")
    return 0


def _find_dirs(d: Path) -> tuple[Path | None, Path | None]:
    """(hls4ml project, RTL directory) in DIR: a run folder holds both as hls/ and rtl/; ``kdhw hls`` and
    ``kdhw rtl`` write one each directly."""
    from .hls import META_FILE

    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    project = d / "hls" if (d / "hls" / META_FILE).is_file() else (d if (d / META_FILE).is_file() else None)
    rtl = d / "rtl" if (d / "rtl" / "rtl.json").is_file() else (d if (d / "rtl.json").is_file() else None)
    if project is None and rtl is None:
        raise InputError(f"{d}: neither a run folder, an hls4ml project (kdhw hls) nor an RTL directory (kdhw rtl)")
    return project, rtl


def cmd_verify(a: argparse.Namespace) -> int:
    import numpy as np

    from .flow import VERIFY_INPUTS, VERIFY_LABELS
    from .verify import load_inputs, verify_project, verify_rtl

    d = Path(a.dir)
    project, rtl_dir = _find_dirs(d)
    if a.model and project is not None:
        raise InputError(f"--model: {d} holds an hls4ml project, whose own copy of the model is checked")
    if project is not None:
        from .hls import read_meta

        meta = read_meta(project)
    else:
        from .rtl import load_meta

        meta = load_meta(rtl_dir)
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

    from .teacher import load_teacher, teacher_input
    from .training import predict_logits

    model, tcfg = load_teacher(tp)
    shape = torch.load(tp, map_location="cpu", weights_only=True)["input_shape"]
    if x[0].size != int(np.prod(shape)) or not getattr(model, "runnable", True):
        return None  # a logits-file teacher has no outputs for the random verification rows
    return predict_logits(model, teacher_input(x.reshape(len(x), *shape), tcfg["arch"]))


def cmd_rtl(a: argparse.Namespace) -> int:
    from .export import load_qonnx
    from .rtl import STREAM_OPTIONS, qonnx_to_rtl

    opts = {k: getattr(a, k) for k in STREAM_OPTIONS}
    if a.mode == "parallel":
        given = [k for k, v in opts.items() if v is not None]
        if given:
            raise InputError(f"--{given[0].replace('_', '-')} applies to --mode stream")
    elif a.pipeline is not None:
        raise InputError("--pipeline (an exact latency) applies to --mode parallel; in stream mode use "
                         "--latency-cutoff")
    if a.mode == "auto":
        chosen = [k for k in ("parallelism", "in_elements", "dense") if opts[k] is not None]
        if chosen:
            raise InputError(f"--{chosen[0].replace('_', '-')} is what --mode auto chooses; use --mode stream to fix it")
        if not a.board:
            raise InputError("--mode auto needs --board B (the board to fit; kdhw boards lists them)")
    elif a.board or a.no_synth:
        raise InputError(f"--{'board' if a.board else 'no-synth'} applies to --mode auto")
    for k in ("parallelism", "in_elements", "out_elements"):
        if opts[k] is not None and opts[k] < 1:
            raise InputError(f"--{k.replace('_', '-')} = {opts[k]} must be >= 1")
    load_qonnx(a.model)  # one-line errors for files that are not (supported) QONNX
    if a.mode == "auto":
        from .boards import load_board
        from .fit import fit_board

        board = load_board(a.board)
        if not a.no_synth:
            from .synth import check_tools

            check_tools([board])
        meta = fit_board(Path(a.model), Path(a.out), board, synth=not a.no_synth, latency_cutoff=a.latency_cutoff,
                         output=opts["output"], out_elements=opts["out_elements"])
    else:
        meta = qonnx_to_rtl(Path(a.model), Path(a.out), latency_cutoff=a.latency_cutoff, pipeline=a.pipeline,
                            mode=a.mode, **opts)
    fit = f"; chosen for {meta['fit']['board']}: {meta['fit']['chosen']}" if meta.get("fit") else ""
    if meta["mode"] == "stream":
        st = meta["stream"]
        print(f"wrote Verilog {a.out.rstrip('/')}/ (top {meta['top']}, AXI4-Stream: {st['beats_in']} beats in, "
              f"{st['beats_out']} out per frame; latency {meta['latency_cycles']} cycles, II "
              f"{meta['initiation_interval']} cycles{fit})")
    else:
        print(f"wrote Verilog {a.out.rstrip('/')}/ (top {meta['top']}, latency {meta['latency_cycles']} cycles{fit})")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .boards import load_board
    from .hwreport import hardware_report, require_fit

    d = Path(a.dir)
    boards = [load_board(b) for b in a.board]
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    rtl = d / "rtl" if (d / "rtl" / "rtl.json").is_file() else (d if (d / "rtl.json").is_file() else None)
    copy = None
    if rtl is not None:  # kdhw rtl keeps a copy of the model it was generated from
        from .rtl import load_meta

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


def cmd_select(a: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import check_out_dir
    from .selector import run_select

    cfg = load_config(a.config)
    rep = run_select(cfg, check_out_dir(a.out), teacher_path=a.teacher, progress=not a.no_progress)
    print(f"wrote {a.out.rstrip('/')}/ (selector.md, selector.json, selector.png, student_<i>.pt, selector.pt, "
          f"one folder per part); system test accuracy {100 * rep['system']['test_acc']:.2f} %")
    bad = [name for name, part in rep["parts"].items() if not part["bit_exact"]]
    if bad:
        print(f"kdhw select: error: not bit-exact: {', '.join(bad)} (see {a.out}/<part>/verify.json)",
              file=sys.stderr)
        return 1
    return 0


def cmd_boards(a: argparse.Namespace) -> int:
    from .boards import boards_table, list_boards

    if a.json:
        print(json.dumps([b.__dict__ for b in list_boards()], indent=2, default=list))
    else:
        print(boards_table())
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    from .config import default_yaml

    sys.stdout.write(default_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdhw", description="Distil a float teacher into a bit-exact fixed-point FPGA student.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("run", help="whole pipeline; no CONFIG = the embedded default (digits)")
    s.add_argument("config", nargs="?")
    s.add_argument("--out", required=True)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("teacher", help="train the float teacher")
    s.add_argument("config")
    s.add_argument("--out", required=True)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_teacher)

    s = sub.add_parser("distill", help="QAT student from scratch and with distillation")
    s.add_argument("config")
    s.add_argument("--out", required=True)
    s.add_argument("--teacher", help="teacher.pt to distil from (else the config's teacher is trained)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_distill)

    s = sub.add_parser("export", help="brevitas student -> QONNX")
    s.add_argument("student")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("hls", help="QONNX -> hls4ml project + compiled C-sim")
    s.add_argument("model")
    s.add_argument("--board", default="pynq-z2")
    s.add_argument("--out", required=True)
    s.add_argument("--backend", default="Vitis", choices=["Vitis", "Vivado"])
    s.add_argument("--io-type", default="io_parallel", choices=["io_parallel", "io_stream"])
    s.add_argument("--reuse-factor", type=int, default=1)
    s.add_argument("--strategy", default="Latency", choices=["Latency", "Resource"])
    s.add_argument("--clock-period", type=float, help="ns; default: the board's clock")
    s.set_defaults(fn=cmd_hls)

    s = sub.add_parser("rtl", help="QONNX -> pipelined Verilog (da4ml): parallel block or AXI4-Stream core")
    s.add_argument("model")
    s.add_argument("--out", required=True)
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
    s.set_defaults(fn=cmd_rtl)

    s = sub.add_parser("verify", help="bit-exact check of every level present; exit 1 on mismatch")
    s.add_argument("dir", help="run folder, hls4ml project (kdhw hls) or RTL directory (kdhw rtl)")
    s.add_argument("--model", help="QONNX model of an RTL directory that holds no copy of it")
    s.add_argument("--inputs", required=True)
    s.add_argument("--labels", help="labels.npy, one per input row (-1 where there is none): fidelity figures; "
                                    "a run's own verify_labels.npy is used by default")
    s.add_argument("--simulator", default="icarus", choices=["icarus", "verilator"])
    s.add_argument("--sim-rows", type=int, default=1000, help="rows driven through the RTL simulator")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("report", help="resources / latency / fit per board")
    s.add_argument("dir", help="run folder (student.qonnx.onnx, rtl/) or an RTL directory written by kdhw rtl")
    s.add_argument("--model", help="QONNX model, where DIR holds none")
    s.add_argument("--board", action="append", required=True, help="board name (repeat for several)")
    s.add_argument("--vendor-report", help="HLS csynth.xml, Vivado report_utilization .rpt, or a folder with either")
    s.add_argument("--require-fit", action="store_true", help="exit 1 when the design does not fit a board")
    s.add_argument("--no-synth", action="store_true", help="estimate only: skip yosys / nextpnr")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("boards", help="list the board catalog")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_boards)

    s = sub.add_parser("config", help="print the embedded default config")
    s.set_defaults(fn=cmd_config)

    from .sweep import add_sweep_parser  # light: argparse + config only

    add_sweep_parser(sub)

    from .pareto import add_pareto_parser

    add_pareto_parser(sub)

    s = sub.add_parser("select", help="several students + a brevitas selector; each part exported, "
                                      "converted and verified bit-exact")
    s.add_argument("config")
    s.add_argument("--out", required=True)
    s.add_argument("--teacher", help="teacher.pt to distil from (else the config's teacher is trained)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_select)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
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
