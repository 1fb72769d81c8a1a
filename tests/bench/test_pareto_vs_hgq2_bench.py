"""benchmarks/pareto_vs_hgq2.py without HGQ2's stack: how the HGQ2 side's ramped and constant-beta candidates
are pooled and charged, and that the committed markdown is what the committed JSON renders to."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import pareto_vs_hgq2 as bench

ROOT = Path(__file__).resolve().parents[2]


def _p(val: float, test: float, lut: int, **kw: object) -> dict[str, object]:
    return {"val_acc": val, "test_acc": test, "lut": lut, "ff": 0, "epoch": 1, "ebops": 1.0,
            "bit_exact_test": True, **kw}


def test_each_level_is_charged_to_the_stronger_hgq2_front() -> None:
    ramped = [_p(0.90, 0.90, 1000, kind="ramped", beta_max=1e-3), _p(0.96, 0.97, 1600, kind="ramped", beta_max=1e-3)]
    const = [_p(0.93, 0.95, 1200, kind="constant", beta=1e-4), _p(0.99, 0.91, 1500, kind="constant", beta=1e-4)]
    fr = bench.hgq2_fronts(ramped + const)
    assert [p["lut"] for p in fr["ramped"]] == [1000, 1600]
    assert [p["lut"] for p in fr["constant"]] == [1200, 1500]
    # pooled on validation, the 1,600-LUT ramped point (the only one at 97 % test) is dominated by 1,500
    assert [p["lut"] for p in fr["pooled"]] == [1000, 1200, 1500]
    rows = {r["test_acc"]: r for r in bench.compare([_p(0.9, 0.96, 800, label="x", beta=1e-3)], ramped + const)}
    assert sorted(rows) == [0.90, 0.91, 0.95, 0.97]  # 0.97: only the ramped front reaches it
    r = rows[0.95]
    assert (r["hgq2_lut_ramped"], r["hgq2_lut_constant"], r["hgq2_lut_pooled"], r["hgq2_lut"]) == (1600, 1200, 1200, 1200)
    assert r["hgq2_front"] == "pooled" and r["hgq2_run"] == "constant 0.0001" and r["ratio"] == 800 / 1200
    r = rows[0.97]
    assert (r["hgq2_lut_pooled"], r["hgq2_lut"], r["hgq2_front"], r["ratio"]) == (None, 1600, "ramped", None)
    assert rows[0.90]["hgq2_run"] == "ramped to 0.001" and rows[0.90]["hgq2_lut"] == 1000


def test_results_without_kind_are_ramped_runs() -> None:
    pts = [_p(0.9, 0.9, 1000, beta_max=1e-4), _p(0.95, 0.93, 2000, beta_max=1e-4)]
    fr = bench.hgq2_fronts(pts)
    assert fr["ramped"] == fr["pooled"] and fr["constant"] == []
    rows = bench.compare([_p(0.9, 0.95, 500, label="x", beta=1e-3)], pts)
    assert [r["hgq2_lut"] for r in rows] == [1000, 2000] and {r["hgq2_front"] for r in rows} == {"pooled"}


def test_committed_markdown_is_what_the_committed_json_renders() -> None:
    res = json.loads((ROOT / "benchmarks" / "results" / "pareto_vs_hgq2.json").read_text())
    md = (ROOT / "benchmarks" / "results" / "pareto_vs_hgq2.md").read_text()
    assert bench.markdown(res) == md, ("benchmarks/results/pareto_vs_hgq2.md is stale: rerun "
                                       "`.venv/bin/python -m benchmarks.pareto_vs_hgq2 --sides none` "
                                       "(every side then read from the cache or the committed JSON)")
    for name, r in res["datasets"].items():
        if r.get("kdhw") and r.get("hgq2"):
            assert bench.compare(r["kdhw"]["points"], r["hgq2"]["points"]) == r["ratio"], name


def test_committed_sections_are_taken_only_for_their_data_set(tmp_path, monkeypatch) -> None:
    """A section written before sections recorded their ``data`` is digits or the mnist1d lookalike: the
    latter is never read back as the real MNIST-1D's."""
    sec = {"kdhw": {"points": []}, "hgq2": {"points": []}}
    (tmp_path / "pareto_vs_hgq2.json").write_text(json.dumps({"datasets": {"digits": sec, "mnist1d": sec}}))
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert bench.committed("digits", "kdhw", False) == {"points": []}
    assert bench.committed("mnist1d", "kdhw", False) is None
    real = {**sec, "data": bench.KDHW["mnist1d"]["data"]}
    (tmp_path / "pareto_vs_hgq2.json").write_text(json.dumps({"datasets": {"mnist1d": real}}))
    assert bench.committed("mnist1d", "hgq2", False) == {"points": []}
    assert bench.committed("mnist1d", "hgq2", True) is None
