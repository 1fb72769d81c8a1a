"""``kdhw select``: a two-student system with its selector trained, every part exported to QONNX, turned into
an hls4ml project and verified bit-exact, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kdhw.cli import main

STUDENTS = [
    {"layers": [{"type": "dense", "units": 4}, {"type": "relu"}, {"type": "dense", "units": 10}], "weight_bits": 3},
    {"layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]},
]
CFG = {"teacher": {"arch": "mlp", "hidden": 16, "epochs": 2, "patience": 2},
       "distill": {"method": "hinton", "epochs": 3},
       "selector": {"students": STUDENTS, "hidden": 6, "epochs": 3},
       "verify": {"random_inputs": 50},
       "rtl": {"sim_rows": 200}}


def _cfg(tmp_path: Path, raw: dict) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


@pytest.mark.slow
def test_select_trains_exports_and_verifies_every_part(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sys"
    assert main(["select", _cfg(tmp_path, CFG), "--out", str(out), "--no-progress"]) == 0
    assert "system test accuracy" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert names == {"student_0.pt", "student_1.pt", "selector.pt", "selector.json", "selector.md", "selector.png",
                     "selector", "student_0", "student_1"}
    assert (out / "selector.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((out / "selector.json").read_text())
    assert set(rep["parts"]) == {"selector", "student_0", "student_1"} and rep["bit_exact"] is True
    test_rows = rep["system"]["test_rows"]
    for name, part in rep["parts"].items():
        assert part["bit_exact"] is True and part["rows"] == test_rows + 50  # test split + off-grid inputs
        lv = part["levels"]
        assert lv["brevitas"]["exact_rows"] == lv["csim"]["exact_rows"] == lv["rtl"]["exact_rows"] == part["rows"]
        assert lv["rtl_sim"]["rows"] == lv["rtl_sim"]["exact_rows"] == 200 and lv["rtl_sim"]["latency_ok"]
        assert lv["weights"]["consistent"] and json.loads((out / name / "verify.json").read_text())["bit_exact"]
    # the per-student figures the plot shows, consistent with the students' own rows
    assert [s["params"] for s in rep["students"]] == [64 * 4 + 4 + 4 * 10 + 10, 64 * 8 + 8 + 8 * 10 + 10]
    assert sum(s["picked_fraction"] for s in rep["students"]) == pytest.approx(1.0)
    md = (out / "selector.md").read_text()
    assert "![" in md and "(selector.png)" in md and "| `student_1/` |" in md
    # each checkpoint is a plain student for `kdhw export`; a part folder holds what `kdhw verify` reads
    assert main(["export", str(out / "student_1.pt"), "--out", str(tmp_path / "s1.onnx")]) == 0
    assert {p.name for p in (out / "selector").iterdir()} == {"student.pt", "student.qonnx.onnx", "hls", "rtl",
                                                              "verify.json", "verify_inputs.npy", "verify_labels.npy"}
    # a student part's fidelity figures are measured on the labelled test rows; the selector's outputs are not
    # classes, so its part has none
    s1 = json.loads((out / "student_1" / "verify.json").read_text())
    assert s1["fidelity_rows"] == test_rows and s1["student_accuracy"] == rep["students"][1]["test_acc"]
    assert json.loads((out / "selector" / "verify.json").read_text())["fidelity_rows"] == 0


@pytest.mark.slow
def test_select_exits_1_naming_a_part_whose_synthesised_weights_changed(tmp_path: Path, monkeypatch, capsys) -> None:
    import re

    import kdhw.hw.hls

    real = kdhw.hw.hls.build_hls_project

    def build_then_edit_one_header_weight(onnx_path, out, **kw):  # a real project, then one value edited
        res = real(onnx_path, out, **kw)
        if Path(out).parent.name == "student_1":
            h = sorted((Path(out) / "firmware" / "weights").glob("w*.h"))[0]
            text = h.read_text()
            h.write_text(re.sub(r"\{\s*(-?[0-9.e+-]+)", lambda m: "{" + repr(float(m.group(1)) + 0.5), text, count=1))
        return res

    monkeypatch.setattr(kdhw.hw.hls, "build_hls_project", build_then_edit_one_header_weight)
    cfg = {**CFG, "rtl": {"enabled": False}, "verify": {"random_inputs": 10}}
    out = tmp_path / "sys"
    assert main(["select", _cfg(tmp_path, cfg), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"kdhw select: error: not bit-exact: student_1 (see {out}/<part>/verify.json)"
    rep = json.loads((out / "selector.json").read_text())  # the output is complete, for inspection
    assert rep["bit_exact"] is False and rep["parts"]["student_0"]["bit_exact"] is True
    assert rep["parts"]["student_1"]["levels"]["weights"]["consistent"] is False


def test_select_bad_config_is_one_line_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sys"
    rc = main(["select", _cfg(tmp_path, {**CFG, "selector": {"students": STUDENTS[:1]}}), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "selector.students needs at least 2 student specs, got 1" in err and not out.exists()
    bad = [STUDENTS[0], {"layers": [{"type": "dense", "units": 7}]}]
    rc = main(["select", _cfg(tmp_path, {**CFG, "selector": {"students": bad}}), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "selector.students[1]: the last dense layer has 7 units" in err and not out.exists()
