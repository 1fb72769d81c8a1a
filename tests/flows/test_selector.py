"""Multi-student system: config errors, the report's arithmetic, and the selector plus a student going
through export -> hls -> bit-exact verification like any student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import dataset, off_grid_inputs

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.flows.select import route, save_system, student_specs, train_system
from kdhw.train.loop import predict_logits

STUDENTS = [
    {"layers": [{"type": "dense", "units": 4}, {"type": "relu"}, {"type": "dense", "units": 10}]},
    {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                {"type": "dense", "units": 10}], "weight_bits": 3},
]


def _cfg(students: list[dict[str, Any]] = STUDENTS) -> Any:
    return validate({"distill": {"method": "none", "epochs": 3},
                     "selector": {"students": students, "hidden": 6, "epochs": 3}}, "c.yaml")


def test_selector_needs_two_students() -> None:
    with pytest.raises(InputError, match=r"^c.yaml: selector.students needs at least 2 student specs, got 1$"):
        student_specs(_cfg(STUDENTS[:1]))


def test_selector_student_unknown_key() -> None:
    with pytest.raises(InputError, match=r"^c.yaml: selector.students\[1\]: unknown key 'layerz'; allowed: act_bits"):
        student_specs(_cfg([STUDENTS[0], {"layerz": []}]))


def test_selector_section_range_errors() -> None:
    with pytest.raises(InputError, match=r"^c.yaml: selector.weight_bits = 1 must be in \[2, 16\]$"):
        validate({"selector": {"weight_bits": 1}}, "c.yaml")
    with pytest.raises(InputError, match=r"^c.yaml: selector.students must be a list of student specs"):
        validate({"selector": {"students": [3]}}, "c.yaml")


def test_bad_student_spec_fails_before_training() -> None:
    bad = [STUDENTS[0], {"layers": [{"type": "dense", "units": 7}]}]
    with pytest.raises(InputError, match=r"selector.students\[1\]: the last dense layer has 7 units"):
        train_system(_cfg(bad), dataset("digits"), progress=False)


@pytest.fixture(scope="module")
def system() -> Any:
    data = dataset("digits")
    return train_system(_cfg(), data, progress=False), data


def test_system_report_is_consistent(system: Any) -> None:
    sysm, data = system
    rep = sysm.report
    picks = route(sysm.selector, data.x_test)
    xs = [data.x_test.reshape(len(data.x_test), -1), data.x_test]  # the MLP reads flat rows, the CNN images
    preds = np.stack([predict_logits(s.model, x).argmax(1) for s, x in zip(sysm.students, xs)], 1)
    want = float((preds[np.arange(len(picks)), picks] == data.y_test).mean())
    assert rep["system"]["test_acc"] == pytest.approx(want)
    assert sum(s["picked_fraction"] for s in rep["students"]) == pytest.approx(1.0)
    assert rep["system"]["params_total"] == rep["selector"]["params"] + sum(s["params"] for s in rep["students"])
    assert rep["selector"]["params"] == 64 * 6 + 6 + 6 * 2 + 2  # dense 64->6, dense 6->2 (one output per student)
    assert rep["students"][1]["weight_bits"] == 3
    assert rep["system"]["oracle_test_acc"] >= max(s["test_acc"] for s in rep["students"])


@pytest.mark.slow
def test_selector_and_a_student_export_and_verify_bit_exact(system: Any, tmp_path: Path) -> None:
    from kdhw.cli import main
    from kdhw.hw.hls import build_hls_project

    sysm, data = system
    save_system(sysm, data, tmp_path / "sys")
    assert {p.name for p in (tmp_path / "sys").iterdir()} == {"student_0.pt", "student_1.pt", "selector.pt",
                                                             "selector.json", "selector.md", "selector.png"}
    x = np.concatenate([data.x_test[:150].reshape(150, -1), off_grid_inputs((64,), 100, signed=False)])
    np.save(tmp_path / "x.npy", x)
    for name in ("selector", "student_1"):  # the selector (64 -> 2) and the conv student
        pt = tmp_path / "sys" / f"{name}.pt"
        assert main(["export", str(pt), "--out", str(tmp_path / f"{name}.onnx")]) == 0
        build_hls_project(tmp_path / f"{name}.onnx", tmp_path / name / "hls", part="xc7z020clg400-1",
                          clock_period_ns=10.0, compile_csim=False)
        (tmp_path / name / "student.pt").write_bytes(pt.read_bytes())
        xi = x if name == "selector" else x.reshape(len(x), 1, 8, 8)
        np.save(tmp_path / f"x_{name}.npy", xi)
        assert main(["verify", str(tmp_path / name), "--inputs", str(tmp_path / f"x_{name}.npy")]) == 0
