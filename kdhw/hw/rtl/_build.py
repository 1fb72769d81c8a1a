"""QONNX -> pipelined Verilog: trace with da4ml, pipeline, and wrap the core in uniform-width ports.

da4ml sizes every port element to the narrowest width its value range needs, so its own port layout
changes whenever a weight changes.  The kdhw top module puts a fixed layout around it instead: every input
element is the input quantizer's width, every output element the output quantizer's width, packed in the
order of the row-major (channels-first) flattened tensor.  Testbenches, ``kdhw verify`` and users' own
wrappers can then rely on ``rtl.json`` alone.

An input no weight reads (an always-black pixel of a low-bit student keeps all-zero weights) still has its
slot in the kdhw port, but may have width 0 in the core's: da4ml's retiming re-traces the pipeline without
keeping dead inputs.  Inputs are therefore wired into the core by the width da4ml actually gave each one,
exactly as outputs are read back from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
from pathlib import Path
from typing import Any

from kdhw.config import RTL_STREAM_KEYS
from kdhw.errors import InputError
from kdhw.util.atomic import atomic_dir, write_json, write_text

from ._formats import FixedFormat
from ._hdl_text import finish
from ._trace import Traced, trace_qonnx

META_FILE = "rtl.json"
DEFAULT_LATENCY_CUTOFF = 5.0
DEFAULT_CLOCK_PERIOD_NS = 5.0
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DEFAULT_TOP = "kdhw_top"
_KEYWORDS = frozenset(
    "always and assign automatic begin buf case casex casez cell config deassign default defparam design disable "
    "edge else end endcase endconfig endfunction endgenerate endmodule endprimitive endspecify endtable endtask "
    "event for force forever fork function generate genvar if ifnone incdir include initial inout input instance "
    "integer join large liblist library localparam macromodule medium module nand negedge nmos nor not "
    "noshowcancelled notif0 notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown pullup "
    "pulsestyle_ondetect pulsestyle_onevent rcmos real realtime reg release repeat rnmos rpmos rtran rtranif0 "
    "rtranif1 scalared showcancelled signed small specify specparam strong0 strong1 supply0 supply1 table task time "
    "tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire vectored wait wand weak0 weak1 while "
    "wire wor xnor xor".split())


def _trace(mw: Any, cutoff: float) -> tuple[Traced, Any]:
    from da4ml.trace import comb_trace

    tr = trace_qonnx(mw, cutoff, {"hard_dc": 2})
    # keep_dead_inputs: an input no weight reads still gets its slot, so the port layout never depends on
    # which weights happen to be zero.
    comb = comb_trace(tr.inputs, tr.outputs, keep_dead_inputs=True)
    return tr, comb


def _pipeline(comb: Any, cutoff: float) -> Any:
    from da4ml.trace import to_pipeline

    with contextlib.redirect_stdout(io.StringIO()):
        return to_pipeline(comb, cutoff, verbose=False)


def _choose(mw: Any, latency_cutoff: float | None, pipeline: int | None) -> tuple[Traced, Any, Any, float, int]:
    """Trace and pipeline; returns (trace, comb, pipe, cutoff used, extra output registers)."""
    if pipeline is None:
        cutoff = DEFAULT_LATENCY_CUTOFF if latency_cutoff is None else float(latency_cutoff)
        if not (cutoff > 0 and math.isfinite(cutoff)):
            raise InputError(f"latency_cutoff = {latency_cutoff!r} must be a positive number (da4ml delay units "
                             "per pipeline stage)")
        try:
            tr, comb = _trace(mw, cutoff)
        except AssertionError as e:
            if "latency cutoff" in str(e):
                raise InputError(f"latency_cutoff = {cutoff:g} is smaller than the delay of one adder in this "
                                 "design; use a larger value") from None
            raise
        return tr, comb, _pipeline(comb, cutoff), cutoff, 0
    if isinstance(pipeline, bool) or not isinstance(pipeline, int) or not 1 <= pipeline <= 64:
        raise InputError(f"pipeline = {pipeline!r} must be an integer number of register stages in [1, 64]")
    if latency_cutoff is not None:
        raise InputError("give either latency_cutoff or pipeline, not both")
    # The depth of the combinational trace fixes how much delay each of the wanted stages may take.
    _, comb0 = _trace(mw, -1.0)
    depth = max(comb0.latency[1], 1.0)
    cutoff = depth / pipeline
    for _ in range(200):
        try:
            tr, comb = _trace(mw, cutoff)
            pipe = _pipeline(comb, cutoff)
        except AssertionError:  # one adder is slower than the requested stage: fewer, fuller stages
            cutoff *= 1.25
            continue
        n = len(pipe.solutions)
        if n <= pipeline:
            return tr, comb, pipe, cutoff, pipeline - n
        cutoff *= 1.05
    raise RuntimeError(f"internal error: no latency cutoff gives at most {pipeline} stages")


def _port_map(fmt: FixedFormat, kifs: list[tuple[bool, int, int]], what: str) -> list[tuple[int, int, int, int]]:
    """For each element: (offset in the core port, core width, core fraction bits, signed) - checked to fit."""
    out, off = [], 0
    for j, (k, i, f) in enumerate(kifs):
        w = int(k) + i + f
        if w > 0:
            shift = fmt.frac_bits - f
            room = fmt.bits - int(fmt.signed and not k)
            if shift < 0 or w + shift > room or (k and not fmt.signed):
                raise RuntimeError(
                    f"internal error: {what} element {j} (k={k}, i={i}, f={f}) does not fit the port format {fmt}"
                )
        out.append((off, w, f, int(k)))
        off += max(w, 0)
    return out


def _input_map(fmt: FixedFormat, kifs: list[tuple[bool, int, int]]) -> list[tuple[int, int]]:
    """For each input element: (offset in the core port, core width); width 0 for an input nothing reads.

    A live input must have exactly the quantizer's format in the core: the kdhw port carries the quantizer's
    codes, and a narrower core element would silently drop bits of them.
    """
    want = (fmt.signed, fmt.int_bits, fmt.frac_bits)
    out, off = [], 0
    for j, (k, i, f) in enumerate(kifs):
        w = int(k) + i + f
        if w <= 0:
            out.append((off, 0))
            continue
        if (bool(k), i, f) != want:
            raise RuntimeError(f"internal error: da4ml input element {j} has format (k={k}, i={i}, f={f}); the "
                               f"input quantizer's is {want}")
        out.append((off, w))
        off += w
    return out


def _top_verilog(top: str, core: str, n_in: int, fmt_in: FixedFormat, in_map: list[tuple[int, int]],
                 core_in_bits: int, n_out: int, fmt_out: FixedFormat, out_map: list[tuple[int, int, int, int]],
                 core_out_bits: int, latency: int, pad: int) -> str:
    w_in, w_out = fmt_in.bits, fmt_out.bits
    in_lines = []
    for j, (off, w) in enumerate(in_map):
        if w > 0:  # a live input has the port's format (checked in _input_map): a plain copy of its bits
            in_lines.append(f"    assign core_inp[{off + w - 1}:{off}] = model_inp[{j * w_in + w - 1}:{j * w_in}];")
    dead = [j for j, (_, w) in enumerate(in_map) if w <= 0]
    if dead:
        in_lines.append(f"    // {len(dead)} input element(s) read by no weight: their port bits go nowhere (a wire "
                        "named unused_* tells lint so).")
        bits = ", ".join(f"model_inp[{j * w_in + w_in - 1}:{j * w_in}]" for j in dead)
        in_lines.append(f"    wire unused_dead_inputs = ^{{{bits}}};")
    lines = []
    for j, (off, w, f, k) in enumerate(out_map):
        lo = j * w_out
        if w <= 0:
            lines.append(f"    assign out_w[{lo + w_out - 1}:{lo}] = {w_out}'d0;")
            continue
        shift = fmt_out.frac_bits - f
        hi_pad = w_out - w - shift
        parts = []
        if hi_pad > 0:
            parts.append(f"{{{hi_pad}{{core_out[{off + w - 1}]}}}}" if k else f"{hi_pad}'d0")
        parts.append(f"core_out[{off + w - 1}:{off}]")
        if shift > 0:
            parts.append(f"{shift}'d0")
        lines.append(f"    assign out_w[{lo + w_out - 1}:{lo}] = {{{', '.join(parts)}}};")
    regs = ""
    if pad:
        decl = "\n".join(f"    reg [{n_out * w_out - 1}:0] out_r{i};" for i in range(pad))
        body = "\n".join(f"        out_r{i} <= {'out_w' if i == 0 else f'out_r{i - 1}'};" for i in range(pad))
        regs = f"{decl}\n    always @(posedge clk) begin\n{body}\n    end\n    assign model_out = out_r{pad - 1};\n"
    else:
        regs = "    assign model_out = out_w;\n"

    def fmt_doc(fmt: FixedFormat) -> str:
        kind = "two's complement" if fmt.signed else "unsigned"
        return f"{kind} codes {fmt.lo}..{fmt.hi}, value = code * 2^-{fmt.frac_bits}"

    return f"""`timescale 1 ns / 1 ps
// Generated by kdhw (QONNX -> da4ml). Uniform-width ports around the da4ml pipeline `{core}`.
// model_inp: {n_in} elements x {w_in} bits; element j (row-major, channels-first) in [j*{w_in} +: {w_in}];
//            {fmt_doc(fmt_in)}
// model_out: {n_out} elements x {w_out} bits; element j in [j*{w_out} +: {w_out}];
//            {fmt_doc(fmt_out)}
// Latency: the result of the vector captured at rising edge t is on model_out after rising edge t+{latency}.
// A new vector may be applied every cycle (II = 1). There is no reset and no valid/ready handshake.
module {top} (
    input clk,
    input [{n_in * w_in - 1}:0] model_inp,
    output [{n_out * w_out - 1}:0] model_out
);
    wire [{core_in_bits - 1}:0] core_inp;
    wire [{core_out_bits - 1}:0] core_out;
    wire [{n_out * w_out - 1}:0] out_w;

{chr(10).join(in_lines)}

    {core} u_core (
        .clk(clk),
        .model_inp(core_inp),
        .model_out(core_out)
    );

{chr(10).join(lines)}

{regs}endmodule
"""


def _tidy_da4ml_project(tmp: Path, top: str, core: str, pipe: Any, stage_files: list[str]) -> list[str]:
    """What da4ml's ``VerilogModel.write`` left in ``tmp``, made fit to share a design with other cores:
    its helper modules renamed ``<top>_<helper>`` (only those the stages use: da4ml's lookup_table.v, for one,
    does not elaborate in Icarus), every Verilog file with one timescale and ``default_nettype none``; no
    vendor project scripts (da4ml names part xcvu13p-flga2577-2-e in them and in metadata.json whatever the
    board).  Returns the helper modules' names, in compile order."""
    import json

    from ._hdl_text import finish, helper_sources, mark_unread_stage_inputs, prefix_helpers, used_helpers

    src = tmp / "src"
    for f in tmp.glob("build_*_prj.tcl"):
        f.unlink()
    md = tmp / "metadata.json"
    if md.is_file():
        info = json.loads(md.read_text())
        info.pop("part_name", None)
        write_json(md, info)
    stage_text = [(tmp / f).read_text() for f in stage_files]
    used = used_helpers("\n".join(stage_text))
    for f in (src / "static").glob("*.v"):  # da4ml's copies under their own names
        f.unlink()
    helpers = helper_sources(top, used)
    for name, text in helpers.items():
        write_text(src / "static" / f"{name}.v", text)
    for f, text, sol in zip(stage_files, stage_text, pipe.solutions):
        write_text(tmp / f, finish(mark_unread_stage_inputs(prefix_helpers(text, top), sol)))
    for f in (src / f"{core}.v", src / f"{core}_wrapper.v"):
        if f.is_file():
            write_text(f, finish(f.read_text()))
    return list(helpers)


def _check_name(top: str) -> None:
    if not isinstance(top, str) or not _NAME_RE.match(top):
        raise InputError(f"top = {top!r} is not a valid Verilog module name (letters, digits, _; not first a digit; "
                         "at most 63 characters)")
    if top in _KEYWORDS:
        raise InputError(f"top = {top!r} is a Verilog keyword")


MODES = ("parallel", "stream")
MODEL_FILE = "model.qonnx.onnx"
STREAM_OPTIONS = RTL_STREAM_KEYS  # the config and the CLI share these rules (kdhw.config.check_rtl_options)


def rtl_options(rtl: dict[str, Any]) -> dict[str, Any]:
    """``qonnx_to_rtl`` keyword arguments from a config's ``rtl`` section (validated by ``kdhw.config``)."""
    return {"mode": rtl.get("mode") or "parallel", "latency_cutoff": rtl.get("latency_cutoff"),
            "pipeline": rtl.get("pipeline"), "top": rtl.get("top") or DEFAULT_TOP,
            **{k: rtl.get(k) for k in STREAM_OPTIONS}}


def qonnx_to_rtl(
    onnx_path: str | Path,
    out_dir: str | Path,
    latency_cutoff: float | None = None,
    pipeline: int | None = None,
    top: str = DEFAULT_TOP,
    clock_period_ns: float = DEFAULT_CLOCK_PERIOD_NS,
    mode: str = "parallel",
    parallelism: int | None = None,
    in_elements: int | None = None,
    out_elements: int | None = None,
    output: str | None = None,
    dense: str | None = None,
    tlast: str | None = None,
    fold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert a QONNX student to pipelined Verilog in ``out_dir`` (atomically); returns the rtl.json dict.

    ``mode``: ``parallel`` is one unrolled block (every input and output in parallel, a new input every
    cycle); ``stream`` is an AXI4-Stream core with line buffers and one datapath per layer
    (``parallelism``, ``in_elements``, ``out_elements``, ``output``, ``dense``: see ``kdhw.hw.rtl._stream_*``;
    ``tlast``: ``required`` (default) frames the input by s_axis_tlast, ``ignore`` by the beat count alone;
    ``fold``: {pe, simd[, memory]} turns every dense layer into a unit with PE outputs x SIMD inputs per cycle
    and its weights in block RAM, unset: today's folded/unrolled units).
    ``top`` names the top module, and every other module of the design starts with it (da4ml's helper
    modules included), so cores generated with different tops can be compiled into one design.
    Pipeline depth: ``latency_cutoff`` is da4ml's delay budget per stage (in its adder-delay units; smaller
    means more, shorter stages), default 5.  ``pipeline`` (parallel mode) asks instead for exactly that many
    clock cycles of latency: the budget is derived from the traced depth, and output registers make up any
    shortfall.  The QONNX model is copied into ``out_dir`` (``model.qonnx.onnx``) so the directory is
    self-contained for ``kdhw verify`` and ``kdhw report``.
    """
    from kdhw.hw.export import load_qonnx

    _check_name(top)
    if not (isinstance(clock_period_ns, (int, float)) and clock_period_ns > 0):
        raise InputError(f"clock_period_ns = {clock_period_ns!r} must be a positive number")
    if mode not in MODES:
        raise InputError(f"rtl.mode = {mode!r}; allowed: {', '.join(MODES)}")
    stream_opts = {"parallelism": parallelism, "in_elements": in_elements, "out_elements": out_elements,
                   "output": output, "dense": dense, "tlast": tlast, "fold": fold}
    onnx_path = Path(onnx_path)
    if mode == "stream":
        if pipeline is not None:
            raise InputError("rtl.pipeline (an exact latency) applies to rtl.mode: parallel; in stream mode set "
                             "latency_cutoff (pipeline depth of each layer's datapath)")
        mw = load_qonnx(onnx_path)
        return _stream(mw, onnx_path, out_dir, latency_cutoff, top, clock_period_ns, stream_opts)
    given = [k for k, v in stream_opts.items() if v is not None]
    if given:
        raise InputError(f"rtl.{given[0]} applies to rtl.mode: stream (this is mode parallel)")
    mw = load_qonnx(onnx_path)
    return _parallel(mw, onnx_path, out_dir, latency_cutoff, pipeline, top, clock_period_ns)


def _source_fields(onnx_path: Path, tmp: Path) -> dict[str, Any]:
    import shutil

    from da4ml import __version__ as da4ml_version

    shutil.copyfile(onnx_path, tmp / MODEL_FILE)
    return {"generator": f"kdhw.hw.rtl + da4ml {da4ml_version}", "source_model": onnx_path.name,
            "source_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(), "model_file": MODEL_FILE}


def _stream(mw: Any, onnx_path: Path, out_dir: str | Path, latency_cutoff: float | None, top: str,
            clock_period_ns: float, opts: dict[str, Any]) -> dict[str, Any]:
    from ._stream_build import build_stream

    cutoff = DEFAULT_LATENCY_CUTOFF if latency_cutoff is None else float(latency_cutoff)
    if not (cutoff > 0 and math.isfinite(cutoff)):
        raise InputError(f"latency_cutoff = {latency_cutoff!r} must be a positive number (da4ml delay units per "
                         "pipeline stage)")
    with atomic_dir(out_dir) as tmp:
        fields, _ = build_stream(mw, tmp, top, cutoff, opts["parallelism"] or 1, opts["in_elements"],
                                 opts["out_elements"], opts["output"] or "logits", opts["dense"] or "auto",
                                 opts["tlast"] or "required", opts.get("fold"))
        meta = {"top": top, "mode": "stream", **_source_fields(onnx_path, tmp), **fields,
                "clock_period_ns": float(clock_period_ns)}
        write_text(tmp / "filelist.f", "\n".join(meta["verilog_files"]) + "\n")
        write_json(tmp / META_FILE, meta)
    return meta


def _parallel(mw: Any, onnx_path: Path, out_dir: str | Path, latency_cutoff: float | None, pipeline: int | None,
              top: str, clock_period_ns: float) -> dict[str, Any]:
    from da4ml.codegen import VerilogModel
    from da4ml.types import minimal_kif

    tr, comb, pipe, cutoff, pad = _choose(mw, latency_cutoff, pipeline)
    core = f"{top}_core"

    n_in, n_out = len(tr.inputs), len(tr.outputs)
    # Judged on the combinational trace, which keeps every input, so the answer does not depend on the depth.
    refs = comb.ref_count
    if not any(refs[j] for j, op in enumerate(comb.ops) if op.opcode == -1):
        raise InputError(f"{onnx_path}: no output of the model depends on its input (the weights reading it are "
                         "all 0); nothing to build")
    in_kifs = [tuple(minimal_kif(q)) for q in pipe.inp_qint]
    in_map = _input_map(tr.input_format, in_kifs)
    core_in_bits = sum(w for _, w in in_map)
    out_kifs = [tuple(minimal_kif(q)) for q in pipe.out_qint]
    out_map = _port_map(tr.output_format, out_kifs, "output")
    core_out_bits = sum(max(w, 0) for _, w, _, _ in out_map)
    if core_out_bits == 0:
        raise InputError(f"{onnx_path}: every output of the model is the constant 0; nothing to build")
    n_stages = len(pipe.solutions)
    latency = n_stages + pad

    with atomic_dir(out_dir) as tmp:
        model = VerilogModel(pipe, core, tmp, latency_cutoff=cutoff, print_latency=True,
                             clock_period=float(clock_period_ns))
        with contextlib.redirect_stdout(io.StringIO()):
            model.write()
        comb.save(tmp / "model" / "comb.json")
        src = tmp / "src"
        write_text(src / f"{top}.v", finish(_top_verilog(
            top, core, n_in, tr.input_format, in_map, core_in_bits, n_out, tr.output_format, out_map,
            core_out_bits, latency, pad)))
        stage_files = [f"src/{core}_stage{i}.v" for i in range(n_stages)]
        used = _tidy_da4ml_project(tmp, top, core, pipe, stage_files)
        files = [f"src/static/{name}.v" for name in used] + stage_files + [f"src/{core}.v", f"src/{top}.v"]
        missing = [f for f in files if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"internal error: da4ml did not write {missing}")
        write_text(tmp / "filelist.f", "\n".join(files) + "\n")
        fin, fout = tr.input_format, tr.output_format
        meta = {
            "top": top,
            "mode": "parallel",
            "tlast": None,  # no AXI4-Stream ports (stream designs: "required" or "ignore")
            "core": core,
            **_source_fields(onnx_path, tmp),
            "latency_cycles": latency,
            "pipeline_stages": n_stages,
            "extra_output_registers": pad,
            "latency_cutoff": cutoff,
            "initiation_interval": 1,
            "clock_period_ns": float(clock_period_ns),
            "input_shape": list(tr.input_shape),
            "output_shape": list(tr.output_shape),
            "n_inputs": n_in,
            "n_outputs": n_out,
            "input_bits_total": n_in * fin.bits,
            "output_bits_total": n_out * fout.bits,
            "input_format": {**fin.to_json(), "rounding": tr.input_rounding},
            "output_format": fout.to_json(),
            "packing": ("element j of the row-major, channels-first flattened tensor occupies port bits "
                        "[j*bits, j*bits+bits-1] (LSB first); codes are two's complement when signed; "
                        "value = code * scale. Float inputs become codes with the input Quant's own rounding "
                        "(kdhw.hw.rtl.pack_inputs)."),
            "ports": {
                "clk": "rising-edge clock; no reset, no valid/ready",
                "model_inp": {"direction": "input", "width": n_in * fin.bits},
                "model_out": {"direction": "output", "width": n_out * fout.bits},
            },
            "inputs": [{"index": j, "lsb": j * fin.bits, "bits": fin.bits, "int_bits": fin.int_bits,
                        "frac_bits": fin.frac_bits, "signed": fin.signed, "core_bits": in_map[j][1]}
                       for j in range(n_in)],
            "outputs": [{"index": j, "lsb": j * fout.bits, "bits": fout.bits, "int_bits": fout.int_bits,
                         "frac_bits": fout.frac_bits, "signed": fout.signed,
                         "core_bits": max(out_map[j][1], 0)} for j in range(n_out)],
            "verilog_files": files,
            "da4ml_estimate": {
                "lut": int(round(pipe.cost)),
                "cost": float(pipe.cost),
                "ff": int(pipe.reg_bits + pad * n_out * fout.bits),
                "ff_core": int(pipe.reg_bits),
                "adders": int(sum(1 for s in pipe.solutions for op in s.ops if op.opcode in (0, 1, 4))),
                "comb_delay": float(comb.latency[1]),
                "note": "da4ml's own estimate: LUTs from its adder cost model, FFs = pipeline register bits",
            },
        }
        write_json(tmp / META_FILE, meta)
    return meta


def load_meta(rtl_dir: str | Path | dict[str, Any]) -> dict[str, Any]:
    """rtl.json of an RTL directory (a dict is passed through, so helpers accept either)."""
    if isinstance(rtl_dir, dict):
        return rtl_dir
    p = Path(rtl_dir) / META_FILE
    if not p.is_file():
        raise InputError(f"{rtl_dir}: no {META_FILE}; run `kdhw rtl MODEL.onnx --out DIR` first")
    import json

    try:
        meta = json.loads(p.read_text())
        for key in ("top", "latency_cycles", "input_format", "output_format", "n_inputs", "n_outputs"):
            meta[key]  # noqa: B018
    except (ValueError, KeyError) as e:
        raise InputError(f"{p}: not a kdhw rtl.json ({type(e).__name__}: {e})") from None
    meta["_dir"] = str(Path(rtl_dir).resolve())
    meta.setdefault("tlast", tlast_mode(meta))  # rtl.json written before rtl.tlast existed
    return meta


def tlast_mode(meta: dict[str, Any]) -> str | None:
    """``required`` or ``ignore`` for a stream design (``required`` where rtl.json predates rtl.tlast), None for
    a parallel one (no AXI4-Stream ports)."""
    if meta.get("mode") != "stream":
        return None
    return meta.get("tlast") or (meta.get("stream") or {}).get("tlast_mode") or "required"


def io_formats(meta: dict[str, Any]) -> tuple[FixedFormat, FixedFormat]:
    return FixedFormat.from_json(meta["input_format"]), FixedFormat.from_json(meta["output_format"])
