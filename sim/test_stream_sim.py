"""cocotb on stream-mode Verilog (Icarus and Verilator): every row one AXI4-Stream frame under random tvalid
gaps and tready back-pressure, bit for bit against the QONNX reference; latency and II measured and equal
to rtl.json's; a reset in the middle of a frame and malformed tlast frames leave the next frames exact; and
the bench fails on a flipped constant in a layer datapath, on an off-by-one line-buffer tap and on a wrong
II in rtl.json.

Students are built and briefly run in train mode (quantizer statistics) rather than trained: what matters
here is that the Verilog computes what the QONNX graph computes, for any weights.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _students import flip_observable_constant, random_student_qonnx
from kdhw.verify.sim.runner import simulate_rtl

from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.rtl import edge_vectors, emulate, input_codes, load_meta, qonnx_to_rtl

# kind -> (student spec, input shape, stream options)
SPECS = {
    # signed inputs into a dense folded over 64 one-element beats (one MAC lane), then unrolled; logits and
    # class out
    "mlp": ({"input": {"bits": 8, "int_bits": 1, "signed": True},
             "layers": [{"type": "dense", "units": 12}, {"type": "relu"}, {"type": "dense", "units": 10}]},
            (64,), {"output": "both", "out_elements": 4}),
    # padded first conv (right-border tap classes), max-pooling, folded dense; fully folded
    "conv1d": ({"input": {"bits": 8, "int_bits": 1, "signed": True},
                "layers": [{"type": "conv1d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
                           {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 8, "kernel": 3},
                           {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
               (1, 32), {}),
    # padded 2D conv (virtual bottom row), 2 output positions per issue, class index out
    "conv2d": ({"input": {"bits": 8, "int_bits": 1, "signed": False},
                "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
                           {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
               (1, 8, 8), {"parallelism": 2, "output": "class"}),
}
ROWS = {"icarus": 60, "verilator": 30}


def _student_qonnx(kind: str, path: Path) -> Path:
    spec, shape, _ = SPECS[kind]
    return random_student_qonnx(spec, shape, 7, path)


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    """kind -> (RTL dir, inputs, QONNX reference outputs, scratch dir); built lazily, once per module."""
    root = tmp_path_factory.mktemp("streamsim")
    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            onnx_path = _student_qonnx(kind, root / f"{kind}.onnx")
            rtl = root / f"{kind}_rtl"
            qonnx_to_rtl(onnx_path, rtl, mode="stream", **SPECS[kind][2])
            meta = load_meta(rtl)
            x = edge_vectors(meta, max(ROWS.values()), seed=5)
            ref = reference(load_qonnx(onnx_path), x)
            assert np.array_equal(emulate(rtl, x), ref)
            cache[kind] = (rtl, x, ref, root / f"{kind}_work")
        return cache[kind]

    return get


def _check(res: dict, ref: np.ndarray, meta: dict) -> None:
    n = res["rows"]
    assert res["exact_rows"] == n, res["mismatches"][:2]
    out = meta["stream"]["output"]
    if out != "class":
        assert np.array_equal(res["outputs"], ref[:n])
    if out != "logits":
        assert np.array_equal(res["classes"], ref[:n].argmax(1))
    assert res["latency_measured"] == res["latency_reported"] == meta["latency_cycles"]
    assert res["ii_measured"] == res["ii_reported"] == meta["initiation_interval"]
    assert res["latency_ok"] and res["protocol_ok"], json.dumps(res["tests"])[:2000]
    t = res["tests"]
    assert t["timing"]["frame_starts"] == t["timing"]["frame_starts_model"]  # every frame start, not only II
    assert t["mid_frame_reset"]["beats_in_before_reset"] > meta["stream"]["beats_in"]
    stalls = t["random_stalls"]
    assert stalls["gap_p"] > 0 and stalls["stall_p"] > 0 and not stalls["axi_violations"]


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("kind", ["mlp", "conv1d", "conv2d"])
def test_stream_bit_exact_under_stalls_with_reset_and_timing(kind: str, simulator: str, designs) -> None:
    rtl, x, ref, work = designs(kind)
    n = ROWS[simulator]
    res = simulate_rtl(rtl, x[:n], ref[:n], simulator=simulator, work_dir=work / simulator)
    _check(res, ref, load_meta(rtl))


def _flip_observable_datapath_constant(rtl: Path, unit: str, x: np.ndarray) -> str:
    """Flip the top bit of one adder constant of ``unit``'s datapath in its Verilog.  The flip is first tried
    on a copy of the pipeline with the stream emulator, and the first constant that changes >= 5% of the
    rows is edited in the HDL (a saturation threshold that is never reached would prove nothing)."""

    from kdhw.hw.rtl._stream_emu import emulate_codes, load_stream

    meta = load_meta(rtl)
    desc, pipes = load_stream(rtl)
    codes = input_codes(meta, x)
    return flip_observable_constant(pipes[unit], lambda p: emulate_codes(desc, {**pipes, unit: p}, codes),
                                    lambda s: rtl / "src" / f"{meta['top']}_{unit}_dp_stage{s}.v")


@pytest.mark.slow
def test_flipped_constant_in_a_layer_datapath_is_caught(designs, tmp_path) -> None:
    rtl, x, ref, _ = designs("conv1d")
    bad = tmp_path / "mutant"
    shutil.copytree(rtl, bad)
    n = 30
    what = _flip_observable_datapath_constant(bad, "u2", x[:n])  # the second convolution
    assert np.array_equal(emulate(bad, x[:n]), ref[:n])  # model/*.json untouched: only the HDL text is wrong
    res = simulate_rtl(bad, x[:n], ref[:n], simulator="icarus", work_dir=tmp_path / "work")
    assert res["exact_rows"] < n, f"mutation {what} was not detected"
    assert res["mismatches"] and res["latency_ok"]  # values are wrong, the timing is not


@pytest.mark.slow
def test_off_by_one_line_buffer_tap_is_caught(designs, tmp_path) -> None:
    rtl, x, ref, _ = designs("conv2d")
    bad = tmp_path / "mutant"
    shutil.copytree(rtl, bad)
    f = bad / "src" / "kdhw_top_u0.v"
    text = f.read_text()
    # the first lane's top-left kernel tap reads the oldest position of its window: make it one newer
    hits = re.findall(r": tap_p0_t0 = lb_(\d+);", text)
    assert hits and all(int(h) > 0 for h in hits)
    mutated = re.sub(r": tap_p0_t0 = lb_(\d+);", lambda m: f": tap_p0_t0 = lb_{int(m.group(1)) - 1};", text)
    f.write_text(mutated)
    n = 30
    res = simulate_rtl(bad, x[:n], ref[:n], simulator="icarus", work_dir=tmp_path / "work")
    assert res["exact_rows"] < n, "an off-by-one line-buffer tap was not detected"
    assert res["latency_ok"]


@pytest.mark.slow
def test_wrong_initiation_interval_in_rtl_json_is_caught(designs, tmp_path) -> None:
    rtl, x, ref, _ = designs("mlp")
    bad = tmp_path / "late"
    shutil.copytree(rtl, bad)
    meta = json.loads((bad / "rtl.json").read_text())
    meta["initiation_interval"] += 1
    (bad / "rtl.json").write_text(json.dumps(meta))
    n = 6
    res = simulate_rtl(bad, x[:n], ref[:n], simulator="icarus", work_dir=tmp_path / "work")
    assert res["latency_ok"] is False and res["ii_measured"] == meta["initiation_interval"] - 1
    assert res["exact_rows"] == n  # the outputs themselves are right
