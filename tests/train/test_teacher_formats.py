"""Bring your own teacher: a network trained in plain torch (not by kdhw), handed over as ONNX, as TorchScript
and as a file of its logits, distils a student through each form; files that do not fit the data are
refused with one line and exit 2."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import dataset

from kdhw.cli import main
from kdhw.config import validate
from kdhw.train.data import load_dataset, load_digits_arrays
from kdhw.train.teacher import load_teacher, obtain_teacher, save_teacher, teacher_logits, write_logits_file

BUDGET = {"data": {"dataset": "digits", "labels": {"fraction": 0.1}}, "distill": {"epochs": 2, "epochs_factor": 1}}


def _onnx(model: torch.nn.Module, path: Path, shape: tuple[int, ...] = (1, 8, 8)) -> Path:
    torch.onnx.export(model, (torch.rand(2, *shape),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A teacher trained in plain torch on digits' training split, and the files it is handed over as."""
    d = dataset("digits")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    x, y = torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)
    for _ in range(80):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    p = tmp_path_factory.mktemp("outside")
    xa, _ = load_digits_arrays()  # every row of the data set, as kdhw loads it
    with torch.no_grad():
        write_logits_file(p / "teacher_logits.npz", xa, m(torch.from_numpy(xa)).numpy())
    torch.jit.save(torch.jit.trace(m, torch.rand(2, 1, 8, 8)), str(p / "teacher.ts"))
    five = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    return {"model": m, "dir": p, "onnx": _onnx(m, p / "teacher.onnx"), "torchscript": p / "teacher.ts",
            "logits": p / "teacher_logits.npz",
            "probs": _onnx(torch.nn.Sequential(m, torch.nn.Softmax(dim=1)), p / "probs.onnx"),
            "five": _onnx(five, p / "five.onnx"),
            "narrow": _onnx(torch.nn.Linear(32, 10), p / "narrow.onnx", (32,))}


@pytest.mark.parametrize("form, recipe", [("onnx", "function_matching"), ("torchscript", "function_matching"),
                                          ("logits", "plain")])
def test_outside_teacher_distils_a_student_through_each_form(form: str, recipe: str, outside: dict[str, Any],
                                                             tmp_path: Path) -> None:
    cfg = validate(BUDGET)
    data = load_dataset(cfg.data)
    tmodel, tcfg, _ = obtain_teacher(cfg.teacher, data, outside[form])
    with torch.no_grad():
        want = outside["model"](torch.from_numpy(data.x_test)).numpy()
    got = teacher_logits(tmodel, tcfg["arch"], data)["test"]
    assert np.abs(got - want).max() < 1e-4 and tcfg["outputs"] == "logits" and tcfg["arch"] == form
    # through the CLI verb, as a user hands it over
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(BUDGET))
    assert main(["distill", str(tmp_path / "c.yaml"), "--teacher", str(outside[form]), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "o" / "distill.json").read_text())
    kd = res["arms"]["kd"]
    assert kd["info"]["recipe"]["name"] == recipe and kd["info"]["transfer_rows"] == len(data.unlab)
    assert set(res["arms"]) == ({"scratch", "scratch_aug", "kd"} if recipe == "function_matching" else {"scratch", "kd"})
    assert res["teacher"]["arch"] == form and res["teacher"]["outputs"] == "logits"
    assert (tmp_path / "o" / "student_kd.pt").is_file()


def test_probabilities_are_detected_and_read_as_log_probabilities(outside: dict[str, Any]) -> None:
    data = dataset("digits")
    t, tcfg, _ = obtain_teacher({}, data, outside["probs"])
    assert tcfg["outputs"] == "probabilities"
    with torch.no_grad():
        p = torch.softmax(outside["model"](torch.from_numpy(data.x_val)), 1)
        z = t(torch.from_numpy(data.x_val))
    assert torch.allclose(torch.softmax(z, 1), p, atol=1e-5)


def test_foreign_teachers_survive_pickling_and_the_run_directory(outside: dict[str, Any], tmp_path: Path) -> None:
    """Ray ships the teacher to workers by pickling; a run saves it as teacher.pt for later verbs."""
    data = dataset("digits")
    for form in ("onnx", "torchscript", "logits"):
        t, tcfg, _ = obtain_teacher({}, data, outside[form])
        ref = teacher_logits(t, tcfg["arch"], data)["test"]
        assert np.array_equal(teacher_logits(pickle.loads(pickle.dumps(t)), tcfg["arch"], data)["test"], ref)
        save_teacher(t, tcfg, data.shape, data.n_classes, tmp_path / f"{form}.pt")
        t2, c2 = load_teacher(tmp_path / f"{form}.pt")
        assert np.array_equal(teacher_logits(t2, c2["arch"], data)["test"], ref) and c2["arch"] == form


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("teacher, extra, match", [
    ("five", {}, r"teacher.path \S*five.onnx outputs shape \(5,\) per row; the data has 10 classes"),
    ("narrow", {}, r"teacher.path \S*narrow.onnx expects inputs of shape \(32,\); the data rows have shape \(1, 8, 8\) "
                   r"\(64 values\)"),
    ("logits_partial", {}, r"teacher.path \S*partial.npz has no logits for \d+ of the \d+ val rows \(first: val row 0\)"),
    ("logits", {"distill": {"recipe": "function_matching"}},
     r"distill.recipe = function_matching needs a runnable teacher and a method that reads it, but the teacher is a "
     r"logits file"),
    ("onnx", {"distill": {"method": "rkd"}}, r"distill.method = rkd needs the teacher's hidden layers, but teacher.path "
                                             r"\S*teacher.onnx is an ONNX model \(onnxruntime\), outputs only"),
    ("junk", {}, r"junk.onnx: not a readable ONNX model"),
])
def test_a_teacher_that_does_not_fit_is_one_line_and_exit_2(teacher: str, extra: dict[str, Any], match: str,
                                                             outside: dict[str, Any], tmp_path: Path, capsys) -> None:
    if teacher == "logits_partial":  # logits for the training split only
        d = dataset("digits")
        write_logits_file(tmp_path / "partial.npz", d.x_train, np.zeros((len(d.x_train), 10)))
        path = tmp_path / "partial.npz"
    elif teacher == "junk":
        (path := tmp_path / "junk.onnx").write_bytes(b"not a model")
    else:
        path = outside[teacher]
    raw = {**BUDGET, "distill": {**BUDGET["distill"], **extra.get("distill", {})}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["distill", str(tmp_path / "c.yaml"), "--teacher", str(path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert re.search(match, _err(capsys))
    assert not (tmp_path / "o").exists()


def test_sweep_shares_an_onnx_teacher(outside: dict[str, Any], tmp_path: Path) -> None:
    from kdhw.flows.sweep import run_sweep

    cfg = validate({"data": {"dataset": "digits"}, "distill": {"epochs": 1}})
    res = run_sweep(cfg, "distill.temperature", [2], tmp_path / "o", teacher_path=str(outside["onnx"]),
                    log=lambda *_: None)
    assert res["teacher"]["arch"] == "onnx" and res["runs"][0]["kd_test"] is not None


@pytest.mark.slow
def test_run_with_a_label_budget_and_an_onnx_teacher_uses_the_recipe_and_reports_three_students(
        outside: dict[str, Any], tmp_path: Path) -> None:
    """The embedded default with only a label budget and a handed-over teacher: function matching, no other key."""
    from kdhw.config import load_config

    raw = load_config(None).to_dict()
    raw["data"]["labels"] = {"fraction": 0.1}
    raw["teacher"]["path"] = str(outside["onnx"])
    # shorter than the default (same recipe), and no RTL / hardware report: this test is about the students
    raw["distill"]["epochs"], raw["distill"]["epochs_factor"] = 3, 2
    raw["rtl"]["enabled"], raw["report"]["boards"], raw["verify"]["random_inputs"] = False, [], 100
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(rep["students"]) == {"scratch", "scratch_aug", "kd"}
    assert rep["students"]["kd"]["info"]["recipe"]["name"] == "function_matching"
    assert rep["students"]["kd"]["info"]["recipe"]["augmented"]["alpha"] == 0.9  # the default config pins no recipe key
    assert rep["teacher"]["handed_over"]["format"] == "ONNX model (onnxruntime)" and rep["teacher"]["params"] == 2410
    md = (tmp_path / "o" / "report.md").read_text()
    for row in ("| student scratch |", "| student scratch_aug |", "| student kd |", "the teacher's share (kd − scratch_aug)",
                "outputs read as logits", "Recipe: **function matching**",
                "exports the epoch that agrees best with the teacher on the 968 transfer rows"):
        assert row in md, row
    info = rep["students"]["kd"]["info"]
    assert info["checkpoint"]["by"] == "teacher agreement" and info["checkpoint"]["rows"] == info["transfer_rows"] == 968
    assert json.loads((tmp_path / "o" / "verify.json").read_text())["bit_exact"] is True
