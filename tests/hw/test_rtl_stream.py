"""Stream-mode RTL without a simulator: the stream emulator (every unit's da4ml datapath, the line-buffer tap
tables, the MAC ROM) is bit-exact with the QONNX reference; rtl.json tells the truth about ports, beats,
folding and time; config and CLI refuse bad input in one line; ``kdhw rtl`` output verifies and reports on
its own.  The Verilog text itself is simulated in ``sim/test_stream_sim.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kdhw.cli import main
from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.rtl import (
    edge_vectors,
    emulate,
    input_codes,
    load_meta,
    output_codes,
    qonnx_to_rtl,
    stream_in_words,
    stream_out_words,
    unpack_stream_words,
)



def test_parallelism_and_dense_folding_change_the_hardware_not_the_results(qonnx_models, tmp_path) -> None:
    """Conv/pool units with 2 positions per issue and a folded dense with 2 MAC lanes; an MLP fed 4 elements
    per beat through an unrolled first layer: same bits, different folding in rtl.json."""
    path, x = qonnx_models["conv2d"]
    meta = qonnx_to_rtl(path, tmp_path / "p2", mode="stream", parallelism=2, dense="folded")
    assert [l["parallelism"] for l in meta["layers"]] == [2, 2, 2]
    assert meta["layers"][-1]["multipliers"] == 2 * 10
    ref = reference(load_qonnx(path), x)
    assert np.array_equal(emulate(tmp_path / "p2", x), ref)
    p1 = qonnx_to_rtl(path, tmp_path / "p1", mode="stream")
    # two MAC lanes: the dense takes half the cycles; the frame rate stays bound by the 64 input beats
    assert 2 * meta["layers"][-1]["cycles_per_frame"] == p1["layers"][-1]["cycles_per_frame"] == 36
    assert meta["initiation_interval"] == p1["initiation_interval"] == 64
    path, x = qonnx_models["mlp"]
    meta = qonnx_to_rtl(path, tmp_path / "mlp4", mode="stream", in_elements=4, dense="unrolled")
    assert meta["stream"]["beats_in"] == 16 and [l["kind"] for l in meta["layers"]] == ["collect", "collect"]
    assert np.array_equal(emulate(tmp_path / "mlp4", x), reference(load_qonnx(path), x))


def test_an_mlp_on_an_image_streams_elements_of_the_flattened_input(tmp_path) -> None:
    """A student whose first layer is dense flattens its (1, 8, 8) input: in_elements apply to it."""
    import torch

    from kdhw.hw.export import export_qonnx
    from kdhw.train.student import build_student

    torch.manual_seed(0)
    spec = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "weight_bits": 4, "act_bits": 4,
            "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}
    m = build_student(spec, (1, 8, 8), 10).train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(32, 1, 8, 8))
    path = export_qonnx(m.eval(), (1, 8, 8), tmp_path / "mlp_img.onnx")
    meta = qonnx_to_rtl(path, tmp_path / "rtl", mode="stream", in_elements=8, parallelism=4)
    st = meta["stream"]
    assert meta["input_shape"] == [1, 8, 8] and st["beats_in"] == 8
    assert st["in_elements_of_beat"][1] == list(range(8, 16))
    assert meta["initiation_interval"] == 16  # 64 elements, 4 MAC lanes
    x = edge_vectors(meta, 2000, seed=3)
    assert np.array_equal(emulate(tmp_path / "rtl", x), reference(load_qonnx(path), x))


def test_rtl_json_describes_ports_beats_folding_and_time(streams) -> None:
    path, rtl, _ = streams["conv1d"]
    meta = json.loads((rtl / "rtl.json").read_text())
    st = meta["stream"]
    assert meta["mode"] == "stream" and meta["top"] == "kdhw_top"
    # one beat per signal position (1 channel, 8-bit signed codes); logits one per beat
    assert st["beats_in"] == 40 and st["in_elements"] == 1 and st["beats_out"] == 10 and st["output"] == "logits"
    ports = meta["ports"]
    assert ports["s_axis_tdata"]["width"] == 8 and ports["m_axis_tdata"]["width"] == 8
    assert {"clk", "aresetn", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast", "m_axis_tvalid", "m_axis_tready",
            "m_axis_tlast", "tlast_err"} <= set(ports)
    top = (rtl / "src" / "kdhw_top.v").read_text()
    for name, p in ports.items():
        decl = f"{p['direction']} [{p['width'] - 1}:0] {name}" if p["width"] > 1 else f"{p['direction']} {name}"
        assert decl in top, decl
    kinds = [(l["kind"], l.get("op")) for l in meta["layers"]]
    assert kinds == [("window", "conv"), ("window", "maxpool"), ("window", "conv"), ("window", "maxpool"),
                     ("mac", "dense (folded)")]
    conv1, pool1, conv2, pool2, dense = meta["layers"]
    assert (conv1["positions_in"], conv1["positions_out"], conv1["line_buffer_positions"]) == (40, 38, 3)
    assert (pool1["positions_out"], conv2["positions_out"], pool2["positions_out"]) == (19, 17, 8)
    assert dense["inputs"] == 64 and dense["steps_per_frame"] == 64 and dense["multipliers"] == 10
    # every unit's own rate bounds the frame rate; the fully folded dense (one element per cycle) sets it here
    assert meta["initiation_interval"] == max(l["cycles_per_frame"] for l in meta["layers"]) == 64
    assert st["bottleneck_unit"] == "u4" and meta["latency_cycles"] > st["beats_in"]
    assert (rtl / meta["model_file"]).is_file() and all((rtl / f).is_file() for f in meta["verilog_files"])
    assert (rtl / "model" / "stream.json").is_file()


def test_output_words_pack_logits_and_class_with_lowest_index_on_ties(streams, tmp_path) -> None:
    path, _, x = streams["mlp"]
    meta = qonnx_to_rtl(path, tmp_path / "both", mode="stream", output="both", out_elements=3)
    st = meta["stream"]
    assert st["logit_beats"] == 4 and st["beats_out"] == 5 and meta["ports"]["m_axis_tdata"]["width"] == 24
    codes = np.zeros((2, 10), dtype=np.int64)
    codes[0, [3, 7]] = 5  # a tie: class 3
    codes[1] = np.arange(10) - 4  # negative codes: class 9
    words = stream_out_words(meta, codes)
    assert len(words) == 10 and words[4] == 3 and words[9] == 9
    logits, classes = unpack_stream_words(meta, words)
    assert np.array_equal(logits, codes) and classes.tolist() == [3, 9]
    ref = reference(load_qonnx(path), x)
    out = output_codes(meta, ref)
    logits, classes = unpack_stream_words(meta, stream_out_words(meta, out))
    assert np.array_equal(logits, out) and np.array_equal(classes, ref.argmax(1))
    # input beats: one 8-bit element per beat, LSB first, rows after each other
    w = stream_in_words(meta, input_codes(meta, x[:2]))
    assert len(w) == 2 * 64 and w[65] == int(input_codes(meta, x[1:2])[0, 1]) & 0xFF


def _zoo_graph(tmp_path: Path) -> Path:
    """Conv with padding on all sides (asymmetric), stride, dilation and groups; an overlapping strided
    max-pool; Gemm with transB and alpha, and straight on its (unquantized, signed, unequally wide) outputs a
    second dense layer.
    Filter 0 has no weights and a negative bias (its ReLU output is always 0: a lane of width 0), filter 3
    none and a positive bias (a constant lane)."""
    rng = np.random.default_rng(4)
    w_conv = (rng.integers(-7, 8, size=(4, 1, 3, 3)) * 2.0**-3).astype(np.float32)
    b_conv = (rng.integers(-64, 64, size=4) * 2.0**-9).astype(np.float32)
    w_conv[[0, 3]] = 0.0
    b_conv[0], b_conv[3] = -0.0625, 0.25
    w_fc = (rng.integers(-7, 8, size=(5, 48)) * 2.0**-4).astype(np.float32)
    b_fc = (rng.integers(-64, 64, size=5) * 2.0**-8).astype(np.float32)
    w_fc[0] *= 2.0**-3  # small and large outputs: the second layer's input lanes have unequal widths
    w_fc[4] *= 4
    w_2 = (rng.integers(-7, 8, size=(5, 3)) * 2.0**-5).astype(np.float32)
    b_2 = (rng.integers(-16, 16, size=3) * 2.0**-4).astype(np.float32)

    def q(x: str, y: str, bits: int, scale: float, signed: int) -> tuple[onnx.NodeProto, list]:
        inits = [helper.make_tensor(y + "s", TensorProto.FLOAT, [], [scale]),
                 helper.make_tensor(y + "z", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor(y + "b", TensorProto.FLOAT, [], [float(bits)])]
        return helper.make_node("Quant", [x, y + "s", y + "z", y + "b"], [y], name=f"Quant_{y}",
                                domain="qonnx.custom_op.general", signed=signed, narrow=0,
                                rounding_mode="ROUND"), inits

    qin, i_in = q("inp", "xq", 8, 2.0**-7, 1)
    qa, i_a = q("r", "rq", 4, 2.0**-3, 0)
    qo, i_o = q("a2", "out", 8, 2.0**-4, 1)
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in [(w_conv, "Wc"), (b_conv, "Bc"), (w_fc, "Wf"),
                                                             (b_fc, "Bf"), (w_2, "W2"), (b_2, "B2")]]
    nodes = [
        qin,
        helper.make_node("Conv", ["xq", "Wc", "Bc"], ["c"], name="Conv_zoo", group=2, pads=[1, 2, 1, 0],
                         strides=[2, 1], dilations=[1, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="Relu_0"),
        qa,
        helper.make_node("MaxPool", ["rq"], ["p"], name="MaxPool_zoo", kernel_shape=[2, 3], strides=[1, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="Flatten_0", axis=1),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["g"], name="Gemm_0", transB=1, alpha=0.5),
        helper.make_node("MatMul", ["g", "W2"], ["m2"], name="MatMul_1"),
        helper.make_node("Add", ["m2", "B2"], ["a2"], name="Add_1"),
        qo,
    ]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 2, 9, 10])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
                              initializer=i_in + i_a + i_o + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 1)])
    path = tmp_path / "zoo.onnx"
    onnx.save(model, str(path))
    return path


def test_padding_stride_dilation_groups_and_overlapping_pool_are_exact(tmp_path) -> None:
    path = _zoo_graph(tmp_path)
    meta = qonnx_to_rtl(path, tmp_path / "rtl", mode="stream", parallelism=3, dense="folded")
    conv, pool, _, dense2 = meta["layers"]
    assert dense2["kind"] == "mac" and dense2["steps_per_frame"] == 2  # 5 signed inputs, 3 lanes
    assert conv["output_size"] == [4, 5, 8] and pool["output_size"] == [4, 4, 3]
    assert conv["out_lane_bits"][0] == 0 and conv["out_lane_bits"][3] == 1  # constant 0, constant 0.25
    assert conv["virtual_padding_beats"] == 10  # the bottom padding row, fed as zeros after the frame
    x = edge_vectors(meta, 3000, seed=9)
    ref = reference(load_qonnx(path), x)
    assert np.array_equal(emulate(tmp_path / "rtl", x), ref)
    assert len(np.unique(ref)) > 30


def test_stream_mode_refuses_what_it_cannot_stream(tmp_path, qonnx_models) -> None:
    qin_s = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("s", 2.0**-7), ("z", 0.0), ("b", 8.0))]
    qin = helper.make_node("Quant", ["inp", "s", "z", "b"], ["xq"], name="Quant_in",
                           domain="qonnx.custom_op.general", signed=0, narrow=0, rounding_mode="ROUND")
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32) * 0.5, "W")
    nodes = [qin, helper.make_node("MatMul", ["xq", "W"], ["m"], name="MatMul_0"),
             helper.make_node("Add", ["m", "xq"], ["a"], name="Skip_add")]  # xq feeds two nodes: a branch
    g = helper.make_graph(nodes, "skip", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])], initializer=qin_s + [w])
    p = tmp_path / "skip.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                                  helper.make_opsetid("qonnx.custom_op.general", 1)]), str(p))
    with pytest.raises(InputError, match="feeds 2 nodes; stream mode needs a plain chain"):
        qonnx_to_rtl(p, tmp_path / "r", mode="stream")
    path, _ = qonnx_models["conv1d"]
    with pytest.raises(InputError, match="in_elements = 2: a model whose first layer is a Conv or MaxPool"):
        qonnx_to_rtl(path, tmp_path / "r", mode="stream", in_elements=2)
    with pytest.raises(InputError, match="out_elements = 11 exceeds the model's 10 outputs"):
        qonnx_to_rtl(path, tmp_path / "r", mode="stream", out_elements=11)
    with pytest.raises(InputError, match="rtl.parallelism applies to rtl.mode: stream"):
        qonnx_to_rtl(path, tmp_path / "r", parallelism=2)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("rtl, match", [
    ({"parallelism": 2}, "c.yaml: rtl.parallelism applies to rtl.mode: stream"),
    ({"mode": "stream", "pipeline": 4}, "c.yaml: rtl.pipeline applies to rtl.mode: parallel"),
    ({"mode": "stream", "output": "probs"}, "c.yaml: rtl.output = 'probs' is not allowed; choose one of: logits"),
    ({"mode": "stream", "parallelism": 0}, r"c.yaml: rtl.parallelism = 0 must be in \[1, 64\]"),
    ({"mode": "burst"}, "c.yaml: rtl.mode = 'burst' is not allowed; choose one of: parallel, stream"),
    ({"mode": "stream", "lanes": 2}, "c.yaml: unknown key 'rtl.lanes'"),
])
def test_config_rtl_section_is_checked_on_load(rtl: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate({"rtl": rtl}, "c.yaml")
    assert validate({"rtl": {"mode": "stream", "parallelism": 4, "output": "both", "dense": "folded"}}).rtl["dense"] \
        == "folded"


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_rtl_verify_report_on_what_kdhw_rtl_wrote(qonnx_models, tmp_path, capsys) -> None:
    """`kdhw rtl M --out D`, then `kdhw verify D` and `kdhw report D` on D alone (no run folder, no hls4ml
    project), in both modes; bad flags are one line and exit 2."""
    path, x = qonnx_models["conv1d"]
    xs = tmp_path / "x.npy"
    np.save(xs, x[:200])
    for mode in ("stream", "parallel"):
        d = tmp_path / mode
        assert main(["rtl", str(path), "--out", str(d), "--mode", mode]) == 0
        assert main(["verify", str(d), "--inputs", str(xs), "--sim-rows", "0"]) == 0
        ver = json.loads((d / "verify.json").read_text())
        assert ver["bit_exact"] and ver["levels"]["rtl"]["exact_rows"] == 200 and ver["rtl_mode"] == mode
        assert main(["report", str(d), "--board", "icebreaker", "--no-synth"]) == 0
        rep = json.loads((d / "hw_report.json").read_text())
        assert rep["boards"][0]["latency"]["cycles"] == load_meta(d)["latency_cycles"]
    capsys.readouterr()
    d = tmp_path / "stream"
    cases = [
        (["rtl", str(path), "--out", str(tmp_path / "e"), "--parallelism", "2"],
         "--parallelism applies to --mode stream"),
        (["rtl", str(path), "--out", str(tmp_path / "e"), "--mode", "stream", "--pipeline", "3"],
         "--pipeline applies to --mode parallel (an exact latency)"),
        (["rtl", str(path), "--out", str(tmp_path / "e"), "--mode", "stream", "--parallelism", "0"],
         "--parallelism = 0 must be in [1, 64]"),
        (["verify", str(tmp_path), "--inputs", str(xs)], "neither a run folder, an hls4ml project"),
        (["verify", str(d), "--inputs", str(xs), "--model", str(qonnx_models["mlp"][0])],
         "not the model"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        assert msg in _err_line(capsys), argv
    (d / load_meta(d)["model_file"]).unlink()
    assert main(["report", str(d), "--board", "icebreaker", "--no-synth"]) == 2
    assert "no QONNX model found" in _err_line(capsys)
    assert main(["report", str(d), "--board", "icebreaker", "--no-synth", "--model", str(path)]) == 0


@pytest.mark.slow
def test_icarus_runs_the_padded_strided_dilated_design_exact(tmp_path) -> None:
    """The Verilog of the attribute zoo (border tap classes, virtual bottom row, stride and dilation in the
    line buffer, overlapping pool) under stalls, reset and tlast checks."""
    from kdhw.verify.sim.runner import simulate_rtl

    path = _zoo_graph(tmp_path)
    rtl = tmp_path / "rtl"
    meta = qonnx_to_rtl(path, rtl, mode="stream", parallelism=3, output="both", out_elements=2, dense="folded")
    x = edge_vectors(meta, 20, seed=10)
    ref = reference(load_qonnx(path), x)
    res = simulate_rtl(rtl, x, ref, simulator="icarus", work_dir=tmp_path / "icarus")
    assert res["exact_rows"] == 20, res["mismatches"][:2]
    assert np.array_equal(res["outputs"], ref) and np.array_equal(res["classes"], ref.argmax(1))
    assert res["latency_ok"] and res["protocol_ok"]
