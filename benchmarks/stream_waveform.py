"""One frame through a stream core, from a real simulation: the README's instantiation example and timing diagram.

Trains the embedded default digits student briefly (the widths and the handshake do not depend on how well it
is trained), generates its stream RTL with 8 input elements per beat, 8 MAC lanes and both logits (5 per beat)
and the class index on the output, and simulates it with Icarus Verilog under a plain Verilog testbench: reset,
one frame of 8 beats with one tvalid gap, and m_axis_tready held low for two cycles when the result appears.
The testbench prints every port on every cycle; this script turns that trace into a text timing diagram and
checks the frame's output against the QONNX reference.  Writes ``results/stream_waveform.md``.

    .venv/bin/python -m benchmarks.stream_waveform
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS

warnings.filterwarnings("ignore")

OPTS = {"in_elements": 8, "parallelism": 8, "out_elements": 5, "output": "both"}
SIGNALS = ["aresetn", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast", "s_axis_tdata", "m_axis_tvalid",
           "m_axis_tready", "m_axis_tlast", "m_axis_tdata", "tlast_err"]


def testbench(meta: dict[str, Any], words: list[int]) -> str:
    p = meta["ports"]
    wi, wo = p["s_axis_tdata"]["width"], p["m_axis_tdata"]["width"]
    beats = "\n".join(f"        beats[{i}] = {wi}'h{w:x};" for i, w in enumerate(words))
    n = len(words)
    return f"""`timescale 1 ns / 1 ps
module tb;
    reg clk = 0, aresetn = 0, s_tvalid = 0, s_tlast = 0, m_tready = 1;
    reg [{wi - 1}:0] s_tdata = 0;
    wire s_tready, m_tvalid, m_tlast, err;
    wire [{wo - 1}:0] m_tdata;
    reg [{wi - 1}:0] beats [0:{n - 1}];
    integer cyc = 0, sent = 0;
    {meta['top']} dut (.clk(clk), .aresetn(aresetn), .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid),
        .s_axis_tready(s_tready), .s_axis_tlast(s_tlast), .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid),
        .m_axis_tready(m_tready), .m_axis_tlast(m_tlast), .tlast_err(err));
    always #5 clk = !clk;
    initial begin
{beats}
    end
    // drive on the falling edge; the rising edge samples
    reg gapped = 0, first = 1;
    reg [1:0] stall = 0;
    always @(negedge clk) begin
        cyc <= cyc + 1;
        aresetn <= cyc >= 1;
        if (cyc >= 2 && sent < {n} && !(sent == 4 && !gapped)) begin
            s_tvalid <= 1; s_tdata <= beats[sent]; s_tlast <= sent == {n - 1};
        end else begin
            if (sent == 4) gapped <= 1;  // one cycle without a beat before beat 4
            s_tvalid <= 0; s_tlast <= 0;
        end
        if (m_tvalid && first) begin  // the first result offered: not taken for two cycles
            first <= 0; stall <= 2; m_tready <= 0;
        end else if (stall > 1) begin
            stall <= stall - 1; m_tready <= 0;
        end else begin
            stall <= 0; m_tready <= 1;
        end
    end
    always @(posedge clk) begin
        if (s_tvalid && s_tready) sent = sent + 1;
        $display("T %0d %b %b %b %b %h %b %b %b %h %b", cyc, aresetn, s_tvalid, s_tready, s_tlast, s_tdata,
                 m_tvalid, m_tready, m_tlast, m_tdata, err);
        if (m_tvalid && m_tready && m_tlast) begin
            repeat (2) @(posedge clk) $display("T %0d %b %b %b %b %h %b %b %b %h %b", cyc, aresetn, s_tvalid,
                s_tready, s_tlast, s_tdata, m_tvalid, m_tready, m_tlast, m_tdata, err);
            $finish;
        end
        if (cyc > 400) $finish;
    end
endmodule
"""


def simulate(rtl: Path, meta: dict[str, Any], words: list[int], work: Path) -> list[dict[str, Any]]:
    tb = work / "tb.v"
    tb.write_text(testbench(meta, words))
    files = [str(rtl / f) for f in meta["verilog_files"]]
    subprocess.run(["iverilog", "-g2005", "-o", str(work / "sim"), "-s", "tb", str(tb), *files], check=True)
    out = subprocess.run(["vvp", "-n", str(work / "sim")], capture_output=True, text=True, check=True).stdout
    trace = []
    for line in out.splitlines():
        if not line.startswith("T "):
            continue
        v = line.split()[1:]
        trace.append({"cycle": int(v[0]), **{s: v[i + 1] for i, s in enumerate(SIGNALS)}})
    return trace


def diagram(trace: list[dict[str, Any]], in_words: list[int]) -> str:
    """Text timing diagram: one column of 4 characters per rising edge."""
    W = 4
    t0 = next(i for i, r in enumerate(trace) if r["aresetn"] == "1") - 1
    trace = trace[t0:]
    names = ["clk edge", *SIGNALS[:-1]]
    pad = max(len(n) for n in names) + 2
    lines = [f"{'clk edge'.ljust(pad)}" + "".join(str(i).ljust(W) for i in range(len(trace)))]
    out_beat = 0
    in_beat = 0
    for s in SIGNALS[:-1]:
        row = []
        for r in trace:
            if s in ("s_axis_tdata", "m_axis_tdata"):
                valid = r["s_axis_tvalid" if s[0] == "s" else "m_axis_tvalid"] == "1"
                moved = valid and r["s_axis_tready" if s[0] == "s" else "m_axis_tready"] == "1"
                if not valid:
                    cell = "-" * (W - 1) + " "
                elif s[0] == "s":
                    cell = (f"x{in_beat}" + ("*" if moved else "")).ljust(W)
                    in_beat += moved
                else:
                    last = r["m_axis_tlast"] == "1"
                    cell = (("c" if last else f"y{out_beat}") + ("*" if moved else "")).ljust(W)
                    out_beat += moved
                row.append(cell)
            else:
                row.append(("‾" if r[s] == "1" else "_") * (W - 1) + " ")
        lines.append((s.ljust(pad) + "".join(row)).rstrip())
    lines[0] = lines[0].rstrip()
    return "\n".join(lines)


def instantiation(meta: dict[str, Any]) -> str:
    p = meta["ports"]
    fi, fo = meta["input_format"], meta["output_format"]
    st = meta["stream"]
    wi, wo = p["s_axis_tdata"]["width"], p["m_axis_tdata"]["width"]
    return f"""// {meta['top']}: {st['beats_in']} input beats of {st['in_elements']} x {fi['bits']}-bit elements, {st['beats_out']} output beats
// ({st['logit_beats']} of {st['out_elements']} x {fo['bits']}-bit logits, then the class index); latency {meta['latency_cycles']} cycles, II {meta['initiation_interval']}
wire [{wi - 1}:0] in_tdata;   wire in_tvalid, in_tready, in_tlast;    // from your AXI4-Stream source
wire [{wo - 1}:0] out_tdata;  wire out_tvalid, out_tready, out_tlast; // to your AXI4-Stream sink
wire kdhw_tlast_err;                                             // sticky: a frame had the wrong beat count

{meta['top']} u_kdhw (
    .clk           (clk),          // rising edge
    .aresetn       (rst_n),        // synchronous, active low (AXI convention)
    .s_axis_tdata  (in_tdata),     // [{wi - 1}:0]: element j of the beat at [{fi['bits']}*j +: {fi['bits']}], {'signed' if fi['signed'] else 'unsigned'} codes, value = code * 2^-{fi['frac_bits']}
    .s_axis_tvalid (in_tvalid),
    .s_axis_tready (in_tready),
    .s_axis_tlast  (in_tlast),     // with beat {st['beats_in'] - 1} of each frame
    .m_axis_tdata  (out_tdata),    // [{wo - 1}:0]: logit j of the beat at [{fo['bits']}*j +: {fo['bits']}], two's complement, value = code * 2^-{fo['frac_bits']}; last beat: class in [{st['class_bits'] - 1}:0]
    .m_axis_tvalid (out_tvalid),
    .m_axis_tready (out_tready),   // tie high if the sink never stalls
    .m_axis_tlast  (out_tlast),    // with the frame's last beat (the class)
    .tlast_err     (kdhw_tlast_err)
);"""


def main(out: Path = RESULTS / "stream_waveform.md") -> None:
    import kdhw
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import input_codes, output_codes, qonnx_to_rtl, stream_in_words, unpack_stream_words
    from kdhw.util.runtime import set_torch_threads

    set_torch_threads()
    if shutil.which("iverilog") is None:
        raise SystemExit("iverilog not found")
    # the embedded default student (resource-aware, folded into its brevitas form), trained briefly
    cfg = kdhw.load_config({"distill": {"epochs": 5, "method": "none"}})
    data = kdhw.load_data(cfg)
    students = kdhw.distill_students(cfg, data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        x = students.inputs("test")
        onnx = kdhw.export_qonnx(students, work / "m.onnx")
        meta = qonnx_to_rtl(onnx, work / "rtl", mode="stream", **OPTS)
        row = x[:1]
        words = stream_in_words(meta, input_codes(meta, row))
        trace = simulate(work / "rtl", meta, words, work)
        ref = reference(load_qonnx(onnx), row)
        got = [int(r["m_axis_tdata"], 16) for r in trace if r["m_axis_tvalid"] == "1" and r["m_axis_tready"] == "1"]
        logits, cls = unpack_stream_words(meta, got)
        exact = bool(np.array_equal(logits[0], output_codes(meta, ref)[0]) and cls[0] == ref.argmax(1)[0])
        first_in = next(r["cycle"] for r in trace if r["s_axis_tvalid"] == "1" and r["s_axis_tready"] == "1")
        last_out = next(r["cycle"] for r in trace if r["m_axis_tvalid"] == "1" and r["m_axis_tready"] == "1"
                        and r["m_axis_tlast"] == "1")
        text = "\n".join([
            "# One frame through the stream core (Icarus Verilog trace)", "",
            f"Design: the default digits student (`{json.dumps(cfg.student['layers'])}`, resource-aware), `kdhw rtl --mode stream "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in OPTS.items()) + "`.", "",
            "```verilog", instantiation(meta), "```", "",
            "```", diagram(trace, words), "```", "",
            f"One column per rising clock edge (signals as sampled there; `*` = a beat moves: tvalid and tready both "
            f"high). `x0`..`x{len(words) - 1}` are the input beats, `y0`..`y{meta['stream']['logit_beats'] - 1}` the "
            f"logit beats and `c` the class beat. The source leaves one gap before `x4`; the sink holds "
            f"`m_axis_tready` low for two cycles when the first result is offered, and the core holds `y0` until "
            f"it is taken. First input beat to last output beat: {last_out - first_in} cycles here, "
            f"{meta['latency_cycles']} in rtl.json (no gaps, no stalls): the gap and the two stall cycles add "
            f"{last_out - first_in - meta['latency_cycles']}. "
            f"Output bit-exact with the QONNX reference: {exact}.", ""])
    from kdhw.util.atomic import write_text

    write_text(out, text)
    print(text)
    if not exact:
        raise SystemExit("the simulated frame differs from the reference")


if __name__ == "__main__":
    main()
