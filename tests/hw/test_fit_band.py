"""The estimate-only fit (``kdhw rtl --mode auto --no-synth``) never picks a form whose estimate plus the
estimate's measured error band exceeds the part, and the band is what the measurement says."""

from __future__ import annotations

import json
from pathlib import Path

from kdhw.boards import load_board
from kdhw.hw.board_fit import FIT_BAND, FIT_BAND_FOLD, _screen, choose_form

ROOT = Path(__file__).resolve().parents[2]


def test_the_band_covers_every_measured_underestimate() -> None:
    rows = json.loads((ROOT / "benchmarks" / "results" / "stream_vs_parallel.json").read_text())["rows"]
    worst = {("xilinx", "lut"): 0.0, ("xilinx", "ff"): 0.0, ("lattice", "lut"): 0.0}
    for r in rows:
        xc7 = r["flows"].get("xc7") or {}
        for k in ("lut", "ff"):
            est = (r.get("estimate_xc7") or {}).get(k)
            if xc7.get("ok") and est and xc7.get(k):
                worst["xilinx", k] = max(worst["xilinx", k], (xc7[k] - est) / est)
        for fam in ("ice40", "ecp5"):
            f = r["flows"].get(fam) or {}
            if f.get("ok") and f.get("estimate") and f.get("lut"):
                worst["lattice", "lut"] = max(worst["lattice", "lut"], (f["lut"] - f["estimate"]) / f["estimate"])
    assert all(v > 0 for v in worst.values()), worst  # the data has under-estimates to cover
    for (vendor, k), w in worst.items():
        assert FIT_BAND[vendor][k] >= round(w, 2), (vendor, k, w)


def test_the_fold_band_covers_every_measured_underestimate() -> None:
    """FIT_BAND_FOLD: the worst under-estimate over the folded designs of both estimate_vs_yosys_stream files
    (calibration and evaluation; xc7 LUT and FF, iCE40 logic cells after packing), never below the stream band;
    block RAM and DSP counts were never under-estimated in any family, so their band is 0."""
    res = ROOT / "benchmarks" / "results"
    rows = [r for f in ("estimate_vs_yosys_stream.json", "estimate_vs_yosys_stream.fold_calibration.json")
            for r in json.loads((res / f).read_text())["rows"] if r.get("folded")]
    assert len(rows) >= 16, len(rows)
    worst = {("xilinx", "lut"): 0.0, ("xilinx", "ff"): 0.0, ("lattice", "lut"): 0.0}
    for r in rows:
        for k in ("lut", "ff"):
            worst["xilinx", k] = max(worst["xilinx", k], (r[f"yosys_{k}"] - r[f"est_{k}"]) / r[f"est_{k}"])
        ice = r["ice40"]
        if ice.get("cells"):
            worst["lattice", "lut"] = max(worst["lattice", "lut"], (ice["cells"] - ice["est_cells"]) / ice["est_cells"])
        assert r["yosys_bram36"] <= r["est_bram36"] and r["yosys_dsp"] <= r["est_dsp"], r["name"]
        for fam in ("ice40", "ecp5"):
            assert r[fam]["yosys_bram"] <= r[fam]["est_bram"] and r[fam]["yosys_dsp"] <= r[fam]["est_dsp"], (r["name"], fam)
    assert worst["lattice", "lut"] > 0, worst
    for (vendor, k), w in worst.items():
        assert FIT_BAND_FOLD[vendor][k] >= max(round(w, 2), FIT_BAND[vendor][k]), (vendor, k, w)
    for vendor in ("xilinx", "lattice"):
        assert FIT_BAND_FOLD[vendor]["dsp"] == FIT_BAND_FOLD[vendor]["bram36"] == 0.0


def test_a_form_that_fits_only_without_the_band_is_not_picked_blind() -> None:
    ice = load_board("icebreaker")
    cand = {"options": {"mode": "stream"}, "pins": 25, "estimate": {"lut": 5011, "ff": 900, "dsp": 0}}
    assert _screen(cand, ice, 1.25, True) is None  # synthesis would decide
    why = _screen(cand, ice, None, True)
    assert why is not None and "error band" in why and "LUT 5,011" in why
    cand["estimate"]["lut"] = int(ice.lut / (1 + FIT_BAND["lattice"]["lut"])) - 1
    assert _screen(cand, ice, None, True) is None


def test_no_synth_pick_respects_the_band(qonnx_models, tmp_path: Path) -> None:
    ice = load_board("icebreaker")
    res = choose_form(qonnx_models["mlp"][0], ice, tmp_path / "mlp", synth=False, log=lambda *_: None)
    picked = [c for c in res["candidates"] if c["verdict"] == "chosen"]
    assert picked, res["candidates"]
    est = picked[0]["estimate"]
    band = FIT_BAND["lattice"]
    assert est["lut"] * (1 + band["lut"]) <= ice.lut and est["ff"] * (1 + band["ff"]) <= ice.ff
    # the test Conv1D places on the UP5K at 95 % of its cells in its stream p=1 form (open synthesis and nextpnr
    # decide that); blind, no stream rung's estimate plus the band fits, and a fold rung (weights in block RAM) is
    # taken only with the fold band added
    res = choose_form(qonnx_models["conv1d"][0], ice, tmp_path / "conv", synth=False, log=lambda *_: None)
    stream = [c for c in res["candidates"] if not c["label"].startswith("fold")]
    assert all(c["verdict"] == "rejected" and ("error band" in c["why"] or "pins" in c["why"]) for c in stream)
    chosen = next(c for c in res["candidates"] if c["verdict"] == "chosen")
    fband = FIT_BAND_FOLD["lattice"]
    assert chosen["label"].startswith("fold") and chosen["estimate"]["lut"] * (1 + fband["lut"]) <= ice.lut
    assert chosen["estimate"]["ff"] * (1 + fband["ff"]) <= ice.ff and 0 < chosen["estimate"]["bram36"] <= ice.bram36
