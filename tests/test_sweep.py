"""``kdhw sweep``: value parsing, per-value validation, one shared teacher, reused scratch arms, outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.sweep import add_sweep_parser, config_with, parse_values, run_sweep

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
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"sweep.json", "sweep.md", "sweep.png"}
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
