"""``kdhw sweep``: value parsing, per-value validation, one shared teacher, reused scratch arms, outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.flows.sweep import add_sweep_parser, config_with, parse_values, run_sweep

SMALL = {"teacher": {"arch": "mlp", "hidden": 16, "epochs": 2, "patience": 2},
         "distill": {"epochs": 2}}


def test_values_take_the_type_of_the_key() -> None:
    assert parse_values("distill.temperature", "1,2.5, 4") == [1, 2.5, 4]
    assert parse_values("student.weight_bits", "2,3,4") == [2, 3, 4]
    assert parse_values("distill.method", "none,hinton,tf_kd") == ["none", "hinton", "tf_kd"]
    assert parse_values("distill.teacher_hint_layer", "-2,3") == [-2, 3]


@pytest.mark.parametrize(
    "param, values, match",
    [
        ("distill.temprature", "1,2", r"^--param 'distill.temprature' cannot be swept; choose one of: distill.method"),
        ("student.weight_bits", "2,x", r"^--values: 'x' is not an integer \(for student.weight_bits\)$"),
        ("distill.alpha", "0.5,zero", r"^--values: 'zero' is not a number \(for distill.alpha\)$"),
        ("distill.alpha", " , ", r"^--values is empty"),
        ("distill.alpha", "0.5,0.5", r"repeats a value"),
    ],
)
def test_bad_sweep_arguments_are_one_line(param: str, values: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_values(param, values)


def test_each_value_is_validated_like_a_config_file() -> None:
    cfg = validate(SMALL, "s.yaml")
    assert config_with(cfg, "distill.alpha", 0.9).distill["alpha"] == 0.9
    with pytest.raises(InputError, match=r"^s.yaml \[distill.alpha=1.5\]: distill.alpha = 1.5 must be in \[0, 1\]$"):
        config_with(cfg, "distill.alpha", 1.5)
    with pytest.raises(InputError, match=r"^s.yaml \[distill.method=fitnetz\]: distill.method = 'fitnetz' is not"):
        config_with(cfg, "distill.method", "fitnetz")


def test_bad_value_fails_before_the_teacher_is_trained(tmp_path: Path) -> None:
    cfg = validate(SMALL, "s.yaml")
    with pytest.raises(InputError, match=r"student.layers\[0\]: weight_bits = 1 must be an integer in \[2, 16\]"):
        run_sweep(cfg, "student.weight_bits", [4, 1], tmp_path / "o", log=lambda *_: None)
    assert not (tmp_path / "o").exists()


def test_temperature_sweep_shares_teacher_and_scratch(tmp_path: Path) -> None:
    cfg = validate(SMALL, "s.yaml")
    logs: list[str] = []
    res = run_sweep(cfg, "distill.temperature", [1, 4], tmp_path / "o", seeds=2, log=logs.append)
    assert sum("[teacher]" in line for line in logs) == 1
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"sweep.json", "sweep.md", "sweep.png", "runs.jsonl",
                                                           ".runs.jsonl.lock", "arms", "teacher.pt", "teacher.json"}
    # one task per scratch arm (2 seeds) and per distilled arm (2 values x 2 seeds), each with its checkpoint
    assert len((tmp_path / "o" / "runs.jsonl").read_text().splitlines()) == 6
    assert len(list((tmp_path / "o" / "arms").glob("*.pt"))) == 6 and res["grid"]["executed"] == 6
    assert (tmp_path / "o" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert saved["param"] == "distill.temperature" and len(saved["runs"]) == 4 and len(saved["table"]) == 2
    # temperature does not touch the scratch arm: the same two scratch students serve both values
    by_seed = {}
    for r in res["runs"]:
        by_seed.setdefault(r["seed"], set()).add(r["scratch_test"])
    assert all(len(v) == 1 for v in by_seed.values()) and set(by_seed) == {0, 1}
    md = (tmp_path / "o" / "sweep.md").read_text()
    assert "| 1 | hinton |" in md and "| 4 | hinton |" in md


def test_method_and_bits_sweep_through_the_cli_parser(tmp_path: Path, capsys) -> None:
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(yaml.safe_dump(SMALL))
    p = argparse.ArgumentParser(prog="kdhw")
    add_sweep_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["sweep", str(cfgp), "--param", "distill.method", "--values", "none,tf_kd",
                      "--out", str(tmp_path / "m"), "--no-progress"])
    assert a.fn(a) == 0
    res = json.loads((tmp_path / "m" / "sweep.json").read_text())
    none, tfkd = res["table"]
    assert none["kd_test_mean"] is None and tfkd["kd_test_mean"] is not None
    assert "| none | none |" in capsys.readouterr().out
    a = p.parse_args(["sweep", str(cfgp), "--param", "student.weight_bits", "--values", "2,4",
                      "--out", str(tmp_path / "b"), "--no-progress"])
    assert a.fn(a) == 0
    runs = json.loads((tmp_path / "b" / "sweep.json").read_text())["runs"]
    assert runs[0]["scratch_test"] != runs[1]["scratch_test"]  # bit width changes the scratch arm: retrained


def _runs(res: dict) -> list[dict]:
    """A sweep's runs without the timings (which differ between any two executions)."""
    return [{k: v for k, v in r.items() if "s_per_epoch" not in k} for r in res["runs"]]


def test_interrupted_sweep_resumes_and_a_changed_config_is_not_reused(tmp_path: Path) -> None:
    cfg = validate(SMALL, "s.yaml")
    out = tmp_path / "o"
    full = run_sweep(cfg, "distill.alpha", [0.5, 0.9], out, log=lambda *_: None)
    jl = out / "runs.jsonl"
    lines = jl.read_text().splitlines()
    assert len(lines) == 3  # scratch seed 0, then alpha 0.5 and 0.9
    jl.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed while writing the third line
    logs: list[str] = []
    again = run_sweep(cfg, "distill.alpha", [0.5, 0.9], out, log=logs.append)
    assert again["grid"]["executed"] == 1 and again["grid"]["resumed"] == 2
    assert any("reused" in line and "teacher.pt" in line for line in logs)  # the teacher is not retrained
    assert _runs(again) == _runs(full)

    longer = config_with(cfg, "distill.epochs", 3)
    changed = run_sweep(longer, "distill.alpha", [0.5, 0.9], out, log=lambda *_: None)
    assert changed["grid"]["executed"] == 3 and changed["grid"]["resumed"] == 0  # new keys: nothing stale reused
    assert len(jl.read_text().splitlines()) == 6


def test_born_again_from_a_checkpointed_scratch_arm_matches_one_process(tmp_path: Path) -> None:
    """The distilled tasks get their scratch arm back from its checkpoint; born-again's generation 0 is that
    network, so its result must equal distill() training both arms in one process."""
    from kdhw.train.data import load_dataset
    from kdhw.train.distill import distill
    from kdhw.train.teacher import load_teacher

    cfg = validate({**SMALL, "distill": {"epochs": 2, "generations": 1}}, "s.yaml")
    res = run_sweep(cfg, "distill.method", ["born_again"], tmp_path / "o", log=lambda *_: None)
    data = load_dataset(cfg.data)
    teacher, _ = load_teacher(tmp_path / "o" / "teacher.pt")
    arms = distill(cfg.student, config_with(cfg, "distill.method", "born_again").distill, data, None, False,
                   teacher=teacher)
    row = res["runs"][0]
    assert (row["scratch_test"], row["kd_test"]) == (arms["scratch"].test_acc, arms["kd"].test_acc)
    assert row["kd_info"]["generations"][1]["test_acc"] == arms["kd"].test_acc


def test_sweep_on_two_ray_workers_matches_the_sequential_sweep(tmp_path: Path, capsys) -> None:
    from kdhw.cli import main

    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(yaml.safe_dump({**SMALL, "distill": {"epochs": 2, "generations": 1}}))
    args = ["sweep", str(cfgp), "--param", "distill.method", "--values", "born_again,rkd", "--seeds", "2",
            "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "seq")]) == 0
    assert main(args + ["--out", str(tmp_path / "ray"), "--workers", "2"]) == 0
    assert "ray with 2 workers" in capsys.readouterr().out
    seq, par = (json.loads((tmp_path / d / "sweep.json").read_text()) for d in ("seq", "ray"))
    assert par["grid"]["mode"] == "ray" and par["grid"]["executed"] == 6  # 2 scratch + 2 methods x 2 seeds
    assert _runs(par) == _runs(seq)


def test_unreachable_cluster_is_one_line_before_any_training(tmp_path: Path, capsys) -> None:
    from kdhw.cli import main

    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(yaml.safe_dump(SMALL))
    rc = main(["sweep", str(cfgp), "--param", "distill.alpha", "--values", "0.5", "--out", str(tmp_path / "o"),
               "--address", "127.0.0.1:1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("kdhw sweep: error: --address 127.0.0.1:1: no Ray cluster answers there")
    assert not (tmp_path / "o").exists()
    rc = main(["sweep", str(cfgp), "--param", "distill.alpha", "--values", "0.5", "--out", str(tmp_path / "o"),
               "--workers", "-1"])
    assert rc == 2 and capsys.readouterr().err.startswith("kdhw sweep: error: --workers must be >= 0")


def test_second_sweep_into_a_busy_folder_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    from kdhw.flows.grid import jsonl_lock

    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "o"
    # the first sweep holds the folder (in-process here; test_grid covers a lock held by another process)
    with jsonl_lock(out / "runs.jsonl"):
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "kdhw.cli", "sweep", str(cfgp), "--param", "distill.alpha",
                            "--values", "0.5", "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "runs.jsonl: another kdhw process is writing to this file" in r.stderr
    assert {p.name for p in out.iterdir()} == {".runs.jsonl.lock"}  # no teacher trained, no arm written


def test_label_budget_sweep_gives_each_value_its_subset_and_transfer_set(tmp_path: Path) -> None:
    cfg = validate({**SMALL, "distill": {"epochs": 2, "alpha": 0.9, "epochs_factor": 1.5}}, "s.yaml")
    assert parse_values("data.labels.fraction", "0.1,1") == [0.1, 1]
    res = run_sweep(cfg, "data.labels.fraction", [0.1, 1], tmp_path / "o", seeds=2, log=lambda *_: None)
    by = {(r["value"], r["seed"]): r for r in res["runs"]}
    n_train = res["data"]["train"]  # the whole labelled split: the teacher is trained on it (handed over)
    from kdhw.train.data import apply_label_budget, load_dataset

    for seed in (0, 1):
        want = apply_label_budget(load_dataset(cfg.data), {"fraction": 0.1}, seed)
        assert by[(0.1, seed)]["kd_info"]["transfer_rows"] == len(want.unlab) == n_train - len(want.y_train)
        assert "transfer_rows" not in (by[(1, seed)]["kd_info"] or {})
    # a budget changes the scratch arm: one scratch task per (value, seed)
    assert len({r["scratch_key"] for r in res["runs"]}) == 4
    # with a transfer set the recipe is function matching, with its control trained as a task of its own
    for seed in (0, 1):
        fm, plain = by[(0.1, seed)], by[(1, seed)]
        assert fm["recipe"] == "function_matching" and fm["scratch_aug_test"] is not None
        assert fm["kd_info"]["recipe"]["augmented"]["epochs"] == 3 and (tmp_path / "o" / fm["scratch_aug_arm"]).is_file()
        assert plain["recipe"] == "plain" and plain["scratch_aug_test"] is None
    assert res["table"][0]["teacher_share_mean"] is not None and res["table"][1]["teacher_share_mean"] is None
    assert res["grid"]["tasks"] == 4 + 2 + 4  # scratch per (value, seed), scratch_aug per seed at 0.1, kd
    # seeds draw different label subsets, so the same value's scratch students differ
    assert by[(0.1, 0)]["scratch_test"] != by[(0.1, 1)]["scratch_test"] or \
        by[(0.1, 0)]["scratch_val"] != by[(0.1, 1)]["scratch_val"]
    with pytest.raises(InputError, match=r"data.labels.fraction = 1.5 must be a number in \(0, 1\]"):
        config_with(cfg, "data.labels.fraction", 1.5)
