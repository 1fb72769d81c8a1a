"""hls4ml testbench vectors (tb_data/) and the VivadoAccelerator backend.

The verified rows are written as hls4ml's testbench reads them, with the QONNX reference's dequantized outputs
as the expected predictions; hls4ml's own myproject_test.cpp, compiled with g++ against the project's
firmware (weights from the .txt files, as Vivado HLS csim_design loads them), must reproduce every row
exactly, and a one-LSB change in one expected value must be caught.  The VivadoAccelerator project (AXI4-Stream
wrapper, block design Tcl, PYNQ driver) must still verify bit-exact through its wrapper.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdhw.cli import main
from kdhw.hw.hls import (
    TB_EXPECTED,
    TB_INPUTS,
    build_hls_project,
    compare_tb_results,
    read_meta,
    run_testbench,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, np.ndarray, np.ndarray, Path]:
    """(model, QONNX path, verification rows = 60 test rows + 40 off-grid rows, their labels, X.npy)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import off_grid_inputs, trained_student

    from kdhw.hw.export import export_qonnx
    from kdhw.train.distill import student_input

    m, data, spec = trained_student("mlp", epochs=2)
    x = student_input(data.x_test, spec)
    d = tmp_path_factory.mktemp("vectors model")
    path = export_qonnx(m, x.shape[1:], d / "mlp.onnx")
    xv = np.concatenate([x[:60], off_grid_inputs(x.shape[1:], 40, signed=False)]).astype(np.float32)
    np.save(d / "x.npy", xv)
    return m, path, xv, np.asarray(data.y_test[:60]), d / "x.npy"


@pytest.fixture(scope="module")
def projects(student: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Vitis io_parallel project (API) and a VivadoAccelerator io_stream project for pynq-z2 (CLI, C-sim
    compiled by hls4ml's own build_lib.sh)."""
    _, path, xv, _, xnpy = student
    d = tmp_path_factory.mktemp("vectors hls")
    build_hls_project(path, d / "vitis", part="xc7z020clg400-1", clock_period_ns=10.0, compile_csim=False,
                      tb_inputs=xv, tb_source="test rows")
    assert main(["hls", str(path), "--backend", "VivadoAccelerator", "--board", "pynq-z2", "--io-type", "io_stream",
                 "--inputs", str(xnpy), "--out", str(d / "accel")]) == 0
    return {"vitis": d / "vitis", "accel": d / "accel"}


def _dat(p: Path) -> list[list[float]]:
    return [[float(v) for v in ln.split(" ") if v] for ln in p.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["vitis", "accel"])
def test_tb_data_holds_the_rows_and_the_reference(kind: str, projects: dict[str, Path], student: Any) -> None:
    from kdhw.hw.export import load_qonnx, reference

    _, path, xv, _, _ = student
    p = projects[kind]
    meta = read_meta(p)
    assert meta["tb_data"]["rows"] == len(xv) and meta["tb_data"]["inputs"] == TB_INPUTS
    text = (p / TB_INPUTS).read_text()
    assert text.count("\n") == len(xv) and all(ln.endswith(" ") for ln in text.splitlines())  # hls4ml's layout
    assert np.array_equal(np.array(_dat(p / TB_INPUTS), dtype=np.float32), xv.reshape(len(xv), -1))
    ref = reference(load_qonnx(path), xv)
    assert np.array_equal(np.array(_dat(p / TB_EXPECTED)), ref.astype(np.float64))


@pytest.mark.parametrize("kind", ["vitis", "accel"])
def test_hls4ml_testbench_matches_every_row_and_a_one_lsb_change_is_caught(kind: str, projects: dict[str, Path],
                                                                          student: Any, tmp_path: Path) -> None:
    p = projects[kind]
    n = len(student[2])
    res = run_testbench(p, results_to=tmp_path / "csim_results.log")
    assert res == {**res, "rows": n, "result_rows": n, "exact_rows": n, "first_bad_row": None, "ok": True}
    # one expected value moved by one LSB of the output type: exactly that row is reported
    prec = read_meta(p)["layers"][-1]["precision"]
    w, i = (int(v) for v in re.match(r"ap_u?fixed<(\d+),\s*(-?\d+)", prec).groups())
    lsb = 2.0 ** -(w - i)
    bad = tmp_path / "project"
    shutil.copytree(p, bad)
    lines = (bad / TB_EXPECTED).read_text().splitlines(keepends=True)
    row, col = 37, 4
    vals = lines[row].split(" ")
    vals[col] = repr(float(vals[col]) + lsb)
    lines[row] = " ".join(vals)
    (bad / TB_EXPECTED).write_text("".join(lines))
    res = compare_tb_results(bad, tmp_path / "csim_results.log")
    assert (res["ok"], res["exact_rows"], res["first_bad_row"]) == (False, n - 1, row)
    # and a results file that lost its last row is not a pass
    log = (tmp_path / "csim_results.log").read_text()
    if kind == "vitis":  # a row of values per line
        short_log = log[:log.rstrip("\n").rfind("\n") + 1]
    else:  # a `{ data: V, last: L }` line per value
        starts = [m.start() for m in re.finditer(r"\{ data:", log)]
        short_log = log[:starts[(n - 1) * read_meta(p)["n_outputs"]]]
    (tmp_path / "short.log").write_text(short_log)
    short = compare_tb_results(p, tmp_path / "short.log")
    assert short["ok"] is False and short["first_bad_row"] == n - 1


def test_accelerator_project_verifies_bit_exact_through_its_wrapper(projects: dict[str, Path], student: Any,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = projects["accel"]
    meta = read_meta(p)
    assert meta["backend"] == "VivadoAccelerator" and meta["accelerator"]["board"] == "pynq-z2"
    assert meta["accelerator"]["input_type"] == "float" and meta["accelerator"]["output_type"] == "float"
    for f in ("design.tcl", "project.tcl", "axi_stream_driver.py", "firmware/myproject_axi.cpp", "build_prj.tcl"):
        assert (p / f).is_file(), f
    assert "xc7z020clg400-1" in (p / "design.tcl").read_text()
    assert "processing_system7" in (p / "design.tcl").read_text() and "axi_dma" in (p / "design.tcl").read_text()
    # the wrapper is compiled into the C-sim bridge, once (hls4ml's build_lib.sh no longer links it separately)
    assert '#include "firmware/myproject_axi.cpp"' in (p / "myproject_bridge.cpp").read_text()
    assert "_axi.cpp" not in (p / "build_lib.sh").read_text()
    assert list((p / "firmware").glob("myproject-*.so")), "hls4ml's own C-sim library was not built"
    assert main(["verify", str(p), "--inputs", str(student[4])]) == 0
    out = capsys.readouterr().out
    assert f"csim        {len(student[2])}/{len(student[2])} rows exact" in out and "bit_exact=True" in out


def test_accelerator_boards_and_no_vectors(student: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, path, *_ = student
    # boards hls4ml's VivadoAccelerator has no design for: one line, exit 2, nothing written
    for board in ("kv260", "icebreaker"):
        assert main(["hls", str(path), "--backend", "VivadoAccelerator", "--board", board,
                     "--out", str(tmp_path / board)]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "VivadoAccelerator" in err[0] and not (tmp_path / board).exists()
    # zcu102: its own part in the block design; without inputs, no vectors (and kdhw_hls.json says so)
    meta = build_hls_project(path, tmp_path / "zcu", part="xczu9eg-ffvb1156-2-e", clock_period_ns=5.0,
                             backend="VivadoAccelerator", board="zcu102", compile_csim=False)
    assert meta["tb_data"] is None and not list((tmp_path / "zcu" / "tb_data").glob("*.dat"))
    text = (tmp_path / "zcu" / "design.tcl").read_text()
    assert "xczu9eg-ffvb1156-2-e" in text and "xc7z020" not in text
    with pytest.raises(Exception, match="no tb_data/tb_input_features.dat"):
        run_testbench(tmp_path / "zcu")


def test_run_writes_its_verified_rows_as_the_testbench_vectors(student: Any, tmp_path: Path) -> None:
    """What `kdhw run` does after training (kdhw.flows.to_hardware): the rows it verifies are the vectors."""
    from kdhw.boards import load_board
    from kdhw.config import validate
    from kdhw.flows.to_hardware import VERIFY_INPUTS, student_to_hardware
    from kdhw.hw.export import load_qonnx, reference

    model, _, xv, y, _ = student
    cfg = validate({"rtl": {"enabled": False}, "verify": {"random_inputs": 25}})
    out = tmp_path / "run"
    out.mkdir()
    hw = student_to_hardware(model, tuple(xv.shape[1:]), out, cfg, load_board("pynq-z2"), xv[:60], y_test=y,
                             log=lambda *_: None)
    assert hw.bit_exact
    rows = np.load(out / VERIFY_INPUTS)
    assert len(rows) == 85 and read_meta(out / "hls")["tb_data"]["rows"] == 85
    assert np.array_equal(np.array(_dat(out / "hls" / TB_INPUTS), dtype=np.float32), rows.reshape(len(rows), -1))
    ref = reference(load_qonnx(out / "student.qonnx.onnx"), rows)
    assert np.array_equal(np.array(_dat(out / "hls" / TB_EXPECTED)), ref.astype(np.float64))
