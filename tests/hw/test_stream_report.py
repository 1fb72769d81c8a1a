"""Reports that describe the generated form, and fitting a board (``rtl.mode: auto``).

Pins come from the real ports of the top (checked against the Verilog text itself) and a stream top fits
every catalog board; latency and throughput are given in ns and frames/s; the estimate of a folded design
is priced from its inventory and stays within a stated tolerance of yosys on a small design, DSP count
exact; ``auto`` takes the least folded candidate that fits, says why it rejected the others, refuses in
one line when nothing fits, and confirms its choice with yosys + nextpnr (one tiny design).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_board

from kdhw.boards import list_boards, load_board
from kdhw.cli import main
from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.hw.estimate import estimate_design
from kdhw.hw.report import hardware_report, port_pins
from kdhw.hw.rtl import qonnx_to_rtl

ROOT = Path(__file__).resolve().parents[2]
TINY = {"input": {"bits": 4, "int_bits": 1, "signed": True}, "output": {"bits": 6}, "weight_bits": 3,
        "bias_bits": 8, "act_bits": 3,
        "layers": [{"type": "dense", "units": 4}, {"type": "relu"}, {"type": "dense", "units": 10}]}


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def _verilog_port_bits(top_v: Path) -> int:
    """Sum of the port widths declared in a module header (independent of rtl.json)."""
    head = top_v.read_text().split("module kdhw_top (", 1)[1].split(");", 1)[0]
    total = 0
    for m in re.finditer(r"^\s*(input|output)\s*(?:reg\s*)?(?:\[(\d+):(\d+)\])?\s*\w+", head, re.M):
        total += int(m.group(2)) - int(m.group(3)) + 1 if m.group(2) else 1
    return total


@pytest.fixture(scope="module")
def forms(qonnx_models, tmp_path_factory) -> dict[str, Path]:
    """The MLP and the Conv1D student of conftest, each as a stream and a parallel design (kdhw rtl layout)."""
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for kind in ("mlp", "conv1d"):
        path, _ = qonnx_models[kind]
        for mode in ("stream", "parallel"):
            d = root / f"{kind}_{mode}"
            qonnx_to_rtl(path, d, mode=mode)
            out[f"{kind}_{mode}"] = d
    return out


def test_pins_come_from_the_real_ports_and_a_stream_top_fits_every_catalog_board(forms) -> None:
    boards = list_boards()
    for name, d in forms.items():
        rep = hardware_report(d, boards, d / "model.qonnx.onnx", d, synth=False, log=lambda *a: None)
        need = _verilog_port_bits(d / "src" / "kdhw_top.v")
        meta = json.loads((d / "rtl.json").read_text())
        assert rep["ports"] == port_pins(meta) and sum(rep["ports"].values()) == need
        for e in rep["boards"]:
            io = e["io"]
            assert io["pins_needed"] == need and io["fits"] == (need <= e["io"]["pins"])
            assert io["pins_needed_parallel"] == meta["input_bits_total"] + meta["output_bits_total"] + 1
            if name.endswith("stream"):
                assert io["form"] == "stream" and io["fits"], (name, e["board"], need)
    # MLP: 1 element of 8 bits in, 1 logit of 8 bits out, + clk, aresetn, 2 x (tvalid, tready, tlast), tlast_err
    assert _verilog_port_bits(forms["mlp_stream"] / "src" / "kdhw_top.v") == 8 + 8 + 9
    assert _verilog_port_bits(forms["mlp_parallel"] / "src" / "kdhw_top.v") == 64 * 8 + 10 * 8 + 1
    md = (forms["mlp_parallel"] / "hw_report.md").read_text()
    assert "| 593 / 39 (**no**) |" in md and "--mode stream" in md


def test_latency_and_throughput_in_ns_and_frames_per_s(forms) -> None:
    from kdhw.flows.run_report import hardware_section
    from kdhw.flows.to_hardware import hardware_summary

    d = forms["conv1d_stream"]
    meta = json.loads((d / "rtl.json").read_text())
    rep = hardware_report(d, [load_board("icebreaker"), load_board("pynq-z2")], d / "model.qonnx.onnx", d,
                          synth=False, log=lambda *a: None)
    for e in rep["boards"]:
        lat = e["latency"]
        assert lat["cycles"] == meta["latency_cycles"] and lat["initiation_interval"] == meta["initiation_interval"]
        assert lat["ns_at_board_clock"] == pytest.approx(meta["latency_cycles"] * 1000 / e["clock_mhz"])
        assert lat["frames_per_s_at_board_clock"] == pytest.approx(e["clock_mhz"] * 1e6 / meta["initiation_interval"])
        assert lat["fmax_mhz"] is None and lat["frames_per_s_at_fmax"] is None  # no synthesis run
    ice = rep["boards"][0]["latency"]
    md = (d / "hw_report.md").read_text()
    assert f"{ice['frames_per_s_at_board_clock']:,.0f} frames/s at the board's 12 MHz" in md
    # the run's report.md shows the same figures
    summ = hardware_summary(rep)
    text = hardware_section({"hardware": summ, "hardware_report": "hw_report.md"})
    row = next(ln for ln in text if ln.startswith("| icebreaker |"))
    assert f"{meta['latency_cycles']} / {ice['ns_at_board_clock']:,.1f}" in row
    assert f"{meta['initiation_interval']} / {ice['frames_per_s_at_board_clock']:,.0f} / —" in row


def test_dsp_use_is_named_and_counted_against_the_board(forms, tmp_path) -> None:
    """The folded dense of the Conv1D student has one MAC lane x 10 outputs: 10 multipliers, DSP blocks on
    Xilinx/ECP5, logic on iCE40 (yosys without -dsp); a board with fewer DSPs does not fit."""
    d = forms["conv1d_stream"]
    meta = json.loads((d / "rtl.json").read_text())
    onnx = d / "model.qonnx.onnx"
    assert estimate_design(onnx, meta, load_board("pynq-z2"))["dsp"] == 10
    ice = estimate_design(onnx, meta, load_board("icebreaker"))
    assert ice["dsp"] == 0 and ice["lut_unit"] == "LUT4"
    assert estimate_design(onnx, json.loads((forms["conv1d_parallel"] / "rtl.json").read_text()),
                           load_board("pynq-z2"))["dsp"] == 0
    small = load_board("pynq-z2").__class__(**{**load_board("pynq-z2").__dict__, "name": "small", "dsp": 4})
    assert not estimate_design(onnx, meta, small)["fits"]
    rep = hardware_report(d, [load_board("pynq-z2"), load_board("icebreaker")], onnx, d, synth=False,
                          log=lambda *a: None)
    notes = (d / "hw_report.md").read_text()
    assert "MAC lanes of the folded dense layer u4 (1 lane(s) x 10 outputs: 10 multiplier(s)" in notes
    assert "builds them from logic cells" in notes
    assert rep["boards"][0]["used"]["dsp"] == 10 and rep["boards"][0]["utilization_pct"]["dsp"] == pytest.approx(
        100 * 10 / 220)


@pytest.mark.slow
def test_stream_estimate_within_25_percent_of_yosys_on_a_small_design(forms, tmp_path) -> None:
    """yosys synth_xilinx of the MLP's stream form (folded: one MAC lane x 12, a 10-output unrolled dense):
    LUT and FF within 25 % of the estimate (its out-of-sample sMAPE is in the README), DSP48 count exact."""
    from kdhw.hw.synth import synthesize

    d = forms["mlp_stream"]
    meta = json.loads((d / "rtl.json").read_text())
    board = load_board("pynq-z2")
    est = estimate_design(d / "model.qonnx.onnx", meta, board)
    syn = synthesize(d, board, tmp_path / "syn")
    assert syn["ok"], syn.get("error")
    assert syn["dsp"] == est["dsp"] == 12
    assert abs(est["lut"] - syn["lut"]) <= 0.25 * syn["lut"], (est["lut"], syn["lut"])
    assert abs(est["ff"] - syn["ff"]) <= 0.25 * syn["ff"], (est["ff"], syn["ff"])
    # LUT-RAM (the units' FIFOs) is counted as LUTs, as Vivado's "Slice LUTs" does
    assert syn["lut_memory"] > 0


def test_auto_takes_the_least_folded_form_that_fits_and_says_why(qonnx_models, tmp_path, capsys) -> None:
    path, _ = qonnx_models["conv1d"]
    # on the estimate alone (no synthesis) a form is taken only with the estimate's error band added
    # (kdhw.hw.board_fit.FIT_BAND): the ULX3S has the room, the UP5K would be a blind guess for this conv
    d = tmp_path / "ecp5"
    assert main(["rtl", str(path), "--out", str(d), "--mode", "auto", "--board", "ulx3s-85f", "--no-synth"]) == 0
    meta = json.loads((d / "rtl.json").read_text())
    fit = meta["fit"]
    cands = fit["candidates"]
    assert meta["mode"] == "stream" and fit["board"] == "ulx3s-85f" and "no synthesis" in fit["method"]
    assert cands[0]["label"] == "parallel" and cands[0]["verdict"] == "rejected"
    assert cands[0]["why"] == f"pins {cands[0]['pins']} > 205" and cands[0]["pins"] == 40 * 8 + 10 * 8 + 1
    chosen = next(i for i, c in enumerate(cands) if c["verdict"] == "chosen")
    assert cands[chosen]["label"] == fit["chosen"] and cands[chosen]["estimate"]["lut"] * 1.23 <= 83640
    assert all(c["verdict"] == "rejected" and c["why"] for c in cands[:chosen])
    assert all(c["verdict"] == "not tried" for c in cands[chosen + 1:])
    # least folded first: the II never decreases along the ladder; no untried candidate is faster
    iis = [c["initiation_interval"] for c in cands]
    assert iis == sorted(iis) and meta["initiation_interval"] == cands[chosen]["initiation_interval"]
    # a board with the pins for every input and output at once takes the parallel form
    assert main(["rtl", str(path), "--out", str(tmp_path / "big"), "--mode", "auto", "--board", "vcu118",
                 "--no-synth"]) == 0
    assert json.loads((tmp_path / "big" / "rtl.json").read_text())["mode"] == "parallel"
    # the report shows the decision
    assert main(["report", str(d), "--board", "ulx3s-85f", "--no-synth"]) == 0
    md = (d / "hw_report.md").read_text()
    assert "## Fitting the board (rtl.mode: auto)" in md and f"chose **{fit['chosen']}**" in md
    assert f"rejected: pins {cands[0]['pins']} > 205" in md
    # the UP5K on the estimate alone: no stream form is picked blind; a fold form (weights in block RAM, its own
    # error band) is, after every stream rung was rejected
    assert main(["rtl", str(path), "--out", str(tmp_path / "ice"), "--mode", "auto", "--board", "icebreaker",
                 "--no-synth"]) == 0
    fit = json.loads((tmp_path / "ice" / "rtl.json").read_text())["fit"]
    assert fit["chosen"].startswith("fold pe=")
    cands = fit["candidates"]
    chosen = next(i for i, c in enumerate(cands) if c["verdict"] == "chosen")
    assert all(c["verdict"] == "rejected" for c in cands[:chosen])
    assert any(c["label"].startswith("stream p=1") and "error band" in c["why"] for c in cands[:chosen])
    assert main(["report", str(tmp_path / "ice"), "--board", "icebreaker", "--no-synth"]) == 0
    md = (tmp_path / "ice" / "hw_report.md").read_text()
    assert f"chose **{fit['chosen']}**" in md and " / 30 EBR |" in md and "est. LUT / FF / DSP / BRAM" in md
    capsys.readouterr()


def test_auto_refusals_are_one_line_and_exit_2(qonnx_models, tmp_path, capsys) -> None:
    path, _ = qonnx_models["conv1d"]
    boards = tmp_path / "boards"
    boards.mkdir()
    write_tiny_board(boards)
    env = {**os.environ, "KDHW_BOARDS_DIR": str(boards), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "kdhw.cli", "rtl", str(path), "--out", str(tmp_path / "x"), "--mode",
                        "auto", "--board", "tiny-fpga", "--no-synth"], capture_output=True, text=True, env=env,
                       timeout=300)
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[fit]")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "no RTL form fits board tiny-fpga (100 LUT, 100 FF, 0 DSP, 21 pins, 12 MHz)" in err[0]
    # the smallest candidate is the most folded fold rung, with its block RAM
    assert "the smallest candidate, fold pe=1 simd=1 (weights in block RAM)" in err[0] and "BRAM (estimate)" in err[0]
    assert not (tmp_path / "x").exists()
    cases = [
        (["--mode", "auto", "--board", "no-such-board", "--no-synth"], "unknown board 'no-such-board'"),
        (["--mode", "auto"], "--mode auto needs --board B"),
        (["--mode", "auto", "--board", "icebreaker", "--parallelism", "2"], "--parallelism is what --mode auto chooses"),
        (["--mode", "stream", "--board", "icebreaker"], "--board applies to --mode auto"),
    ]
    for extra, msg in cases:
        assert main(["rtl", str(path), "--out", str(tmp_path / "y")] + extra) == 2, extra
        assert msg in _err_line(capsys), extra
    for rtl, msg in [({"mode": "auto", "parallelism": 2}, "c.yaml: rtl.parallelism is what rtl.mode: auto chooses"),
                     ({"mode": "stream", "board": "icebreaker"}, "c.yaml: rtl.board applies to rtl.mode: auto")]:
        with pytest.raises(InputError, match=re.escape(msg)):
            validate({"rtl": rtl}, "c.yaml")
    assert validate({"rtl": {"mode": "auto", "board": "icebreaker", "output": "class"}}).rtl["board"] == "icebreaker"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A really trained tiny student (40 inputs of 4 bits, 4 hidden units): designs of a few hundred cells."""
    from kdhw.hw.export import export_qonnx
    from kdhw.train.data import load_dataset
    from kdhw.train.distill import student_input, train_arm

    cfg = validate({"data": {"dataset": "mnist1d_lookalike", "mnist1d_samples": 1200}, "student": TINY,
                    "distill": {"epochs": 3, "method": "none"}})
    data = load_dataset(cfg.data)
    arm = train_arm("scratch", cfg.student, cfg.distill, data, None, "none", progress=False)
    return export_qonnx(arm.model, student_input(data.x_test, cfg.student).shape[1:],
                        tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.mark.slow
def test_auto_confirms_its_choice_with_nextpnr_and_the_report_reuses_it(tiny_onnx, tmp_path) -> None:
    """icebreaker: the parallel form has too few pins; the first stream candidate is placed and routed by
    nextpnr, meets 12 MHz and is chosen; kdhw report shows that run instead of synthesizing again."""
    from kdhw.hw.board_fit import fit_board

    d = tmp_path / "rtl"
    meta = fit_board(tiny_onnx, d, load_board("icebreaker"), log=lambda *a: None)
    fit = meta["fit"]
    syn = fit["synthesis"]
    assert meta["mode"] == "stream" and fit["clock_checked"] and fit["candidates"][0]["why"].startswith("pins")
    chosen = next(c for c in fit["candidates"] if c["verdict"] == "chosen")
    assert chosen["synthesis"]["ok"] and syn["fmax_mhz"] >= 12 and syn["lut"] <= 5280
    assert [c["verdict"] for c in fit["candidates"]].count("rejected") == 1  # only the parallel form
    assert (d / syn["logs"] / "pnr.json").is_file()
    rep = hardware_report(d, [load_board("icebreaker")], d / "model.qonnx.onnx", d, log=lambda *a: None)
    e = rep["boards"][0]
    assert e["synthesis"]["reused_from"] and e["synthesis"]["lut"] == syn["lut"]
    assert e["latency"]["frames_per_s_at_fmax"] == pytest.approx(syn["fmax_mhz"] * 1e6 / meta["initiation_interval"])
    assert not (d / "hw_synth" / "ice40_up5k-sg48").exists()
    shutil.rmtree(d)


def test_a_run_with_rtl_mode_auto_checks_its_board_before_any_training(monkeypatch) -> None:
    """``kdhw run`` fits rtl.board (default hls.board): an unknown board or a missing tool for it fails first."""
    from kdhw.errors import ToolMissing
    from kdhw.flows.to_hardware import check_hardware_tools
    from kdhw.hw import synth

    with pytest.raises(InputError, match="unknown board 'no-such'"):
        check_hardware_tools(validate({"rtl": {"mode": "auto", "board": "no-such"}}), [])
    monkeypatch.setattr(synth, "_find", lambda *names: None if any("nextpnr" in n for n in names) else ["yosys"])
    with pytest.raises(ToolMissing, match="nextpnr-ice40 not found"):
        check_hardware_tools(validate({"rtl": {"mode": "auto", "board": "icebreaker"}}), [])
    check_hardware_tools(validate({"rtl": {"mode": "auto"}}), [])  # pynq-z2 (hls.board): yosys only
