"""End to end: `kdhw run` on a short config, and the same pipeline driven verb by verb."""

from __future__ import annotations

import json
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


def test_run_short_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(yaml.safe_dump(SHORT))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    for f in ("student.qonnx.onnx", "verify.json", "report.json", "report.md", "training.png",
              "hls/build_prj.tcl", "hls/firmware/myproject.cpp", "teacher.pt", "student.pt"):
        assert (out / f).is_file(), f
    ver = json.loads((out / "verify.json").read_text())
    assert ver["bit_exact"] is True
    assert ver["levels"]["csim"]["rows"] == 450 + 300 == ver["levels"]["csim"]["exact_rows"]
    assert ver["levels"]["brevitas"]["exact_rows"] == 750
    assert 0.0 < ver["teacher_agreement"] <= 1.0 and ver["first_divergence"] is None
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["students"]) == {"scratch", "kd"} and rep["chosen"]["arm"] in ("scratch", "kd")
    assert rep["teacher"]["test_acc"] > 0.8 and rep["student"]["params"] == 610
    assert "| student scratch |" in (out / "report.md").read_text()
    # the run dir verifies again by itself, teacher agreement included
    capsys.readouterr()
    assert main(["verify", str(out), "--inputs", str(out / "verify_inputs.npy")]) == 0
    again = json.loads((out / "verify.json").read_text())
    assert again["bit_exact"] and again["teacher_agreement"] is not None


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
