"""Distillation methods end to end: one-line config errors, the recipe options (cached vs online teacher,
float warm-up, FitNets stages, born-again generations, ensembles) and, for every method, the student it
produces going through QONNX export -> hls4ml -> bit-exact verification."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import dataset

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.train.distill import distill, train_arm
from kdhw.train.losses import METHODS, NEEDS_TEACHER
from kdhw.train.teacher import save_teacher, train_teacher

MLP = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "output": {"bits": 8}, "weight_bits": 4,
       "bias_bits": 16, "act_bits": 4,
       "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}
TEACHER = {"arch": "mlp", "hidden": 16, "epochs": 2, "patience": 2}


def dcfg(**kw: Any) -> dict[str, Any]:
    return validate({"distill": {"epochs": 2, "hint_epochs": 1, "generations": 1, **kw}}).distill


@pytest.fixture(scope="module")
def digits() -> Any:
    return dataset("digits")


@pytest.fixture(scope="module")
def teacher(digits: Any) -> tuple[nn.Module, np.ndarray, dict[str, Any]]:
    """(model, cached train logits, teacher config): a 2-epoch MLP teacher is enough to test plumbing."""
    from kdhw.train.teacher import teacher_logits

    tcfg = validate({"teacher": TEACHER}).teacher
    model, _ = train_teacher(tcfg, digits, progress=False)
    return model, teacher_logits(model, "mlp", digits)["train"], tcfg


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- config errors: one clear line each

def test_unknown_method_lists_the_allowed_ones() -> None:
    with pytest.raises(InputError) as e:
        validate({"distill": {"method": "fitnetz"}}, "c.yaml")
    assert _one_line(e).startswith("c.yaml: distill.method = 'fitnetz' is not allowed; choose one of: hinton, none,")
    for m in METHODS:
        assert m in str(e.value)


@pytest.mark.parametrize("method", sorted(NEEDS_TEACHER))
def test_method_without_teacher_is_refused_before_training(method: str, digits: Any) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method=method), digits, None, False, "c.yaml")
    assert _one_line(e) == f"c.yaml: distill.method = {method} needs a teacher (teacher section or teacher.path)"


@pytest.mark.parametrize("method", ["fitnets", "rkd"])
def test_hidden_layer_methods_refuse_logits_only(method: str, digits: Any, teacher: Any) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method=method), digits, teacher[1], False, "c.yaml")
    assert "needs the teacher network (its hidden layers), but only cached teacher logits were given" in _one_line(e)


def test_mixup_needs_the_teacher_online(digits: Any, teacher: Any) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method="hinton", mixup_alpha=0.2), digits, teacher[1], False, "c.yaml")
    assert "mixup_alpha / augment_* > 0 with method hinton needs the teacher network" in _one_line(e)


def test_missing_hint_layer_names_the_student_layers(digits: Any, teacher: Any) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method="fitnets", hint_layer="relu9"), digits, teacher[1], False, "c.yaml",
                teacher=teacher[0])
    assert _one_line(e) == ("c.yaml: distill.hint_layer = 'relu9' is not a layer of the student; "
                            "choose one of: dense1, relu1, dense2, output_quant")


def test_bad_teacher_hint_layer_lists_the_teacher_layers(digits: Any, teacher: Any) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method="fitnets", teacher_hint_layer=9), digits, teacher[1], False, "c.yaml",
                teacher=teacher[0])
    msg = _one_line(e)
    assert "distill.teacher_hint_layer = 9 is not a hidden layer of the teacher" in msg and "2=ReLU" in msg


def test_ensemble_without_members_or_teacher_config(digits: Any, teacher: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method="ensemble"), digits, teacher[1], False, "c.yaml", teacher=teacher[0])
    assert "ensemble_size = 3 must train 2 more teachers but got no teacher config" in _one_line(e)
    with pytest.raises(InputError) as e:
        distill(MLP, dcfg(method="ensemble", teachers=[str(tmp_path / "nope.pt")]), digits, teacher[1], False,
                "c.yaml", teacher=teacher[0])
    assert _one_line(e) == f"c.yaml: distill.teachers: {tmp_path / 'nope.pt'}: teacher file not found"


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"epochs": 4, "float_warmup_epochs": 4}, r"distill.float_warmup_epochs = 4 must be in \[0, 3\]"),
        ({"method": "fitnets", "epochs": 5, "hint_epochs": 5}, r"distill.hint_epochs = 5 must be in \[0, 4\]"),
        ({"mixup_alpha": -1}, r"distill.mixup_alpha = -1 must be >= 0"),
        ({"tf_kd_prob": 0}, r"distill.tf_kd_prob = 0 must be in \(0, 1\]"),
        ({"smoothing": 1.0}, r"distill.smoothing = 1.0 must be in \[0, 1\)"),
        ({"generations": 0}, r"distill.generations must be >= 1"),
        ({"rkd_angle": -2}, r"distill.rkd_angle = -2 must be >= 0"),
        ({"teacher_hint_layer": [1]}, r"distill.teacher_hint_layer must be an integer index or a layer name"),
        ({"teachers": [3]}, r"distill.teachers must be a list of teacher.pt paths"),
        ({"hint_layer": 3}, r"distill.hint_layer must be a string"),
    ],
)
def test_distill_range_errors_name_file_and_key(raw: dict, match: str) -> None:
    with pytest.raises(InputError, match="^c.yaml: " + match) as e:
        validate({"distill": raw}, "c.yaml")
    _one_line(e)


# ---------------------------------------------------------------- recipe behaviour

class _Counting(nn.Module):
    """Wraps a teacher and counts forward calls (to tell cached from online teacher outputs)."""

    def __init__(self, inner: nn.Sequential) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_cached_logits_without_mixup_online_teacher_with_mixup(digits: Any, teacher: Any) -> None:
    t = _Counting(teacher[0])
    train_arm("kd", MLP, dcfg(epochs=1), digits, teacher[1], "hinton", False, teacher=t)
    assert t.calls == 0  # the pipeline's cached logits are read, the network never runs
    batches = math.ceil(len(digits.y_train) / 64)
    train_arm("kd", MLP, dcfg(epochs=2, mixup_alpha=0.4), digits, teacher[1], "hinton", False, teacher=t)
    assert t.calls == 2 * batches  # once per mixed batch


def test_scratch_arm_is_identical_whatever_the_method(digits: Any, teacher: Any) -> None:
    """Pairing: the scratch arm depends on the recipe, never on the distillation method."""
    a = distill(MLP, dcfg(method="none", epochs=1, mixup_alpha=0.3), digits, None, False)["scratch"]
    b = distill(MLP, dcfg(method="hinton", epochs=1, mixup_alpha=0.3), digits, teacher[1], False,
                teacher=teacher[0])["scratch"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_float_warmup_switches_quantizers_on_and_selects_only_quantized_epochs(digits: Any) -> None:
    from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjector

    from kdhw.train.loop import FloatWarmup
    from kdhw.train.student import build_student

    torch.manual_seed(0)
    m = build_student(MLP, (64,), 10)
    x = torch.rand(5, 64)
    m.eval()
    q = m(x)
    w = FloatWarmup(m, 1)
    w(0)
    l1, l2 = m.layers[1], m.layers[3]
    float_ref = torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    assert torch.allclose(m(x), float_ref, atol=1e-6) and not torch.allclose(m(x), q)
    w(1)
    assert torch.equal(m(x), q) and not w.active

    arm = train_arm("s", MLP, dcfg(epochs=3, float_warmup_epochs=2), digits, None, "none", False)
    assert arm.fit.best_epoch == 2 and arm.info["float_warmup_epochs"] == 2
    proxies = [p for p in arm.model.modules() if isinstance(p, WeightQuantProxyFromInjector)]
    assert proxies and not any(p.disable_quant for p in proxies)


def test_fitnets_adapter_stays_out_of_the_student(digits: Any, teacher: Any) -> None:
    arms = distill(MLP, dcfg(method="fitnets", epochs=3, hint_epochs=2), digits, teacher[1], False,
                   teacher=teacher[0])
    kd, scratch = arms["kd"], arms["scratch"]
    assert kd.model.state_dict().keys() == scratch.model.state_dict().keys()
    assert kd.info["hint_layer"] == "relu1" and kd.info["teacher_hint_layer"] == 4  # last hidden ReLU of the MLP
    assert kd.info["adapter_params"] == 8 * 16 + 16
    assert kd.fit.epochs_run == 3 and kd.fit.best_epoch == 2  # only stage-2 epochs are eligible


def test_born_again_generation_zero_is_scratch(digits: Any) -> None:
    arms = distill(MLP, dcfg(method="born_again", generations=2), digits, None, False)
    gens = arms["kd"].info["generations"]
    assert [g["generation"] for g in gens] == [0, 1, 2]
    assert gens[0]["test_acc"] == arms["scratch"].test_acc and gens[2]["test_acc"] == arms["kd"].test_acc


def test_ensemble_from_teacher_files(digits: Any, teacher: Any, tmp_path: Path) -> None:
    paths = []
    for s in (1, 2):
        tcfg = {**teacher[2], "seed": s}
        m, _ = train_teacher(tcfg, digits, progress=False)
        save_teacher(m, tcfg, digits.shape, digits.n_classes, tmp_path / f"t{s}.pt")
        paths.append(str(tmp_path / f"t{s}.pt"))
    arms = distill(MLP, dcfg(method="ensemble", teachers=paths, epochs=1), digits, teacher[1], False,
                   teacher=teacher[0])
    info = arms["kd"].info
    # recomputed from the three networks: each member's test accuracy and that of their mean soft targets
    from kdhw.train.loop import predict_logits
    from kdhw.train.losses import ensemble_logits
    from kdhw.train.teacher import load_teacher

    logits = [predict_logits(m, digits.x_test) for m in [teacher[0], *(load_teacher(p)[0] for p in paths)]]
    acc = [float((z.argmax(1) == digits.y_test).mean()) for z in logits]
    ens = ensemble_logits([torch.from_numpy(z) for z in logits], 1.0).numpy()
    assert info["members"] == 3 and info["member_test_acc"] == acc
    assert info["ensemble_test_acc"] == float((ens.argmax(1) == digits.y_test).mean())


# ---------------------------------------------------------------- every method's student is bit-exact

# recipe options ride along on some methods, so warm-up and online-teacher students are verified too
RECIPES: dict[str, dict[str, Any]] = {
    "none": {},
    "hinton": {"mixup_alpha": 0.4, "float_warmup_epochs": 1},
    "logits_mse": {},
    "kl_mae": {},
    "fitnets": {"epochs": 3, "hint_epochs": 1, "float_warmup_epochs": 1},
    "rkd": {"mixup_alpha": 0.4},
    "born_again": {"generations": 1},
    "tf_kd": {"float_warmup_epochs": 1},
    "ensemble": {"ensemble_size": 2},
    "label_smoothing": {},
    "pseudo_label": {"mixup_alpha": 0.4},
}


def test_recipes_cover_every_method() -> None:
    assert set(RECIPES) == set(METHODS)


@pytest.fixture(scope="module")
def method_students(digits: Any, teacher: Any) -> dict[str, Any]:
    out = {}
    for m, extra in RECIPES.items():
        arms = distill(MLP, dcfg(method=m, **extra), digits, teacher[1], False, teacher=teacher[0],
                       teacher_cfg=teacher[2])
        out[m] = arms["kd" if m != "none" else "scratch"].model
    return out


def test_every_method_student_takes_the_same_hardware_path(method_students: dict[str, Any], tmp_path: Path) -> None:
    """The loss never changes what the hardware stages see: every method's student exports to the same QONNX
    graph with the same quantizers as the label-only one (only weight values differ).  Bit-exactness through
    hls4ml and the RTL is proven once per layer type and back end (tests/test_bitexact.py, sim/), not once per
    loss; a method that changed the graph or a quantizer would fail here."""
    from conftest import hardware_signature

    from kdhw.hw.export import export_qonnx

    ref = hardware_signature(export_qonnx(method_students["none"], (64,), tmp_path / "none.onnx"))
    assert any(q[0] == "Quant" for q in ref) and all(q[3] for q in ref if q[0] == "Quant")  # po2 scales
    for m, model in method_students.items():
        assert hardware_signature(export_qonnx(model, (64,), tmp_path / f"{m}.onnx")) == ref, m
