"""Core hygiene of the generated Verilog (parallel and stream): every module starts with the top's name, so two
cores with different tops compile, synthesize and simulate side by side in one design; every file has one
timescale and ``default_nettype none`` (``wire`` restored at its end); ``verilator --lint-only -Wall`` is
clean; no vendor script or part name that is not the board's; ``rtl.tlast: ignore`` frames by the beat count
with s_axis_tlast tied low or high; ``rtl.top`` / ``rtl.tlast`` in the config, the CLI and rtl.json.  Each
check is also shown to fail on the fault it is there for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdhw.cli import main
from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.hw.rtl import emulate, input_codes, load_meta, output_codes, pack_inputs, pack_outputs, qonnx_to_rtl
from kdhw.hw.rtl import rtl_options, stream_in_words, stream_out_words, tlast_mode
from kdhw.hw.rtl._hdl_text import HELPERS

KINDS = ["mlp", "conv1d", "conv2d"]
_MODULE = re.compile(r"^\s*module\s+(\w+)", re.M)
_BARE_HELPER = re.compile(r"\b(" + "|".join(HELPERS) + r")\s*#\s*\(")
# part numbers as vendor tools spell them: Xilinx (xc7z020clg400-1, xcvu13p-flga2577-2-e), Intel, Lattice
_PART = re.compile(r"\bx[ca][0-9a-z]{3,}-[0-9a-z-]+|\b(?:10A[SX]|5CE|5CS|1S[GX]|AG[FI])\w{6,}|\bLFE5UM?5?G?-\w+|"
                   r"\biCE40\w*-\w+", re.I)


def _all_designs(designs: dict, streams: dict) -> list[tuple[str, Path]]:
    return [(f"{k}-parallel", designs[k][1]) for k in KINDS] + [(f"{k}-stream", streams[k][1]) for k in KINDS]


def _verilog_files(rtl: Path) -> list[Path]:
    return sorted(rtl.rglob("*.v"))


def lint(rtl: Path, extra: list[Path] | None = None) -> list[str]:
    """``verilator --lint-only -Wall`` on the design's files (rtl.json order); the warning and error lines."""
    from kdhw.util.runtime import verilator_env

    meta = load_meta(rtl)
    files = [str(rtl / f) for f in meta["verilog_files"]] + [str(p) for p in extra or []]
    r = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal", "--top-module", meta["top"], *files],
                       env={**os.environ, **verilator_env()}, capture_output=True, text=True, timeout=300)
    found = [line for line in r.stderr.splitlines() if line.startswith("%")]
    if r.returncode and not found:
        found = [f"verilator exited {r.returncode}: {r.stderr[-500:]}"]
    return found


def _file_problems(p: Path, top: str) -> list[str]:
    """What is wrong with one generated Verilog file (empty: nothing)."""
    text = p.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bad = []
    if len(re.findall(r"^\s*`timescale", text, re.M)) != 1 or lines[0] != "`timescale 1 ns / 1 ps":
        bad.append("not exactly one `timescale 1 ns / 1 ps, first")
    if lines[1:2] != ["`default_nettype none"] or lines[-1] != "`default_nettype wire" or len(
            re.findall(r"`default_nettype", text)) != 2:
        bad.append("no `default_nettype none after the timescale and wire at the end")
    if _MODULE.findall(text) != [p.stem]:  # one module per file, named like it (Verilator finds it so)
        bad.append(f"modules {_MODULE.findall(text)} in {p.name}")
    if not (p.stem == top or p.stem.startswith(f"{top}_")):
        bad.append(f"module {p.stem} does not start with {top}")
    if _BARE_HELPER.search(text):
        bad.append("a da4ml helper under its own name")
    return bad


def test_every_file_has_one_timescale_and_default_nettype_none_every_module_the_top_prefix(designs, streams,
                                                                                           tmp_path) -> None:
    for what, rtl in _all_designs(designs, streams):
        meta = load_meta(rtl)
        files = _verilog_files(rtl)
        assert {rtl / f for f in meta["verilog_files"]} <= set(files) and any("static" in p.parts for p in files)
        for p in files:
            assert not _file_problems(p, meta["top"]), (what, str(p.relative_to(rtl)), _file_problems(p, meta["top"]))
        # no leftovers of da4ml's own copies (unprefixed, unused lookup_table.v and the like)
        assert {p.name for p in (rtl / "src" / "static").iterdir()} == {
            Path(f).name for f in meta["verilog_files"] if f.startswith("src/static/")}, what
    # the check fails on what da4ml writes by itself (helpers under their own names, no default_nettype)
    from da4ml.codegen import VerilogModel
    from da4ml.types import Pipeline

    raw = tmp_path / "raw"
    VerilogModel(Pipeline.load(str(designs["mlp"][1] / "model" / "pipeline.json")), "core", raw,
                 latency_cutoff=5.0).write()
    problems = {p.name: _file_problems(p, "core") for p in raw.rglob("*.v")}
    assert all(problems.values()) and any("helper" in " ".join(v) for v in problems.values()), problems


@pytest.mark.slow
def test_verilator_lint_all_is_clean_on_parallel_and_stream_cores(designs, streams, qonnx_models, tmp_path) -> None:
    """-Wall: width, unused signals, file names, style.  The stream cores also with the options that add
    logic (several positions per issue, MAC lanes, several elements per beat, class/both output, tlast
    ignored)."""
    cases = _all_designs(designs, streams)
    extra = [("conv2d", dict(parallelism=2, output="both", out_elements=3, tlast="ignore")),
             ("mlp", dict(in_elements=5, parallelism=2, output="class")),
             ("conv1d", dict(parallelism=3, dense="unrolled", out_elements=2))]
    for i, (kind, opts) in enumerate(extra):
        rtl = tmp_path / f"s{i}"
        qonnx_to_rtl(qonnx_models[kind][0], rtl, mode="stream", top=f"lint{i}", **opts)
        cases.append((f"{kind}-stream {opts}", rtl))
    # a hidden neuron whose weights are all 0: its MAC accumulator is a 1-bit constant nothing reads
    dead = tmp_path / "dead"
    qonnx_to_rtl(_dead_neuron(qonnx_models["mlp"][0], tmp_path / "dead.onnx"), dead, mode="stream", top="dead")
    assert re.search(r"wire unused_acc = \^\{.*acc_3\b", (dead / "src" / "dead_u0.v").read_text())
    cases.append(("mlp-stream, dead neuron", dead))
    report = {what: lint(rtl) for what, rtl in cases}
    assert not any(report.values()), json.dumps({k: v[:5] for k, v in report.items() if v}, indent=1)


def _dead_neuron(onnx_path: Path, out: Path, neuron: int = 3) -> Path:
    """A copy of a QONNX MLP whose first dense layer has all weights of ``neuron`` at 0."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(onnx_path))
    gemm = next(n for n in m.graph.node if n.op_type in ("Gemm", "MatMul"))
    quant = next(n for n in m.graph.node if n.output[0] == gemm.input[1])
    init = next(i for i in m.graph.initializer if i.name == quant.input[0])
    w = numpy_helper.to_array(init).copy()
    w[neuron] = 0.0  # Gemm with transB: one row per output
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(out))
    return out


@pytest.mark.slow
def test_lint_check_fails_on_a_planted_width_mismatch(streams, designs, tmp_path) -> None:
    """The lint test can fail: a 1-bit-too-narrow assignment planted in a copy of each form is reported."""
    for what, rtl in (("stream", streams["mlp"][1]), ("parallel", designs["mlp"][1])):
        bad = tmp_path / what
        shutil.copytree(rtl, bad)
        top = bad / "src" / f"{load_meta(bad)['top']}.v"
        text = top.read_text()
        port = "m_axis_tdata" if what == "stream" else "model_out"
        w = load_meta(bad)["ports"][port]["width"]
        planted = text.replace("endmodule", f"    wire [{w - 2}:0] narrow = {port};\n"
                                            f"    wire unused_narrow = ^narrow;\nendmodule")
        top.write_text(planted)
        found = lint(bad)
        assert len(found) == 1 and "WIDTHTRUNC" in found[0] and f"{top.name}:" in found[0], found


def _pair(qonnx_models: dict, root: Path) -> tuple[Path, Path]:
    """A parallel MLP (top kdhw_a) and a stream 1D CNN (top kdhw_b), written by ``kdhw rtl --top``."""
    a, b = root / "a", root / "b"
    assert main(["rtl", str(qonnx_models["mlp"][0]), "--out", str(a), "--top", "kdhw_a"]) == 0
    assert main(["rtl", str(qonnx_models["conv1d"][0]), "--out", str(b), "--mode", "stream", "--top", "kdhw_b"]) == 0
    return a, b


def _pair_bench(a: Path, b: Path, x_a: np.ndarray, x_b: np.ndarray, work: Path) -> tuple[list[str], str]:
    """A plain Verilog bench instantiating both cores: core A takes a row per cycle, core B its frames back to
    back (tready high).  Writes the input words; returns (source files, bench file)."""
    ma, mb = load_meta(a), load_meta(b)
    n = len(x_a)
    st = mb["stream"]
    nb = st["beats_in"]
    (work / "a_in.hex").write_text("\n".join(f"{w:x}" for w in pack_inputs(ma, x_a)) + "\n")
    (work / "b_in.hex").write_text("\n".join(f"{w:x}" for w in stream_in_words(mb, input_codes(mb, x_b))) + "\n")
    wa_in, wa_out = ma["ports"]["model_inp"]["width"], ma["ports"]["model_out"]["width"]
    wb_in, wb_out = mb["ports"]["s_axis_tdata"]["width"], mb["ports"]["m_axis_tdata"]["width"]
    lat = ma["latency_cycles"]
    bench = f"""`timescale 1 ns / 1 ps
`default_nettype none
module pair_tb;
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg [{wa_in - 1}:0] a_mem [0:{n - 1}];
    reg [{wa_in - 1}:0] a_in;
    wire [{wa_out - 1}:0] a_out;
    kdhw_a ua (.clk(clk), .model_inp(a_in), .model_out(a_out));
    reg [{wb_in - 1}:0] b_mem [0:{n * nb - 1}];
    reg aresetn = 1'b0;
    integer bi = 0, bo = 0, c, fa, fb;
    wire s_tvalid = aresetn && bi < {n * nb};
    wire [{wb_in - 1}:0] s_tdata = b_mem[bi < {n * nb} ? bi : 0];
    wire s_tlast = (bi % {nb}) == {nb - 1};
    wire s_tready, m_tvalid, m_tlast, err;
    wire [{wb_out - 1}:0] m_tdata;
    kdhw_b ub (.clk(clk), .aresetn(aresetn), .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid),
        .s_axis_tready(s_tready), .s_axis_tlast(s_tlast), .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid),
        .m_axis_tready(1'b1), .m_axis_tlast(m_tlast), .tlast_err(err));
    always @(posedge clk) begin
        if (s_tvalid && s_tready) bi <= bi + 1;
        if (aresetn && m_tvalid) begin
            $fwrite(fb, "%h %0d\\n", m_tdata, m_tlast);
            bo <= bo + 1;
        end
    end
    initial begin
        $readmemh("a_in.hex", a_mem);
        $readmemh("b_in.hex", b_mem);
        fa = $fopen("a_out.txt", "w");
        fb = $fopen("b_out.txt", "w");
        // the row set at falling edge c is captured at the next rising edge and its result is on a_out
        // {lat} rising edges later: at falling edge c + {lat + 1}
        for (c = 0; c < {n + lat + 1}; c = c + 1) begin
            @(negedge clk);
            if (c == 2) aresetn = 1'b1;
            if (c >= {lat + 1}) $fwrite(fa, "%h\\n", a_out);
            a_in = c < {n} ? a_mem[c] : a_mem[0];
        end
        for (c = 0; c < 200000 && bo < {n * st['beats_out']}; c = c + 1) @(negedge clk);
        $fclose(fa);
        $fclose(fb);
        $finish;
    end
endmodule
`default_nettype wire
"""
    (work / "pair_tb.v").write_text(bench)
    files = [str(a / f) for f in ma["verilog_files"]] + [str(b / f) for f in mb["verilog_files"]]
    return files, str(work / "pair_tb.v")


def _pair_top(a: Path, b: Path, work: Path) -> str:
    """A synthesizable top holding both cores, for one yosys project."""
    pa, pb = load_meta(a)["ports"], load_meta(b)["ports"]
    text = f"""module pair (
    input wire clk, input wire aresetn,
    input wire [{pa['model_inp']['width'] - 1}:0] a_in, output wire [{pa['model_out']['width'] - 1}:0] a_out,
    input wire [{pb['s_axis_tdata']['width'] - 1}:0] s_tdata, input wire s_tvalid, input wire s_tlast,
    output wire s_tready, output wire [{pb['m_axis_tdata']['width'] - 1}:0] m_tdata, output wire m_tvalid,
    input wire m_tready, output wire m_tlast, output wire err
);
    kdhw_a ua (.clk(clk), .model_inp(a_in), .model_out(a_out));
    kdhw_b ub (.clk(clk), .aresetn(aresetn), .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid),
        .s_axis_tready(s_tready), .s_axis_tlast(s_tlast), .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid),
        .m_axis_tready(m_tready), .m_axis_tlast(m_tlast), .tlast_err(err));
endmodule
"""
    (work / "pair.v").write_text(text)
    return str(work / "pair.v")


def _yosys() -> list[str]:
    from kdhw.hw.synth import yosys

    return yosys()


@pytest.mark.slow
def test_two_cores_with_different_tops_compile_synthesize_and_simulate_side_by_side(qonnx_models, tmp_path) -> None:
    a, b = _pair(qonnx_models, tmp_path)
    ma, mb = load_meta(a), load_meta(b)
    assert (ma["top"], mb["top"], ma["mode"], mb["mode"]) == ("kdhw_a", "kdhw_b", "parallel", "stream")
    shared = {Path(f).name.split("_", 2)[-1] for f in ma["verilog_files"] if "static" in f} & {
        Path(f).name.split("_", 2)[-1] for f in mb["verilog_files"] if "static" in f}
    assert shared, "the two cores share no da4ml helper: nothing would collide"
    n = 16
    x_a, x_b = qonnx_models["mlp"][1][:n], qonnx_models["conv1d"][1][:n]
    work = tmp_path / "sim"
    work.mkdir()
    files, bench = _pair_bench(a, b, x_a, x_b, work)
    r = subprocess.run(["iverilog", "-g2005", "-s", "pair_tb", "-o", "pair.vvp", *files, bench], cwd=work,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(["vvp", "-n", "pair.vvp"], cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got_a = [int(w, 16) for w in (work / "a_out.txt").read_text().split()]
    assert got_a == pack_outputs(ma, emulate(a, x_a))  # every row of A, bit for bit
    beats = [ln.split() for ln in (work / "b_out.txt").read_text().splitlines()]
    want_b = stream_out_words(mb, output_codes(mb, emulate(b, x_b)))
    nbo = mb["stream"]["beats_out"]
    assert [int(w, 16) for w, _ in beats] == want_b and [int(t) for _, t in beats] == ([0] * (nbo - 1) + [1]) * n
    # one yosys project: both read, coarse synthesis of a top holding both (the full flow is kdhw report's)
    pair = _pair_top(a, b, work)
    r = subprocess.run([*_yosys(), "-q", "-p", "synth -top pair -run begin:fine", *files, pair], cwd=work,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stderr + r.stdout)[-2000:]

    # the check fails without the prefix: da4ml's helpers under their own names in both cores collide
    bare_files = []
    for src in (a, b):
        copy = tmp_path / f"unprefixed_{src.name}"
        shutil.copytree(src, copy)
        top = load_meta(src)["top"]
        for p in copy.rglob("*.v"):
            p.write_text(re.sub(rf"\b{top}_({'|'.join(HELPERS)})\b", r"\1", p.read_text()))
        bare_files += [str(copy / f) for f in load_meta(src)["verilog_files"]]
    r = subprocess.run(["iverilog", "-g2005", "-s", "pair_tb", "-o", "bare.vvp", *bare_files, bench], cwd=work,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "already been declared" in r.stderr, r.stderr[-1000:]
    r = subprocess.run([*_yosys(), "-q", "-p", "synth -top pair -run begin:fine", *bare_files, pair], cwd=work,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "Re-definition of module" in (r.stderr + r.stdout), (r.stderr + r.stdout)[-1000:]


def test_no_vendor_script_or_foreign_part_in_the_rtl_folder(designs, streams, qonnx_models, tmp_path) -> None:
    """da4ml writes build_vivado_prj.tcl / build_quartus_prj.tcl and a metadata.json naming part
    xcvu13p-flga2577-2-e whatever the board: kdhw keeps none of that.  A folder fitted to a board (mode auto)
    may name that board's part only."""
    from kdhw.boards import load_board

    def parts(rtl: Path) -> set[str]:
        found: set[str] = set()
        for p in rtl.rglob("*"):
            if p.is_file() and p.suffix != ".onnx":
                found |= {m.group(0).lower() for m in _PART.finditer(p.read_text(errors="replace"))}
        return found

    for what, rtl in _all_designs(designs, streams):
        assert not list(rtl.rglob("build_*_prj.tcl")), what
        assert parts(rtl) == set(), (what, parts(rtl))
    board = load_board("pynq-z2")
    fit = tmp_path / "fit"
    assert main(["rtl", str(qonnx_models["mlp"][0]), "--out", str(fit), "--mode", "auto", "--board", "pynq-z2",
                 "--no-synth"]) == 0
    assert not list(fit.rglob("build_*_prj.tcl"))
    assert parts(fit) <= {board.part.lower()}, parts(fit)
    # the check can fail: da4ml's own project, as VerilogModel.write leaves it
    from da4ml.codegen import VerilogModel
    from da4ml.types import Pipeline

    raw = tmp_path / "raw"
    VerilogModel(Pipeline.load(str(designs["mlp"][1] / "model" / "pipeline.json")), "core", raw,
                 latency_cutoff=5.0).write()
    assert "xcvu13p-flga2577-2-e" in parts(raw)


def _tied(stream_rtl: Path, x: np.ndarray, ref: np.ndarray, work: Path, tied: bool | None = None) -> dict:
    from kdhw.verify.sim.runner import simulate_stream

    return simulate_stream(stream_rtl, x, ref, simulator="icarus", work_dir=work, tied_tlast=tied)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "conv2d"])
def test_tlast_ignore_frames_by_count_with_tlast_tied_low_and_high(kind: str, qonnx_models, tmp_path) -> None:
    """rtl.tlast: ignore, in Icarus: every row one frame with s_axis_tlast tied low, then again tied high,
    under random gaps and back-pressure; bit for bit with the QONNX reference, m_axis_tlast on each output
    frame's last beat, tlast_err flagging the disagreement.  The usual stall, timing and reset tests pass too."""
    from kdhw.hw.export import load_qonnx, reference

    path, x = qonnx_models[kind]
    rtl = tmp_path / "rtl"
    meta = qonnx_to_rtl(path, rtl, mode="stream", tlast="ignore", output="both")
    assert meta["tlast"] == "ignore" == tlast_mode(load_meta(rtl)) and meta["stream"]["tlast_mode"] == "ignore"
    n = 40
    xs = x[:n]
    ref = reference(load_qonnx(path), xs)
    res = _tied(rtl, xs, ref, tmp_path / "work")
    ti = res["tests"]["tlast_ignored"]
    assert ti["tied_low"]["ok"] and ti["tied_high"]["ok"], json.dumps(ti)[:1500]
    assert ti["tied_low"]["exact_frames"] == ti["tied_high"]["exact_frames"] == n
    assert res["exact_rows"] == n and res["latency_ok"] and res["protocol_ok"], json.dumps(res["tests"])[:1500]
    assert res["tests"]["tlast_errors"].get("skipped")  # repairing malformed frames is rtl.tlast: required's


@pytest.mark.slow
def test_tied_tlast_check_fails_on_a_core_that_requires_tlast(streams, tmp_path) -> None:
    """The same bench on a rtl.tlast: required core: tied low gives one frame and then nothing, tied high a
    zero-filled frame per beat; both are reported (and the required core's own tlast checks still pass)."""
    from kdhw.hw.export import load_qonnx, reference

    path, rtl, x = streams["mlp"]
    assert tlast_mode(load_meta(rtl)) == "required"
    xs = x[:6]
    res = _tied(rtl, xs, reference(load_qonnx(path), xs), tmp_path / "work", tied=True)
    ti = res["tests"]["tlast_ignored"]
    assert ti["tied_low"]["exact_frames"] == 1 and ti["tied_low"]["beats_out"] == load_meta(rtl)["stream"]["beats_out"]
    assert not ti["tied_high"]["ok"] and not res["protocol_ok"]
    assert res["tests"]["tlast_errors"]["exact"] and res["exact_rows"] == len(xs)


def test_rtl_json_records_top_and_tlast_and_old_files_still_read(designs, streams, qonnx_models, tmp_path) -> None:
    mp, ms = load_meta(designs["mlp"][1]), load_meta(streams["mlp"][1])
    assert (mp["top"], mp["tlast"], ms["top"], ms["tlast"]) == ("kdhw_top", None, "kdhw_top", "required")
    assert ms["stream"]["tlast_mode"] == "required" and "tlast_err" in ms["ports"]
    assert "tied low gives one output frame" in ms["stream"]["tlast"]  # the required behaviour, spelled out
    # an rtl.json written before rtl.tlast existed reads as a core that requires tlast
    old = tmp_path / "old"
    shutil.copytree(streams["mlp"][1], old)
    raw = json.loads((old / "rtl.json").read_text())
    del raw["tlast"], raw["stream"]["tlast_mode"]
    (old / "rtl.json").write_text(json.dumps(raw))
    assert load_meta(old)["tlast"] == "required" == tlast_mode(raw)
    x = qonnx_models["mlp"][1][:20]
    assert np.array_equal(emulate(old, x), emulate(streams["mlp"][1], x))
    # the inventory prices tlast: ignore's simpler input unit
    ign = qonnx_to_rtl(qonnx_models["mlp"][0], tmp_path / "ign", mode="stream", tlast="ignore", top="k2")
    assert ign["top"] == "k2" and all(p.name.startswith("k2") for p in (tmp_path / "ign" / "src").rglob("*.v"))
    def ff_in(meta: dict) -> int:
        return next(u for u in meta["inventory"]["units"] if u["unit"] == "axis_in")["ff"]["counters"]

    assert ff_in(ign) == ff_in(ms) - 2


def test_config_and_cli_take_top_and_tlast_and_refuse_them_where_they_do_not_apply(qonnx_models, tmp_path,
                                                                                  capsys) -> None:
    cfg = validate({"rtl": {"mode": "stream", "tlast": "ignore", "top": "my_core"}})
    assert rtl_options(cfg.rtl)["top"] == "my_core" and rtl_options(cfg.rtl)["tlast"] == "ignore"
    assert rtl_options(validate({}).rtl)["top"] == "kdhw_top"
    for rtl, msg in (({"tlast": "ignore"}, "rtl.tlast applies to rtl.mode: stream"),
                     ({"mode": "stream", "tlast": "sometimes"}, "rtl.tlast"),
                     ({"top": "2core"}, "rtl.top = '2core' is not a Verilog module name")):
        with pytest.raises(InputError, match=re.escape(msg)):
            validate({"rtl": rtl})
    path = str(qonnx_models["mlp"][0])
    for argv, msg in ((["--tlast", "ignore"], "--tlast applies to --mode stream"),
                      (["--top", "bad name"], "--top = 'bad name' is not a Verilog module name")):
        assert main(["rtl", path, "--out", str(tmp_path / "x"), *argv]) == 2, argv
        assert msg in capsys.readouterr().err, argv
    with pytest.raises(InputError, match="Verilog keyword"):
        qonnx_to_rtl(path, tmp_path / "kw", top="module")
    d = tmp_path / "cli"
    assert main(["rtl", path, "--out", str(d), "--mode", "stream", "--tlast", "ignore", "--top", "edge_mlp"]) == 0
    meta = load_meta(d)
    assert (meta["top"], meta["tlast"]) == ("edge_mlp", "ignore")
    assert "tlast ignored" in (d / "src" / "edge_mlp_axis_in.v").read_text()
    # rtl.mode: auto hands both to every candidate it fits (the MLP's 401 parallel pins leave the icebreaker a
    # stream form)
    assert validate({"rtl": {"mode": "auto", "tlast": "ignore", "top": "mine"}}).rtl["top"] == "mine"
    d = tmp_path / "auto"
    assert main(["rtl", path, "--out", str(d), "--mode", "auto", "--board", "icebreaker", "--no-synth",
                 "--tlast", "ignore", "--top", "fit_mlp"]) == 0
    meta = load_meta(d)
    assert (meta["mode"], meta["top"], meta["tlast"]) == ("stream", "fit_mlp", "ignore")
