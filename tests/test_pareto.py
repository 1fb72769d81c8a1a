"""``kdhw pareto`` end to end on a tiny grid: points trained, synthesized, front verified bit-exact, a board
picked, an impossible board refused with the smallest point named, resume, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kdhw.cli import main

pytestmark = pytest.mark.slow

CFG = {
    "teacher": {"epochs": 2, "patience": 2},
    "student": {"input": {"bits": 5, "int_bits": 1, "signed": False},
                "layers": [{"type": "dense", "units": 6}, {"type": "relu"}, {"type": "dense", "units": 10}]},
    "distill": {"epochs": 3},
    "pareto": {"betas": [0.001], "epochs": 3, "verify_random_inputs": 40, "sim_rows": 10},
}


@pytest.fixture()
def boards_dir(tmp_path, monkeypatch):
    """The catalog plus a Xilinx board far too small for any student (fails without extra synthesis)."""
    src = Path(__file__).resolve().parents[1] / "boards"
    d = tmp_path / "boards"
    shutil.copytree(src, d)
    tiny = yaml.safe_load((d / "pynq-z2.yaml").read_text())
    tiny.update(name="tiny", lut=50, ff=100)
    (d / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.setenv("KDHW_BOARDS_DIR", str(d))
    return d


def test_pareto_end_to_end(tmp_path, boards_dir, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "out"
    rc = main(["pareto", str(cfg), "--out", str(out), "--board", "pynq-z2", "--board", "tiny", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("kdhw pareto: error: board tiny: no point of the front fits (50 LUT")
    assert "the smallest point found is s0_b0.001_" in err[0] and " LUT / " in err[0]
    res = json.loads((out / "pareto.json").read_text())
    pts = {p["id"]: p for p in res["points"]}
    assert len(pts) == 2 and {p["kind"] for p in pts.values()} == {"scratch", "kd"}
    assert all(p["lut"] > 0 and p["spec"]["layers"][0]["weight_frac_bits"] is not None for p in pts.values())
    front = [pts[i] for i in res["front"]]
    assert front and all(p["pareto"] and p["bit_exact"] is True for p in front)
    assert all(p["verify"]["levels"]["csim"]["exact_rows"] == p["verify"]["rows"] for p in front)
    assert all((out / p["dir"] / "hls" / "kdhw_hls.json").is_file() for p in front)
    pynq = next(b for b in res["boards"] if b["board"] == "pynq-z2")
    best = max(front, key=lambda p: (p["val_acc"], -p["lut"]))
    assert pynq["pick"] == best["id"]
    assert res["pairs"][0]["scratch"]["id"] != res["pairs"][0]["kd"]["id"]
    for f in ("pareto.md", "pareto.png"):
        assert (out / f).stat().st_size > 0
    # resume: nothing is trained or verified again, same result; a board that fits exits 0
    rc = main(["pareto", str(cfg), "--out", str(out), "--board", "pynq-z2", "--no-progress"])
    assert rc == 0
    res2 = json.loads((out / "pareto.json").read_text())
    assert res2["grid"]["executed"] == 0 and res2["grid"]["resumed"] == 2
    assert [p["test_acc"] for p in res2["points"]] == [p["test_acc"] for p in res["points"]]


def test_pareto_bad_input(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o"), "--board", "nosuchboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown board 'nosuchboard'; known:" in err[0]
    assert not (tmp_path / "o").exists()
    cfg.write_text(yaml.safe_dump({**CFG, "pareto": {"betas": [-1]}}))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pareto.betas must be a non-empty list of numbers >= 0" in err[0]
    cfg.write_text(yaml.safe_dump({**CFG, "pareto": {"betas": [1e-3], "granularity": "bit"}}))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pareto.granularity = 'bit' is not allowed; choose one of: weight, channel" in err[0]


def test_run_with_auto_student(tmp_path, capsys) -> None:
    """``student: {auto: {board: B}}``: kdhw run trains the grid, exports the picked front point like any run
    student (bit-exact), and says which point and why."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "student": {**CFG["student"], "auto": {"board": "pynq-z2"}},
                                   "pareto": {**CFG["pareto"], "kd": False},
                                   "verify": {"random_inputs": 40}, "rtl": {"sim_rows": 10},
                                   "report": {"boards": []}}))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["verify"]["bit_exact"] is True
    assert rep["auto"]["board"] == "pynq-z2" and rep["auto"]["point"] in rep["auto"]["front"]
    assert rep["chosen"]["reason"].startswith("pareto point ")
    assert rep["auto"]["spec"]["layers"][0]["weight_frac_bits"] is not None
