"""``kdhw pareto`` end to end on a tiny grid: points trained (scratch and KD, paired), synthesized, the front
verified bit-exact through kdhw.flows.to_hardware, a board picked, an impossible board refused with the smallest point
named, resume; ``kdhw run`` with ``student.auto``; and bad input.

Why a data set of its own: the digits students of the other tests read 64 pixels, and their resource-aware
versions after a few epochs still synthesize to ~3,000 LUTs (yosys for each point, C-sim for each front
point).  Digits classes 0-3 pooled to 4x4 pixels give students of a few hundred LUTs, so every stage runs
for real on designs that take seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdhw.cli import main

pytestmark = pytest.mark.slow

STUDENT = {"input": {"bits": 4, "int_bits": 1, "signed": False}, "output": {"bits": 6},
           "layers": [{"type": "dense", "units": 4}, {"type": "relu"}, {"type": "dense", "units": 4}]}


def _cfg(data: Path, **over: dict) -> dict:
    base = {
        "data": {"dataset": "npz", "path": str(data)},
        "teacher": {"arch": "mlp", "hidden": 16, "epochs": 3, "patience": 3},
        "student": STUDENT,
        "distill": {"epochs": 3},
        # input_noise []: the distill section's augmentation (none), so 4 epochs prune something
        "pareto": {"betas": [0.001], "epochs": 4, "lr": 0.05, "verify_random_inputs": 40, "sim_rows": 8,
                   "input_noise": [], "search": {}, "seeds": 1, "budget_min": 0},
    }
    return {**base, **over}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits 0-3, 2x2 average-pooled to 16 features in [0, 1] (ufixed<4,1> rounds them, never clips)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < 4
    x = d.images[keep].reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16) / 16.0
    p = tmp_path_factory.mktemp("tiny") / "digits4.npz"
    np.savez(p, x=x.astype(np.float32), y=d.target[keep])
    return p


@pytest.fixture()
def boards_dir(tmp_path, monkeypatch):
    """The catalog plus a Xilinx board far too small for any student (fails without extra synthesis)."""
    src = Path(__file__).resolve().parents[2] / "boards"
    d = tmp_path / "boards"
    shutil.copytree(src, d)
    tiny_board = yaml.safe_load((d / "pynq-z2.yaml").read_text())
    tiny_board.update(name="tiny", lut=5, ff=10)
    (d / "tiny.yaml").write_text(yaml.safe_dump(tiny_board))
    monkeypatch.setenv("KDHW_BOARDS_DIR", str(d))
    return d


def test_pareto_end_to_end(tmp_path, tiny, boards_dir, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(tiny)))
    out = tmp_path / "out"
    rc = main(["pareto", str(cfg), "--out", str(out), "--board", "pynq-z2", "--board", "tiny", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("kdhw pareto: error: board tiny: no point of the front fits (5 LUT")
    assert "the smallest point found is s0_b0.001_" in err[0] and " LUT / " in err[0]
    res = json.loads((out / "pareto.json").read_text())
    pts = {p["id"]: p for p in res["points"]}
    assert len(pts) == 2 and {p["kind"] for p in pts.values()} == {"scratch", "kd"}
    assert all(p["lut"] > 0 and p["spec"]["layers"][0]["weight_frac_bits"] is not None for p in pts.values())
    # learned precision pruned something: fewer live weights than weights, and EBOPs recorded per point
    assert all(0 < p["live_weights"] < p["weights"] and p["ebops"] > 0 for p in pts.values())
    front = [pts[i] for i in res["front"]]
    assert front and all(p["pareto"] and p["bit_exact"] is True for p in front)
    assert all(p["verify"]["levels"][lv]["exact_rows"] == p["verify"]["rows"] for p in front
               for lv in ("brevitas", "csim", "rtl"))
    assert all(p["verify"]["levels"]["rtl_sim"]["exact_rows"] == 8 for p in front)
    assert all((out / p["dir"] / "hls" / "kdhw_hls.json").is_file() for p in front)
    pynq = next(b for b in res["boards"] if b["board"] == "pynq-z2")
    best = max(front, key=lambda p: (p["val_acc"], -p["lut"]))
    assert pynq["pick"] == best["id"]
    pair = res["pairs"][0]  # scratch and KD of the same point, side by side
    assert pair["scratch"]["id"] != pair["kd"]["id"]
    assert pair["kd_minus_scratch_test"] == pytest.approx(pair["kd"]["test_acc"] - pair["scratch"]["test_acc"])
    for f in ("pareto.md", "pareto.png"):
        assert (out / f).stat().st_size > 0
    # resume: nothing is trained or verified again, same result; a board that fits exits 0
    rc = main(["pareto", str(cfg), "--out", str(out), "--board", "pynq-z2", "--no-progress"])
    assert rc == 0
    res2 = json.loads((out / "pareto.json").read_text())
    assert res2["grid"]["executed"] == 0 and res2["grid"]["resumed"] == 2
    assert [p["test_acc"] for p in res2["points"]] == [p["test_acc"] for p in res["points"]]
    assert [p["bit_exact"] for p in res2["points"]] == [p["bit_exact"] for p in res["points"]]
    # a board whose pins the parallel ports exceed: the same point fits as a stream form, named in the pick
    import dataclasses

    from kdhw.boards import load_board
    from kdhw.flows.pareto import pick_for_boards

    pinned = dataclasses.replace(load_board("pynq-z2"), name="pynq-40-pins", io_pins=40)
    pick = pick_for_boards(res2["points"], [pinned], out, "parallel", log=lambda *a: None)[0]
    assert pick["pick"] == best["id"] and pick["form"].startswith("stream p="), pick
    cands = pick["checked"][0]["candidates"]
    assert cands[0]["label"] == "parallel" and cands[0]["why"].startswith("pins ")
    chosen = next(c for c in cands if c["verdict"] == "chosen")
    assert chosen["pins"] <= 40 and chosen["synthesis"]["lut"] == pick["lut"] > 0
    # pareto.seeds: 2 keeps the first seed's tasks (resumed) and trains a paired second seed beside them
    cfg.write_text(yaml.safe_dump(_cfg(tiny, pareto={**_cfg(tiny)["pareto"], "seeds": 2})))
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res3 = json.loads((out / "pareto.json").read_text())
    assert res3["grid"]["executed"] == 2 and res3["grid"]["resumed"] == 2 and res3["seeds"] == 2
    assert sorted(p["seed"] for p in res3["points"]) == [0, 0, 1, 1]
    assert {p["id"] for p in res3["points"]} >= set(pts)
    assert all("_seed1_" in p["id"] for p in res3["points"] if p["seed"] == 1)
    assert sorted((r["seed"], r["scratch"]["id"] != r["kd"]["id"]) for r in res3["pairs"]) == [(0, True), (1, True)]
    # pareto.input_noise (default: one level, 0.1 x the training inputs' std): one training per level and
    # point; the first level keeps its keys when levels are added, so a run resumes
    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.recipe import input_noise

    assert validate({k: v for k, v in _cfg(tiny).items() if k != "pareto"}).pareto["input_noise"] == [0.1]
    x_train = load_dataset(validate(_cfg(tiny)).data).x_train
    assert res3["input_noise"] == [] and all(p["input_noise"] is None for p in res3["points"])
    cfg.write_text(yaml.safe_dump(_cfg(tiny, pareto={**_cfg(tiny)["pareto"], "input_noise": [0.1]})))
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res4 = json.loads((out / "pareto.json").read_text())
    assert res4["grid"]["executed"] == 2 and res4["input_noise"] == [0.1]
    assert all(p["augment_noise"] == input_noise(x_train, 0.1) > 0 for p in res4["points"])
    cfg.write_text(yaml.safe_dump(_cfg(tiny, pareto={**_cfg(tiny)["pareto"], "input_noise": [0.1, 0]})))
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res5 = json.loads((out / "pareto.json").read_text())
    assert res5["grid"]["executed"] == 2 and res5["grid"]["resumed"] == 2
    quiet = [p for p in res5["points"] if p["input_noise"] == 0]
    assert len(quiet) == 2 and all(p["augment_noise"] == 0 and "_n0_" in p["id"] for p in quiet)
    assert sorted(r["input_noise"] for r in res5["pairs"]) == [0, 0.1]


def test_search_dimensions_expand_every_student_spec() -> None:
    from kdhw.config import validate
    from kdhw.flows.pareto import _label, point_specs

    cfg = validate(_cfg(Path("unused.npz"), pareto={"search": {"input_bits": [2, 3], "act_bits": [3, 4]}}))
    specs = point_specs(cfg)
    assert [(s["input"]["bits"], s["act_bits"]) for s in specs] == [(2, 3), (2, 4), (3, 3), (3, 4)]
    assert all(s["input"]["int_bits"] == 1 and not s["input"]["signed"] for s in specs)  # only the width moves
    assert _label(specs[1], ("input_bits", "act_bits")) == "4-4 in2 a4"


def test_search_order_spreads_every_prefix_over_the_grid() -> None:
    from kdhw.flows.pareto import search_order

    order = search_order((4, 6, 1))
    assert sorted(order) == [(i, j, 0) for i in range(4) for j in range(6)]  # each candidate once
    assert order[0] == (2, 2, 0)  # the middle first
    corners = {(0, 0, 0), (0, 5, 0), (3, 0, 0), (3, 5, 0)}
    assert set(order[1:5]) == corners  # then the extremes: the front's two ends are reached early
    firsts = order[:8]  # any early stop has seen every input width and both halves of the beta range
    assert {c[0] for c in firsts} == {0, 1, 2, 3} and {c[1] < 3 for c in firsts} == {True, False}
    assert search_order((1,)) == [(0,)] and search_order((0, 3)) == []


def test_a_deadline_stops_new_tasks_and_a_rerun_goes_on(tmp_path) -> None:
    import time

    from kdhw.flows.grid import Grid

    def task(t: dict, shared: dict) -> dict:
        time.sleep(0.05)
        return {"v": t["key"]}

    tasks = [{"key": f"t{i}"} for i in range(4)]
    with Grid(1, None, False) as g:
        res = g.run(task, tasks, {}, tmp_path / "r.jsonl", deadline=time.perf_counter() + 0.08)
    assert [r is not None for r in res] == [True, True, False, False]  # the second started before the deadline
    with Grid(1, None, False) as g:
        res = g.run(task, tasks, {}, tmp_path / "r.jsonl")
        assert g.stats.executed == 2 and g.stats.resumed == 2
    assert [r["v"] for r in res] == ["t0", "t1", "t2", "t3"]


def test_pareto_budget_stops_the_search_and_a_rerun_goes_on(tmp_path, tiny, capsys) -> None:
    """A budget spent after the first candidate: one point trained, the front and pareto.md say the search
    stopped; the same --out without a budget resumes it and trains the other searched input width."""
    base = _cfg(tiny)
    pareto = {**base["pareto"], "kd": False, "search": {"input_bits": [3, 4]}, "budget_min": 0.001}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**base, "pareto": pareto}))
    out = tmp_path / "out"
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    res = json.loads((out / "pareto.json").read_text())
    s = res["search"]
    assert s["candidates_total"] == 2 and s["candidates"] == 1 and s["stopped_by_budget"] is True
    assert s["dimensions"] == {"input_bits": [3, 4], "beta": [0.001], "seed": [0]}
    assert len(res["points"]) == 1 and res["points"][0]["bit_exact"] is True
    assert "2 candidates" in (out / "pareto.md").read_text() and "budget 0.001 min" in (out / "pareto.md").read_text()
    cfg.write_text(yaml.safe_dump({**base, "pareto": {**pareto, "budget_min": 0}}))
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res2 = json.loads((out / "pareto.json").read_text())
    assert res2["grid"]["resumed"] == 1 and res2["grid"]["executed"] == 1 and not res2["search"]["stopped_by_budget"]
    assert sorted(p["spec"]["input"]["bits"] for p in res2["points"]) == [3, 4]
    assert sorted(p["label"] for p in res2["points"]) == ["4-4 in3", "4-4 in4"]


def test_pareto_with_a_transfer_set_distills_by_function_matching(tmp_path, tiny, capsys) -> None:
    """A label budget and a network teacher: each candidate trains scratch, scratch_aug and kd as the recipe
    plans them (function matching: the augmented arms longer, on augmented and mixed batches), and
    pareto.md gives the teacher's share, KD − scratch_aug, per candidate."""
    from kdhw.train.recipe import FM_EPOCHS_FACTOR

    base = _cfg(tiny)
    conf = {**base, "data": {**base["data"], "labels": {"fraction": 0.5}},
            "pareto": {**base["pareto"], "epochs": 2}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    out = tmp_path / "out"
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    res = json.loads((out / "pareto.json").read_text())
    assert res["search"]["recipe"]["name"] == "function_matching"
    assert res["search"]["arms_per_candidate"] == ["scratch", "scratch_aug", "kd"]
    by = {p["kind"]: p for p in res["points"]}
    assert set(by) == {"scratch", "scratch_aug", "kd"}
    assert by["scratch"]["epochs"] == 2 and by["kd"]["epochs"] == by["scratch_aug"]["epochs"] == 2 * FM_EPOCHS_FACTOR
    assert by["kd"]["augment_noise"] > 0 and by["scratch_aug"]["augment_noise"] == by["kd"]["augment_noise"]
    pair = res["pairs"][0]
    assert pair["teacher_share_test"] == pytest.approx(by["kd"]["test_acc"] - by["scratch_aug"]["test_acc"])
    md = (out / "pareto.md").read_text()
    assert "teacher's share: KD − scratch_aug" in md and "x scratch/scratch_aug/kd" in md
    assert all(p["bit_exact"] is True for p in res["points"] if p["pareto"])


def test_pareto_keeps_several_checkpoints_along_each_ramp(tmp_path, tiny, capsys) -> None:
    """pareto.checkpoints: 3: one training per arm leaves up to three candidates along its beta ramp, each
    with its own epoch, files, synthesis and record; the front is drawn over all of them and verified, and a
    rerun resumes the trainings instead of repeating them."""
    from kdhw.flows.pareto import CKPT_FROM

    base = _cfg(tiny)
    conf = {**base, "pareto": {**base["pareto"], "kd": False, "epochs": 10, "betas": [0.01], "checkpoints": 3}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    out = tmp_path / "out"
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    res = json.loads((out / "pareto.json").read_text())
    pts = res["points"]
    assert res["search"]["trainings"] == 1 and res["search"]["checkpoints_per_training"] == 3
    assert 2 <= len(pts) <= 3 and len({p["id"] for p in pts}) == len(pts)
    epochs = [p["checkpoint_epoch"] for p in pts]
    assert len(set(epochs)) == len(pts) and min(epochs) >= int(CKPT_FROM * 10)
    for p in pts:  # each candidate its own student and QONNX file, and its own place on the cost axis
        assert p["id"].endswith(f"_e{p['checkpoint_epoch']}") and (out / p["arm"]).is_file() and (out / p["onnx"]).is_file()
    by_cost = sorted(pts, key=lambda p: p["ebops"])
    assert all(a["val_acc"] < b["val_acc"] for a, b in zip(by_cost, by_cost[1:]))  # the run's own front
    assert all(p["bit_exact"] is True for p in pts if p["pareto"])
    assert "up to 3 checkpoints along each training's beta ramp" in (out / "pareto.md").read_text()
    assert main(["pareto", str(cfg), "--out", str(out), "--no-progress"]) == 0
    res2 = json.loads((out / "pareto.json").read_text())
    assert res2["grid"]["resumed"] == 1 and res2["grid"]["executed"] == 0
    assert [p["id"] for p in res2["points"]] == [p["id"] for p in pts]


def test_ramp_checkpoints_keep_the_runs_own_front_spread_by_rank() -> None:
    from kdhw.flows.pareto import ramp_checkpoints

    seen = [{"epoch": e, "val_acc": a, "ebops": c} for e, a, c in
            [(3, 0.50, 100.0), (4, 0.70, 300.0), (5, 0.60, 400.0), (6, 0.80, 500.0), (7, 0.90, 900.0),
             (8, 0.90, 900.0), (9, 0.85, 950.0), (10, 0.55, 200.0)]]
    front = ramp_checkpoints(seen, 10)
    assert [e["epoch"] for e in front] == [3, 10, 4, 6, 7]  # by EBOPs; 5, 9 dominated; 8 ties 7, the earlier kept
    assert [e["epoch"] for e in ramp_checkpoints(seen, 3)] == [3, 4, 7]  # both ends and the middle
    assert [e["epoch"] for e in ramp_checkpoints(seen, 1)] == [7]  # one: the most accurate


def test_pareto_refuses_a_search_it_cannot_run(tmp_path, tiny, capsys) -> None:
    """An unknown search dimension, a budget too small for one candidate, a transfer set nothing reads: one
    line each, exit 2, nothing written."""
    base = _cfg(tiny)
    cfg = tmp_path / "cfg.yaml"
    cases = [({**base, "pareto": {**base["pareto"], "search": {"depth": [1, 2]}}},
              "pareto.search: unknown dimension 'depth'; allowed: input_bits, act_bits, weight_bits"),
             ({**base, "pareto": {**base["pareto"], "epochs": 5000, "budget_min": 1e-4}},
              "pareto.budget_min = 0.0001 (0 s) cannot train one candidate: its 2 arm(s) of 5000 epochs"),
             ({**base, "data": {**base["data"], "labels": {"fraction": 0.5}}, "pareto": {**base["pareto"], "kd": False}},
              "but no teacher reads it (pareto.kd is false)")]
    for conf, msg in cases:
        cfg.write_text(yaml.safe_dump(conf))
        rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err
        assert not (tmp_path / "o").exists()


def test_pareto_bad_input(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz")))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o"), "--board", "nosuchboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown board 'nosuchboard'; known:" in err[0]
    assert not (tmp_path / "o").exists()
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [-1]})))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pareto.betas must be a non-empty list of numbers >= 0" in err[0]
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [1e-3], "seeds": 0})))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pareto.seeds must be >= 1, got 0" in err[0]
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [1e-3], "input_noise": [0.1, -1]})))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pareto.input_noise must be a list of distinct numbers in [0, 1]" in err[0]
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [1e-3], "input_noise": [0.1, 0.1]})))
    assert main(["pareto", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "got [0.1, 0.1]" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [1e-3], "checkpoints": -1})))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pareto.checkpoints = -1 must be in [0, 64]" in err[0]
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", pareto={"betas": [1e-3], "granularity": "bit"})))
    rc = main(["pareto", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pareto.granularity = 'bit' is not allowed; choose one of: weight, channel" in err[0]
    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "unused.npz", student={**STUDENT, "resource": {"beta": 1e-3,
                                                                                                 "betta": 1}})))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown key 'student.resource.betta'; allowed: beta, epochs" in err[0]
    assert not (tmp_path / "o").exists()


def test_run_with_auto_student(tmp_path, tiny, capsys) -> None:
    """``student: {auto: {board: B}}``: kdhw run trains the grid, exports the picked front point like any run
    student (bit-exact), and says which point and why."""
    base = _cfg(tiny)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**base, "student": {**STUDENT, "auto": {"board": "pynq-z2"}},
                                   "pareto": {**base["pareto"], "kd": False},
                                   "verify": {"random_inputs": 40}, "rtl": {"sim_rows": 8},
                                   "report": {"boards": []}}))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["verify"]["bit_exact"] is True and rep["verify"]["levels"]["csim"]["exact_rows"] == rep["verify"]["rows"]
    assert rep["auto"]["board"] == "pynq-z2" and rep["auto"]["point"] in rep["auto"]["front"]
    assert rep["chosen"]["reason"].startswith("pareto point ")
    assert rep["auto"]["spec"]["layers"][0]["weight_frac_bits"] is not None


def test_run_with_resource_student(tmp_path, tiny, capsys) -> None:
    """``student.resource`` in kdhw run: both arms train resource-aware, each is folded with its own learned
    precisions (each checkpoint rebuilds exactly the arm it names), and the exported one is bit-exact."""
    import torch

    from kdhw.train.distill import student_input
    from kdhw.train.student import load_student

    base = _cfg(tiny)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**base, "student": {**STUDENT, "resource": {"beta": 0.001}},
                                   "distill": {"epochs": 4, "lr": 0.05}, "verify": {"random_inputs": 40},
                                   "rtl": {"enabled": False}, "report": {"boards": []}}))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "run"
    rep = json.loads((run / "report.json").read_text())
    assert rep["verify"]["bit_exact"] is True and rep["verify"]["levels"]["csim"]["exact_rows"] == rep["verify"]["rows"]
    x = np.load(run / "verify_inputs.npy")[:rep["data"]["test"]]
    y = np.load(run / "verify_labels.npy")[:rep["data"]["test"]]
    for arm in ("scratch", "kd"):
        info = rep["students"][arm]["info"]["resource"]
        assert info["beta"] == 0.001 and 0 < info["live_weights"] < info["weights"]
        m = load_student(run / f"student_{arm}.pt")
        with torch.no_grad():
            acc = float((m(torch.from_numpy(student_input(x, STUDENT))).argmax(1).numpy() == y).mean())
        assert acc == rep["students"][arm]["test_acc"], arm


def test_distill_and_sweep_verbs_fold_resource_students(tmp_path, tiny) -> None:
    """``kdhw distill`` and ``kdhw sweep`` on a config with ``student.resource`` save every arm folded with its
    own learned precisions: each checkpoint loads as a brevitas student and reproduces its arm's accuracy."""
    import torch

    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.distill import student_input
    from kdhw.train.student import load_student

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**_cfg(tiny), "student": {**STUDENT, "resource": {"beta": 0.001}},
                                   "distill": {"epochs": 4, "lr": 0.05}}))
    assert main(["distill", str(cfg), "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert main(["sweep", str(cfg), "--param", "distill.temperature", "--values", "2", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    data = load_dataset(validate({"data": {"dataset": "npz", "path": str(tiny)}}).data)
    x = torch.from_numpy(student_input(data.x_test, STUDENT))

    def acc(pt: Path) -> float:
        with torch.no_grad():
            return float((load_student(pt)(x).argmax(1).numpy() == data.y_test).mean())

    arms = json.loads((tmp_path / "d" / "distill.json").read_text())["arms"]
    for arm in ("scratch", "kd"):
        assert acc(tmp_path / "d" / f"student_{arm}.pt") == arms[arm]["test_acc"], arm
    runs = [json.loads(ln) for ln in (tmp_path / "s" / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 and all(acc(tmp_path / "s" / r["arm"]) == r["test_acc"] for r in runs)
    assert {r["kind"]: r["test_acc"] for r in runs}["scratch"] == arms["scratch"]["test_acc"]  # same arm, both verbs


def test_the_search_verbs_train_on_one_torch_thread() -> None:
    """``run_pareto`` and ``run_sweep`` called from Python hold torch at one intra-op thread, as the CLI does,
    and give the caller's setting back."""
    import torch

    from kdhw.flows.pareto import run_pareto
    from kdhw.flows.sweep import run_sweep
    from kdhw.util.runtime import in_torch_threads

    seen = []

    @in_torch_threads
    def call() -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        call()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert run_pareto.__wrapped__ is not None and run_sweep.__wrapped__ is not None
