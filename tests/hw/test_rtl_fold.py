"""rtl.fold (issue 25): every dense layer as an ``fmac`` unit, PE outputs x SIMD inputs per cycle, its weights
in a memory with a registered read (block RAM), registered multiplier operands (DSP blocks).

The arithmetic is the folded MAC's (same exact sums, same da4ml requantization), so the emulator is bit-exact
with the QONNX reference on 10,000 off-grid vectors; rtl.json records the plan per layer; config and CLI take
and check the option; the Verilog is lint-clean, bit-exact in Icarus and Verilator under the stream bench
(random stalls, mid-frame reset, malformed TLAST, latency and II equal to rtl.json's), and a flipped bit in the
weight memory image is caught by the simulator.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kdhw.cli import main
from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.rtl import edge_vectors, emulate, input_codes, load_meta, qonnx_to_rtl
from kdhw.hw.rtl._stream_plan import ROM_LUT_BITS

# the second fold puts every window's row delays in block RAM (line_buffer: bram; auto would keep these small
# ones in flip-flops), so the simulator runs of conv2d-1 cover that line buffer
FOLDS = [{"pe": 1, "simd": 1}, {"pe": 2, "simd": 3, "line_buffer": "bram"},
         {"pe": 4, "simd": 2, "memory": "lut", "requant": "parallel"}]
# other stream options per fold: logits and class out (the output unit reads the held result), class only
EXTRA = [{}, {"output": "both", "out_elements": 4}, {"output": "class"}]


@pytest.fixture(scope="module")
def folded(qonnx_models, tmp_path_factory):
    """(kind, fold index) -> (QONNX path, RTL dir, inputs); built lazily, once per module."""
    root = tmp_path_factory.mktemp("fold")
    cache: dict = {}

    def get(kind: str, i: int = 0):
        if (kind, i) not in cache:
            path, x = qonnx_models[kind]
            rtl = root / f"{kind}_{i}"
            qonnx_to_rtl(path, rtl, mode="stream", fold=FOLDS[i], **EXTRA[i])
            cache[(kind, i)] = (path, rtl, x)
        return cache[(kind, i)]

    return get


@pytest.mark.parametrize("i", range(len(FOLDS)))
@pytest.mark.parametrize("kind", ["mlp", "conv1d", "conv2d"])
def test_folded_units_are_bit_exact_on_10000_off_grid_vectors(kind: str, i: int, folded) -> None:
    path, rtl, x = folded(kind, i)
    meta = load_meta(rtl)
    xs = np.concatenate([edge_vectors(meta, 10_000, seed=11), x.reshape(len(x), *meta["input_shape"])])
    assert np.array_equal(emulate(rtl, xs), reference(load_qonnx(path), xs))


def test_rtl_json_records_the_fold_plan_per_layer(folded, qonnx_models, tmp_path) -> None:
    path, rtl, _ = folded("mlp", 1)
    meta = load_meta(rtl)
    dense = [rec for rec in meta["layers"] if rec["kind"] == "fmac"]
    assert len(dense) == 2 and all(rec["requant"] == "serial" for rec in dense)
    # memory auto: the 384 x 8 first table in block RAM, the 20 x 24 second one (480 bits) in a LUT ROM
    assert [(rec["memory"], rec["memory_words"] * rec["memory_bits_per_word"]) for rec in dense] == [
        ("bram", 384 * 8), ("lut", 20 * 24)]
    assert ROM_LUT_BITS == 512
    v = {u: (rtl / "src" / f"{load_meta(rtl)['top']}_{u}.v").read_text() for u in (d["unit"] for d in dense)}
    assert [text.count('(* ram_style = "logic" *)') for text in v.values()] == [0, 1]
    first, second = dense
    assert (first["pe"], first["simd"]) == (2, 1)  # one input element per beat: SIMD is capped at the beat
    assert (second["pe"], second["simd"]) == (2, 3)
    assert [rec["multipliers"] for rec in dense] == [2, 6]
    assert first["steps_per_frame"] == first["inputs"] * first["outputs"] // 2
    assert second["steps_per_frame"] == -(-second["inputs"] // 3) * -(-second["outputs"] // 2)
    inv = {u["unit"]: u for u in meta["inventory"]["units"]}
    assert inv[first["unit"]]["memory"][0] == first["memory_words"] == first["steps_per_frame"]
    assert inv[first["unit"]]["mult"][0][2] == 2 and "rom" not in inv[first["unit"]]
    assert meta["stream"]["fold"] == FOLDS[1]
    # the frame rate is bound by the folded steps, and the text says so
    assert meta["initiation_interval"] >= first["steps_per_frame"]
    top = (rtl / "src" / f"{meta['top']}.v").read_text()
    assert f"Initiation interval {meta['initiation_interval']} cycles" in top
    # a conv layer becomes a window unit that gathers its taps and an fmac; a pool keeps its window unit
    _, crtl, _ = folded("conv2d", 0)
    recs = load_meta(crtl)["layers"]
    assert [(r["layer"], r["kind"]) for r in recs] == [(0, "window"), (0, "fmac"), (1, "window"), (2, "fmac")]
    taps, conv = recs[0], recs[1]
    assert taps["op"].startswith("conv taps") and taps["datapath_stages"] == 0 and taps["fifo_depth"] == 1
    assert conv["op"] == "conv (folded, weights in memory)" and conv["inputs"] == 9 and conv["outputs"] == 4
    assert conv["windows_per_frame"] == taps["positions_out"] == 36
    assert conv["steps_per_frame"] == 36 * 9 * 4 and conv["multipliers"] == 1
    assert recs[2]["op"] == "maxpool"
    # an 8x8 image's row delays (2 rows x 8 positions x 8 bits) stay in flip-flops under line_buffer: auto
    assert taps["line_buffer"] == recs[2]["line_buffer"] == "registers"
    _, brtl, _ = folded("conv2d", 1)
    bram = [r for r in load_meta(brtl)["layers"] if r["kind"] == "window"]
    assert [r["line_buffer"] for r in bram] == ["bram", "bram"]
    text = (brtl / "src" / f"{load_meta(brtl)['top']}_{bram[0]['unit']}.v").read_text()
    assert 'ram_style = "block"' in text and "lb_m2 [0:7];" in text and " sr;" not in text  # 2 row memories
    # the estimate counts them as block RAM (yosys put this design's 11 memories in 11 EBR on the UP5K)
    from kdhw.hw.estimate import _bram_use

    inv = {u["unit"]: u for u in load_meta(brtl)["inventory"]["units"]}
    assert inv[bram[0]["unit"]]["line_memories"] == [[8, 8, "bram"], [8, 8, "bram"]]
    rows = [b for b in _bram_use(load_meta(brtl)) if b["what"].startswith("line-buffer row")]
    assert len(rows) == 3 and all(b["blocks"]["ice40"] == 1.0 for b in rows)
    assert not (crtl / "src" / f"{load_meta(crtl)['top']}_{taps['unit']}_dp.v").exists()  # no datapath
    # unset: today's units, no fold record
    plain = qonnx_to_rtl(path, tmp_path / "plain", mode="stream")
    assert "fmac" not in {rec["kind"] for rec in plain["layers"]} and "fold" not in plain["stream"]


def test_weight_memory_has_a_registered_read_and_registered_multiplier_operands(folded) -> None:
    _, rtl, _ = folded("mlp", 0)
    meta = load_meta(rtl)
    text = (rtl / "src" / f"{meta['top']}_u0.v").read_text()
    assert re.search(r"\(\* ram_style = \"block\" \*\)\s*\n\s*reg \[\d+:0\] wmem \[0:\d+\];", text)
    assert re.search(r"always @\(posedge clk\) begin\n\s*wq <= wmem\[st\];", text)
    assert re.search(r"m_0_0 <= xr_0 \* w_0_0;", text)  # both operands registers (wq, xr_0)
    assert "case (st)" not in text  # no combinational ROM
    _, lrtl, _ = folded("mlp", 2)
    assert '(* ram_style = "logic" *)' in (lrtl / "src" / f"{meta['top']}_u0.v").read_text()
    assert {rec["requant"] for rec in load_meta(lrtl)["layers"]} == {"parallel"}
    # serial requantization: one datapath lane per PE, the bias from a table of the output group
    assert re.search(r"f_bias\(rg1?\)", text) and "en(vp[" not in text


@pytest.mark.parametrize("fold, match", [
    ({"pe": 0, "simd": 1}, r"rtl\.fold\.pe = 0"),
    ({"pe": 1, "simd": 65}, r"rtl\.fold\.simd = 65"),
    ({"pe": 1, "simd": 1, "memory": "uram"}, r"rtl\.fold\.memory"),
    ({"pe": 1, "lanes": 2}, r"unknown key 'lanes'"),
    ({"pe": 1, "requant": "lazy"}, r"rtl\.fold\.requant"),
    ([1, 1], r"must be a mapping"),
    ({"target_ii": 0}, r"rtl\.fold\.target_ii = 0 must be a positive integer"),
    ({"line_buffer": "sram"}, r"rtl\.fold\.line_buffer = 'sram'; allowed: auto, bram, registers"),
    ({"target_ii": 100, "pe": 2}, r"give rtl\.fold\.target_ii .* or rtl\.fold\.pe, not both"),
    ({"layers": [1]}, r"rtl\.fold\.layers = \[1\] must be a mapping"),
    ({"layers": {0: {"lanes": 2}}}, r"rtl\.fold\.layers\.0 = .* must be a mapping with pe and/or simd"),
    ({"layers": {"fc1": {"pe": 99}}}, r"rtl\.fold\.layers\.fc1\.pe = 99"),
])
def test_config_checks_rtl_fold(fold, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate({"rtl": {"mode": "stream", "fold": fold}})


def test_config_and_cli_take_the_fold(qonnx_models, tmp_path, capsys) -> None:
    cfg = validate({"rtl": {"mode": "stream", "fold": {"pe": 2, "simd": 1}}})
    from kdhw.hw.rtl import rtl_options

    assert rtl_options(cfg.rtl)["fold"] == {"pe": 2, "simd": 1}
    with pytest.raises(InputError, match=r"rtl\.fold applies to rtl\.mode: stream"):
        validate({"rtl": {"mode": "parallel", "fold": {"pe": 1, "simd": 1}}})
    with pytest.raises(InputError, match=r"contradicts rtl\.dense unrolled"):
        validate({"rtl": {"mode": "stream", "dense": "unrolled", "fold": {"pe": 1, "simd": 1}}})
    path, x = qonnx_models["mlp"]
    out = tmp_path / "cli"
    assert main(["rtl", str(path), "--out", str(out), "--mode", "stream", "--fold", "1,1"]) == 0
    meta = load_meta(out)
    assert {rec["kind"] for rec in meta["layers"]} == {"fmac"} and meta["stream"]["fold"] == {"pe": 1, "simd": 1}
    np.save(tmp_path / "x.npy", x)
    assert main(["verify", str(out), "--inputs", str(tmp_path / "x.npy")]) == 0
    with pytest.raises(SystemExit):
        main(["rtl", str(path), "--out", str(tmp_path / "bad"), "--mode", "stream", "--fold", "two"])
    assert "expected PE,SIMD" in capsys.readouterr().err
    assert main(["rtl", str(path), "--out", str(tmp_path / "bad2"), "--mode", "stream", "--fold", "1,99"]) != 0
    assert "--fold.simd = 99" in capsys.readouterr().err


def test_folded_verilog_is_lint_clean(folded) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_rtl_hygiene import lint

    for kind, i in (("mlp", 1), ("conv1d", 0), ("conv2d", 2)):
        assert lint(folded(kind, i)[1]) == [], kind


# ---------------------------------------------------------------------------------------------- simulators

ROWS = {"icarus": 24, "verilator": 12}


def _simulate(rtl: Path, x: np.ndarray, ref: np.ndarray, simulator: str, work: Path) -> dict:
    from kdhw.verify.sim.runner import simulate_rtl

    return simulate_rtl(rtl, x, ref, simulator=simulator, work_dir=work)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("kind, i", [("mlp", 0), ("mlp", 1), ("mlp", 2), ("conv1d", 0), ("conv2d", 1)])
def test_folded_design_is_bit_exact_in_the_simulator_under_stalls_reset_and_bad_tlast(kind: str, i: int,
                                                                                      simulator: str, folded,
                                                                                      tmp_path) -> None:
    path, rtl, _ = folded(kind, i)
    meta = load_meta(rtl)
    n = ROWS[simulator]
    x = edge_vectors(meta, n, seed=5)
    ref = reference(load_qonnx(path), x)
    res = _simulate(rtl, x, ref, simulator, tmp_path / "work")
    assert res["exact_rows"] == res["rows"] == n, res["mismatches"][:2]
    assert res["latency_measured"] == res["latency_reported"] == meta["latency_cycles"]
    assert res["ii_measured"] == res["ii_reported"] == meta["initiation_interval"]
    assert res["latency_ok"] and res["protocol_ok"]
    t = res["tests"]
    assert t["timing"]["frame_starts"] == t["timing"]["frame_starts_model"]
    # a folded frame is long: the bench's reset may land inside the first frame; it must land inside a frame
    before = t["mid_frame_reset"]["beats_in_before_reset"]
    assert before > 0 and before % meta["stream"]["beats_in"] != 0
    stalls = t["random_stalls"]
    assert stalls["gap_p"] > 0 and stalls["stall_p"] > 0 and not stalls["axi_violations"]


@pytest.mark.slow
def test_a_flipped_bit_in_the_weight_memory_image_is_caught(folded, tmp_path) -> None:
    """Flip the sign bit of the weight memory word whose change moves the most outputs (found with the
    emulator on a copy of the plan), in the Verilog's memory image only; the simulator must see it."""
    from kdhw.hw.rtl._stream_emu import emulate_codes, load_stream
    from kdhw.hw.rtl._stream_hdl import fmac_operand_bits

    path, rtl, _ = folded("mlp", 0)
    meta = load_meta(rtl)
    n = 24
    x = edge_vectors(meta, n, seed=5)
    ref = reference(load_qonnx(path), x)
    desc, pipes = load_stream(rtl)
    codes = input_codes(meta, x)
    base = emulate_codes(desc, pipes, codes)
    u = next(u for u in desc["units"] if u["kind"] == "fmac")
    s = u["spec"]

    _, ww = fmac_operand_bits(SimpleNamespace(spec=s, in_lanes=[tuple(k) for k in u["in_lanes"]]))
    best = None
    for e, row in enumerate(s["wcodes"]):
        for o, w in enumerate(row):
            if not w:
                continue
            flipped = w - (1 << (ww - 1)) if w >= 0 else w + (1 << (ww - 1))  # the sign bit of the ww-bit code
            wc = [list(r) for r in s["wcodes"]]
            wc[e][o] = flipped
            d2 = {**desc, "units": [{**v, "spec": {**v["spec"], "wcodes": wc}} if v is u else v
                                    for v in desc["units"]]}
            try:
                changed = int(np.sum(np.any(emulate_codes(d2, pipes, codes) != base, axis=1)))
            except RuntimeError:  # an accumulator outside its planned bounds: certainly observable
                changed = n
            if best is None or changed > best[0]:
                best = (changed, e, o)
        if best and best[0] >= n // 4:
            break
    assert best and best[0] > 0
    _, e, o = best
    # memory address of (element e, output o) at PE = SIMD = 1 with one element per beat: step e*O + o
    addr = next(b for b, row in enumerate(s["elem_of"]) if e in row) * s["O"] + o
    bad = tmp_path / "mutant"
    shutil.copytree(rtl, bad)
    f = bad / "src" / f"{meta['top']}_{u['name']}.v"
    text = f.read_text()
    m = re.search(rf"wmem\[{addr}\] = (\d+)'h([0-9a-f]+);", text)
    assert m, addr
    word = int(m.group(2), 16) ^ (1 << (ww - 1))
    f.write_text(text.replace(m.group(0), f"wmem[{addr}] = {m.group(1)}'h{word:x};"))
    assert np.array_equal(emulate(bad, x), ref)  # model/*.json untouched: only the memory image is wrong
    res = _simulate(bad, x, ref, "icarus", tmp_path / "work")
    assert res["exact_rows"] < n, "a flipped weight memory bit was not detected"
    assert res["latency_ok"]


def test_per_layer_fold_by_index_and_by_name(qonnx_models, tmp_path) -> None:
    """``rtl.fold.layers`` overrides the fold of one layer, named by its index (rtl.json's layers[].layer) or
    by its node name; a name that is no layer, or a layer with nothing to fold, is refused with the list."""
    path, x = qonnx_models["conv1d"]
    names = [rec["nodes"][0] for rec in qonnx_to_rtl(path, tmp_path / "plain", mode="stream")["layers"]]
    fold = {"pe": 1, "simd": 1, "layers": {0: {"pe": 4, "simd": 3}, names[2]: {"pe": 2}}}
    meta = qonnx_to_rtl(path, tmp_path / "over", mode="stream", fold=fold)
    got = {r["layer"]: (r["pe"], r["simd"], r["fold_chosen_by"]) for r in meta["layers"] if r["kind"] == "fmac"}
    assert got == {0: (4, 3, "rtl.fold.layers[0]"), 2: (2, 1, f"rtl.fold.layers[{names[2]!r}]"),
                   4: (1, 1, "rtl.fold")}
    xs = edge_vectors(meta, 2000, seed=3)
    assert np.array_equal(emulate(tmp_path / "over", xs), reference(load_qonnx(path), xs))
    with pytest.raises(InputError, match=r"no layer 'fc9'; the layers are \(index name\): 0 "):
        qonnx_to_rtl(path, tmp_path / "bad", mode="stream", fold={"layers": {"fc9": {"pe": 2}}})
    with pytest.raises(InputError, match=r"layer 1 \(.*\) has no multiply-accumulate to fold"):
        qonnx_to_rtl(path, tmp_path / "bad", mode="stream", fold={"layers": {1: {"pe": 2}}})
    assert not (tmp_path / "bad").exists()


def test_target_ii_balances_the_layers_with_the_fewest_multipliers(qonnx_models, tmp_path) -> None:
    """``rtl.fold.target_ii``: every folded layer's cycles per frame (cycle model) meet the target; a looser
    target takes fewer multipliers; one the fastest plan cannot reach is an error naming the unit that limits
    it."""
    path, _ = qonnx_models["conv1d"]
    slow = qonnx_to_rtl(path, tmp_path / "s", mode="stream", fold={"pe": 1, "simd": 1})
    mults = {}
    for target in (slow["initiation_interval"] // 3, slow["initiation_interval"] // 6):
        meta = qonnx_to_rtl(path, tmp_path / f"t{target}", mode="stream", fold={"target_ii": target})
        fm = [r for r in meta["layers"] if r["kind"] == "fmac"]
        assert meta["initiation_interval"] <= target and meta["stream"]["target_ii"] == target
        assert all(r["cycles_per_frame"] <= target and r["fold_chosen_by"] == f"target_ii {target}" for r in fm)
        # a conv left unfolded says why (its fmac cannot reach the target, or would cost more than the window)
        for r in meta["layers"]:
            if r["kind"] in ("mac", "collect") or (r["kind"] == "window" and r["op"] == "conv"):
                assert r["fold_chosen_by"].startswith(f"target_ii {target}: kept in its window unit (")
        mults[target] = sum(r["multipliers"] for r in fm)
        xs = edge_vectors(meta, 1000, seed=4)
        assert np.array_equal(emulate(tmp_path / f"t{target}", xs), reference(load_qonnx(path), xs))
    lo, hi = sorted(mults)
    assert mults[hi] < mults[lo]  # the looser target (larger II) takes fewer multipliers
    # at the input's own rate (stream p=1's II) no fmac keeps up with the first dense layer: it keeps its MAC
    # lanes, the next one folds, and the frame rate is stream p=1's
    mpath, _ = qonnx_models["mlp"]
    p1 = qonnx_to_rtl(mpath, tmp_path / "m1", mode="stream")
    eq = qonnx_to_rtl(mpath, tmp_path / "meq", mode="stream", fold={"target_ii": p1["initiation_interval"]})
    assert eq["initiation_interval"] == p1["initiation_interval"]
    assert [r["kind"] for r in eq["layers"]] == ["mac", "fmac"]
    assert "kept in its mac unit" in eq["layers"][0]["fold_chosen_by"]
    with pytest.raises(InputError, match=r"rtl\.fold\.target_ii = 5 cannot be met: u\d+ .* cycles per frame"):
        qonnx_to_rtl(path, tmp_path / "x", mode="stream", fold={"target_ii": 5})


def test_cli_target_ii(qonnx_models, tmp_path, capsys) -> None:
    path, _ = qonnx_models["mlp"]
    assert main(["rtl", str(path), "--out", str(tmp_path / "r"), "--mode", "stream", "--target-ii", "400"]) == 0
    meta = load_meta(tmp_path / "r")
    assert meta["initiation_interval"] <= 400 and meta["stream"]["fold"] == {"target_ii": 400}
    assert main(["rtl", str(path), "--out", str(tmp_path / "b"), "--mode", "stream", "--fold", "1,1",
                 "--target-ii", "400"]) == 2
    assert "--fold: give --fold.target_ii" in capsys.readouterr().err


@pytest.mark.slow
def test_a_wrong_weight_address_in_a_folded_conv_is_caught(folded, tmp_path) -> None:
    """The folded conv's weight memory read one word off (address bit 0 flipped) in the Verilog only: the
    emulator (the plan) still agrees with the reference, the simulator must not."""
    path, rtl, _ = folded("conv1d", 0)
    meta = load_meta(rtl)
    u = next(r for r in meta["layers"] if r["kind"] == "fmac" and r["windows_per_frame"] > 1)
    x = edge_vectors(meta, 12, seed=5)
    ref = reference(load_qonnx(path), x)
    bad = tmp_path / "mutant"
    shutil.copytree(rtl, bad)
    f = bad / "src" / f"{meta['top']}_{u['unit']}.v"
    text = f.read_text()
    assert text.count("wq <= wmem[st];") == 1
    f.write_text(text.replace("wq <= wmem[st];", "wq <= wmem[st ^ 1'b1];"))
    assert np.array_equal(emulate(bad, x), ref)
    res = _simulate(bad, x, ref, "icarus", tmp_path / "work")
    assert res["exact_rows"] < len(x), "a wrong weight address was not detected"
