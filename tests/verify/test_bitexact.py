"""brevitas -> QONNX -> hls4ml C-sim is bit-exact (np.array_equal on every row), and the check can fail.

Each student is trained for a few epochs, exported, converted for io_parallel and io_stream, and compared
on its test split plus off-grid float inputs (rounding and saturation of the input quantizer).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from kdhw.verify.levels import verify_project

from kdhw.cli import main
from kdhw.hw.hls import build_hls_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def projects(qonnx_models, tmp_path_factory):
    """(kind, io_type) -> HLS project dir; built lazily and shared within the module."""
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("hls")

    def get(kind: str, io: str) -> Path:
        if (kind, io) not in cache:
            path, _ = qonnx_models[kind]
            out = root / f"{kind}_{io}"
            build_hls_project(path, out, part="xc7z020clg400-1", clock_period_ns=10.0, io_type=io,
                              compile_csim=False)
            cache[(kind, io)] = out
        return cache[(kind, io)]

    return get


@pytest.mark.parametrize("io", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("kind", ["mlp", "conv1d", "conv2d"])
def test_csim_bit_exact(kind: str, io: str, projects, qonnx_models) -> None:
    _, x = qonnx_models[kind]
    res = verify_project(projects(kind, io), x)
    assert res["levels"]["csim"] == {"rows": len(x), "exact_rows": len(x), "first_bad_row": None}
    layers = res["levels"]["csim_layers"]
    assert layers["rows"] == 32 and layers["exact_rows"] == 32
    assert res["levels"]["weights"]["consistent"]
    assert res["bit_exact"] is True and res["first_divergence"] is None


def _lsb_of(project: Path, array: str) -> float:
    """The LSB of a weight array's fixed-point type, read from the project's defines."""
    num = re.search(r"(\d+)", array).group(1)
    defs = (project / "firmware" / "defines.h").read_text()
    kind = "weight" if array.startswith("w") else "bias"
    m = re.search(rf"typedef ap_fixed<(\d+),(-?\d+)[^>]*> {kind}{num}_t;", defs)
    assert m, f"no typedef for {kind}{num}_t"
    return 2.0 ** -(int(m.group(1)) - int(m.group(2)))


def _bump_weight(path: Path, lsb: float, header: bool, index: int = 0) -> None:
    """Add one LSB to value ``index`` of a weight array (.h initialiser list or .txt)."""
    text = path.read_text()
    if header:
        head, body = text.split("#else", 1)
        lo, hi = body.index("{") + 1, body.index("}")
        vals = body[lo:hi].split(",")
        vals[index] = " " + repr(float(vals[index]) + lsb)
        path.write_text(head + "#else" + body[:lo] + ",".join(vals) + body[hi:])
    else:
        vals = text.strip().split(",")
        vals[index] = repr(float(vals[index]) + lsb)
        path.write_text(", ".join(vals) + "\n")


def _most_active_input(onnx_path: Path, x: np.ndarray) -> int:
    """Index of the last dense layer's most active input: a weight change there reaches the outputs."""
    from kdhw.hw.export import load_qonnx, reference_intermediates

    mw = load_qonnx(onnx_path)
    last = [n for n in mw.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    act = reference_intermediates(mw, x)[last.input[0]]
    return int(np.abs(act).mean(0).argmax())


def _arrays_of(project: Path, layer: str) -> tuple[str, str]:
    """(weight array, bias array) that the top function passes to ``layer``."""
    for line in (project / "firmware" / "myproject.cpp").read_text().splitlines():
        if line.rstrip().endswith(f"// {layer}"):
            m = re.search(r"\b(w\d+), (b\d+)\)", line)
            assert m, line
            return m.group(1), m.group(2)
    raise AssertionError(f"{layer} not found")


def _copy(project: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "proj"
    shutil.copytree(project, dst)
    return dst


def test_one_lsb_change_in_synthesised_weights_is_caught_and_named(projects, qonnx_models, tmp_path, capsys) -> None:
    _, x = qonnx_models["mlp"]
    proj = _copy(projects("mlp", "io_parallel"), tmp_path)
    np.save(tmp_path / "x.npy", x)
    assert main(["verify", str(proj), "--inputs", str(tmp_path / "x.npy")]) == 0
    # the second dense layer's weights: change one value by exactly one LSB of its type
    target = proj / "firmware" / "weights" / f"{_arrays_of(proj, 'Dense_MatMul_1')[0]}.h"  # [n_in, 10]
    idx = _most_active_input(qonnx_models["mlp"][0], x) * 10
    _bump_weight(target, _lsb_of(proj, target.stem), header=True, index=idx)
    _bump_weight(target.with_suffix(".txt"), _lsb_of(proj, target.stem), header=False, index=idx)
    capsys.readouterr()
    assert main(["verify", str(proj), "--inputs", str(tmp_path / "x.npy")]) == 1
    out = capsys.readouterr()
    assert "first diverging layer: Dense_MatMul_1" in out.out
    assert "first diverging layer Dense_MatMul_1" in out.err
    import json

    res = json.loads((proj / "verify.json").read_text())
    assert res["bit_exact"] is False and res["levels"]["csim"]["exact_rows"] < len(x)
    assert res["first_divergence"]["layer"] == "Dense_MatMul_1"


def test_header_and_txt_weights_disagreeing_is_caught(projects, qonnx_models, tmp_path) -> None:
    """hls4ml's own C-sim reads the .txt copy; synthesis reads the .h: an edit to one is a failure."""
    _, x = qonnx_models["conv2d"]
    proj = _copy(projects("conv2d", "io_parallel"), tmp_path)
    w = sorted((proj / "firmware" / "weights").glob("w*.txt"))[0]
    _bump_weight(w, _lsb_of(proj, w.stem), header=False)
    res = verify_project(proj, x)
    assert res["bit_exact"] is False
    assert res["levels"]["weights"]["h_vs_txt_mismatches"] == [{"array": w.stem, "index": 0}]
    # the C-sim itself is built from the headers, so it still matches the reference
    assert res["levels"]["csim"]["exact_rows"] == len(x)


def test_first_conv_layer_lsb_change_names_the_conv(projects, qonnx_models, tmp_path) -> None:
    _, x = qonnx_models["conv1d"]
    proj = _copy(projects("conv1d", "io_parallel"), tmp_path)
    w = proj / "firmware" / "weights" / f"{_arrays_of(proj, 'Conv1D_Conv_0')[1]}.h"
    _bump_weight(w, _lsb_of(proj, w.stem), header=True)
    res = verify_project(proj, x)
    # one bias LSB rarely survives the 4-bit ReLU quantizer to the outputs, but the layer trace sees it
    assert res["bit_exact"] is False
    assert res["levels"]["csim_layers"]["exact_rows"] < res["levels"]["csim_layers"]["rows"]
    assert res["first_divergence"]["layer"] == "Conv1D_Conv_0"
