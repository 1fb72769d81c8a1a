"""Folded designs (``rtl.fold``) in the estimate, the report and the ``auto`` fit ladder.

The estimate counts the weight and accumulator memories of folded dense layers as block RAM tiles of each
family (and no LUTs; under ``memory: auto`` a table of up to 512 bits is a LUT ROM instead), their multipliers as DSP blocks where yosys maps them, and yosys agrees exactly on a
small trained student; the report shows BRAM and DSP against the board's totals; the fit ladder takes a
fold form on a board where the stream p=1 form does not fit, and refuses it where its block RAM does not.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdhw.boards import Board, load_board
from kdhw.hw.board_fit import FIT_BAND, FIT_BAND_FOLD, choose_form
from kdhw.hw.estimate import bram_blocks, estimate_design
from kdhw.hw.report import hardware_report
from kdhw.hw.rtl import qonnx_to_rtl

FORMS: dict[str, dict[str, Any]] = {
    "p1": {},
    "fold11": {"fold": {"pe": 1, "simd": 1, "memory": "bram"}},
    "fold11auto": {"fold": {"pe": 1, "simd": 1}},
    "fold22": {"fold": {"pe": 2, "simd": 2, "requant": "parallel"}},
}


@pytest.fixture(scope="module")
def mlp_forms(qonnx_models, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """conftest's trained MLP (64-12-10, 4-bit weights) as stream p=1 and two folded forms."""
    path, _ = qonnx_models["mlp"]
    root = tmp_path_factory.mktemp("fold_forms")
    out = {}
    for name, kw in FORMS.items():
        qonnx_to_rtl(path, root / name, mode="stream", parallelism=1, **kw)
        out[name] = root / name
    return path, out


def _meta(d: Path) -> dict[str, Any]:
    return json.loads((d / "rtl.json").read_text())


def _memories(meta: dict[str, Any]) -> list[tuple[int, int]]:
    return [tuple(u[k][:2]) for u in meta["inventory"]["units"] for k in ("memory", "acc_memory") if u.get(k)]


def _ebr(words: int, bits: int) -> int:
    """SB_RAM40_4K tiles (4 kbit: 256 x 16, 512 x 8, 1024 x 4, 2048 x 2), computed here on its own."""
    return min(math.ceil(bits / w) * math.ceil(words / (4096 // w)) for w in (2, 4, 8, 16))


def test_block_ram_tiling_per_family() -> None:
    assert bram_blocks(768, 4, "ice40") == 1  # 1024 x 4
    assert bram_blocks(768, 5, "ice40") == 2  # two 1024 x 4 (or two 512 x 8)
    assert bram_blocks(12, 40, "ice40") == 3  # 256 x 16, three wide
    assert bram_blocks(120, 5, "xc7") == 0.5  # one RAMB18 = half a RAMB36
    assert bram_blocks(1024, 36, "xc7") == 1.0  # one RAMB36 (or two RAMB18)
    assert bram_blocks(2048, 9, "ecp5") == 1 and bram_blocks(2048, 10, "ecp5") == 2  # DP16KD 2048 x 9
    assert bram_blocks(0, 8, "xc7") == 0


def test_the_estimate_counts_block_ram_and_dsp_of_a_folded_design(mlp_forms) -> None:
    path, forms = mlp_forms
    meta = _meta(forms["fold11"])
    fm = [u for u in meta["inventory"]["units"] if u["kind"] == "fmac"]
    assert [u["memory"][0] for u in fm] == [64 * 12, 12 * 10]  # one weight per step and multiplier
    mems = _memories(meta)
    assert len(mems) == 4  # two weight memories, two accumulator memories (serial requantization)
    pynq, ice, ecp = load_board("pynq-z2"), load_board("icebreaker"), load_board("ulx3s-85f")
    e_x, e_i, e_e = (estimate_design(path, meta, b) for b in (pynq, ice, ecp))
    # every memory is under 18 kbit: one RAMB18 each (half a RAMB36), one DP16KD each on ECP5
    assert all(w * b <= 16384 and b <= 36 for w, b in mems)
    assert e_x["bram36"] == 0.5 * len(mems) and e_e["bram36"] == len(mems)
    assert e_i["bram36"] == sum(_ebr(w, b) for w, b in mems)
    assert e_x["utilization_pct"]["bram36"] == pytest.approx(100 * e_x["bram36"] / pynq.bram36)
    # the weights are not priced as LUTs (today's stream form keeps them in a case ROM)
    f = e_x["features"]
    assert f["rom_luts"] == 0 and f["fold_rom_luts"] == 0 and f["bram_xc7"] == e_x["bram36"]
    # one multiplier per layer; yosys maps a product to a DSP48 from 9 bits, an SB_MAC16 (with -dsp) from 11
    assert [u["mult"][0][2] for u in fm] == [1, 1]
    mults = [m for u in fm for m in u["mult_lanes"]]
    assert sum(m[2] for m in mults) == 2
    assert e_x["dsp"] == sum(n for a, b, n in mults if a + b >= 9 and min(a, b) >= 2)
    assert e_i["dsp"] == sum(n for a, b, n in mults if a + b >= 11 and min(a, b) >= 2)
    assert e_i["dsp_flow"] == "synth_ice40 -dsp" and e_e["dsp"] == 2
    # far smaller than the stream p=1 form, which has a multiplier per output and its weights in LUTs
    p1 = estimate_design(path, _meta(forms["p1"]), pynq)
    assert p1["bram36"] == 0 and e_x["lut"] < p1["lut"] and e_x["ff"] < p1["ff"]
    # PE x SIMD = 2 x 2: the first layer's beats carry one element (SIMD 1), the second's all 12; one word per step
    m22 = [u for u in _meta(forms["fold22"])["inventory"]["units"] if u["kind"] == "fmac"]
    assert [u["memory"][0] for u in m22] == [64 * 12 // 2, math.ceil(12 / 2) * math.ceil(10 / 2)]
    assert m22[0]["memory"][1] % 2 == 0 and m22[1]["memory"][1] % 4 == 0  # PE x SIMD lanes of one weight width
    assert [u["mult"][0][2] for u in m22] == [2, 4] and all(sum(n for *_, n in u["mult_lanes"]) <= 4 for u in m22)
    # memory auto (the default): the 120 x 4 second table (480 bits) becomes a LUT ROM, priced in LUTs, one
    # RAMB18 fewer; the 768 x 4 first one stays in block RAM
    auto = _meta(forms["fold11auto"])
    assert [u["memory"] for u in auto["inventory"]["units"] if u["kind"] == "fmac"] == [[768, 4, "bram"],
                                                                                        [120, 4, "lut"]]
    e_a = estimate_design(path, auto, pynq)
    assert e_a["bram36"] == e_x["bram36"] - 0.5 and e_a["features"]["fold_rom_luts"] > 0
    # a board without block RAM: the folded form does not fit
    nobram = dataclasses.replace(pynq, name="no-bram", bram36=0)
    assert not estimate_design(path, meta, nobram)["fits"] and estimate_design(path, meta, pynq)["fits"]


def _yosys_cells(rtl: Path, script: str, work: Path) -> dict[str, int]:
    from kdhw.hw import synth

    meta = _meta(rtl)
    work.mkdir()
    (work / "wrap.v").write_text(synth._wrapper(meta))
    files = [str(rtl / f) for f in meta["verilog_files"]]
    r = subprocess.run([*synth.yosys(), "-q", "-p", f"{script} -top kdhw_io_wrap; tee -q -o stat.json stat -json",
                        *files, "wrap.v"], cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return synth._cells(work / "stat.json")


@pytest.mark.slow
def test_yosys_agrees_on_block_ram_and_dsp(mlp_forms, tmp_path) -> None:
    """synth_ice40 -dsp (the flag kdhw.hw.synth gives a design whose multipliers fit the SB_MAC16s) and synth_ecp5
    of the folded MLP (memory auto: one table in block RAM, one in a LUT ROM): SB_RAM40_4K / DP16KD and
    SB_MAC16 / MULT18X18D counts equal the estimate's."""
    path, forms = mlp_forms
    meta = _meta(forms["fold11auto"])
    est_i = estimate_design(path, meta, load_board("icebreaker"))
    c = _yosys_cells(forms["fold11auto"], "synth_ice40 -dsp", tmp_path / "ice40")
    assert c.get("SB_RAM40_4K", 0) == est_i["bram36"] and c.get("SB_MAC16", 0) == est_i["dsp"], c
    est_e = estimate_design(path, meta, load_board("ulx3s-85f"))
    c = _yosys_cells(forms["fold11auto"], "synth_ecp5", tmp_path / "ecp5")
    assert c.get("DP16KD", 0) + c.get("PDPW16KD", 0) == est_e["bram36"] and c.get("MULT18X18D", 0) == est_e["dsp"], c


def test_the_report_counts_block_ram_and_dsp_against_the_board(mlp_forms) -> None:
    path, forms = mlp_forms
    d = forms["fold11"]
    boards = [load_board("pynq-z2"), load_board("icebreaker")]
    rep = hardware_report(d, boards, path, d, synth=False, log=lambda *a: None)
    pynq, ice = rep["boards"]
    meta = _meta(d)
    for e, b in zip(rep["boards"], boards):
        est = estimate_design(path, meta, b)
        assert e["used"]["bram36"] == est["bram36"] > 0 and e["available"]["bram36"] == b.bram36
        assert e["utilization_pct"]["bram36"] == pytest.approx(100 * est["bram36"] / b.bram36)
        assert e["used"]["dsp"] == est["dsp"]
    md = (d / "hw_report.md").read_text()
    assert "| BRAM used / board |" in md
    assert pynq["used"]["bram36"] == 2.0 and ice["used"]["bram36"] == int(ice["used"]["bram36"])
    assert "| 2 / 140 RAMB36 |" in md and f"| {ice['used']['bram36']:.0f} / 30 EBR |" in md
    assert "u0 weights 768 x" in md and "SB_RAM40_4K (4 kbit)" in md and "RAMB18 / RAMB36" in md
    assert "synth_ice40 -dsp" in md and "SB_MAC16" in md
    html = (d / "hw_report.html").read_text()
    assert "BRAM used / board" in html


def _small_ice40(lut: int, bram: int = 30) -> Board:
    ice = load_board("icebreaker")
    return dataclasses.replace(ice, name="small-ice40", lut=lut, ff=lut, bram36=bram)


def test_auto_takes_a_fold_form_where_stream_p1_does_not_fit(mlp_forms, tmp_path) -> None:
    """Without synthesis: a UP5K-like part whose cells hold the fold 1 x 1 form with its error band but not the
    stream p=1 form; the ladder rejects every stream rung and takes the fold form.  With no block RAM it
    refuses instead, naming the BRAM."""
    path, forms = mlp_forms
    ice = load_board("icebreaker")
    p1 = estimate_design(path, _meta(forms["p1"]), ice)["lut"]
    # the fit ladder's own fold rung (serial requantization, memory bram)
    qonnx_to_rtl(path, tmp_path / "f11", mode="stream", parallelism=1, fold={"pe": 1, "simd": 1})
    f11 = estimate_design(path, _meta(tmp_path / "f11"), ice)
    band, fband = FIT_BAND["lattice"]["lut"], FIT_BAND_FOLD["lattice"]["lut"]
    cap = int(f11["lut"] * (1 + fband)) + 1
    assert p1 * (1 + band) > cap, (p1, f11["lut"])  # stream p=1 cannot be picked blind on this part
    board = _small_ice40(cap)
    res = choose_form(path, board, tmp_path / "w", synth=False, log=lambda *a: None)
    cands = res["candidates"]
    assert res["chosen"] is not None and res["chosen"].startswith("fold pe=1 simd=1"), cands
    chosen = next(c for c in cands if c["verdict"] == "chosen")
    assert chosen["estimate"]["bram36"] == f11["bram36"] > 0
    assert chosen["estimate"]["lut"] * (1 + fband) <= cap
    p1_rec = next(c for c in cands if c["label"].startswith("stream p=1"))
    assert p1_rec["verdict"] == "rejected" and "error band" in p1_rec["why"]
    # the ladder is ordered by II: every stream rung before the fold rung, all rejected
    i = cands.index(chosen)
    assert all(c["verdict"] == "rejected" for c in cands[:i])
    assert [c["initiation_interval"] for c in cands[1:i + 1]] == sorted(c["initiation_interval"] for c in cands[1:i + 1])
    # no block RAM: the fold form is refused on its BRAM, and nothing is chosen
    res = choose_form(path, _small_ice40(cap, bram=0), tmp_path / "w0", synth=False, log=lambda *a: None)
    fold_rec = next(c for c in res["candidates"] if c["label"].startswith("fold pe=1"))
    assert res["chosen"] is None and fold_rec["verdict"] == "rejected" and "BRAM" in fold_rec["why"]
