"""Label budgets, transfer sets, augmentation and the QKD schedule: hand-computed values, one-line errors,
and the pieces of training that make arms paired (same label subset, same number of steps)."""

from __future__ import annotations

import gzip
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import dataset

from kdhw.cli import main
from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.train.augment import Augment, mixup, roll_1d, translate_2d
from kdhw.train.data import apply_label_budget, load_dataset, load_unlabeled
from kdhw.train.distill import distill, train_arm
from kdhw.train.loop import _epoch_order
from kdhw.train.losses import hard_ce, one_hot_like
from kdhw.train.teacher import teacher_logits, train_teacher

MLP = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "weight_bits": 4, "act_bits": 4,
       "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------- label budget

def test_fraction_budget_is_stratified_seeded_and_moves_the_rest_to_the_transfer_set() -> None:
    full = dataset("digits")
    n_train = len(full.y_train)
    a = apply_label_budget(dataset("digits"), {"fraction": 0.1}, 0)
    b = apply_label_budget(dataset("digits"), {"fraction": 0.1}, 0)
    c = apply_label_budget(dataset("digits"), {"fraction": 0.1, "seed": 5}, 0)
    counts = np.bincount(a.y_train, minlength=10)
    full_counts = np.bincount(full.y_train, minlength=10)
    assert counts.tolist() == [max(1, round(0.1 * k)) for k in full_counts]
    assert len(a.y_train) + len(a.unlab) == n_train
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    # every training row is either labelled or in the transfer set, none in both
    rows = {r.tobytes() for r in full.x_train}
    assert {r.tobytes() for r in a.x_train} | {r.tobytes() for r in a.unlab} == rows
    assert a.manifest["labels"] == {"fraction": 0.1, "seed": 0, "labelled": int(counts.sum()),
                                    "dropped": n_train - int(counts.sum())}
    assert len(a.y_val) == len(full.y_val) and len(a.y_test) == len(full.y_test)  # they keep their labels


def test_per_class_budget_and_its_bound() -> None:
    d = apply_label_budget(dataset("digits"), {"per_class": 3}, 0)
    assert np.bincount(d.y_train).tolist() == [3] * 10
    with pytest.raises(InputError, match=r"^c.yaml: data.labels.per_class = 1000 but class 0 has only \d+ training rows"):
        apply_label_budget(dataset("digits"), {"per_class": 1000}, 0, "c.yaml")


def test_val_budget_cuts_validation_to_the_training_share_and_leaves_training_alone() -> None:
    full = dataset("digits")
    a = apply_label_budget(dataset("digits"), {"fraction": 0.1}, 0)
    v = apply_label_budget(dataset("digits"), {"fraction": 0.1, "val": True}, 0)
    # the training subset and transfer set do not depend on the flag
    assert np.array_equal(a.x_train, v.x_train) and np.array_equal(a.unlab, v.unlab)
    # each class keeps round(share * its validation rows), share = the class's labelled share of training
    share = np.bincount(v.y_train, minlength=10) / np.bincount(full.y_train, minlength=10)
    want = [max(1, round(s * k)) for s, k in zip(share, np.bincount(full.y_val, minlength=10))]
    assert np.bincount(v.y_val, minlength=10).tolist() == want and sum(want) < 0.2 * len(full.y_val)
    # kept validation rows are real validation rows with their own labels; the rest are left out entirely
    pairs = {(r.tobytes(), int(y)) for r, y in zip(full.x_val, full.y_val)}
    assert all((r.tobytes(), int(y)) in pairs for r, y in zip(v.x_val, v.y_val))
    assert len(v.unlab) == len(a.unlab) and len(v.y_test) == len(full.y_test)
    assert v.manifest["val"] == sum(want) and v.manifest["labels"]["val_left_out"] == len(full.y_val) - sum(want)
    # per_class: the same share (3 of each class's training rows) of the validation rows, at least one
    p = apply_label_budget(dataset("digits"), {"per_class": 3, "val": True}, 0)
    assert 10 <= len(p.y_val) < len(full.y_val) // 3 and set(p.y_val.tolist()) == set(range(10))


@pytest.mark.parametrize("labels, match", [
    ({"fraction": 0}, r"data.labels.fraction = 0 must be a number in \(0, 1\]"),
    ({"fraction": 1.5}, r"data.labels.fraction = 1.5 must be a number in \(0, 1\]"),
    ({"fraction": 0.1, "per_class": 5}, r"data.labels needs exactly one of fraction"),
    ({}, r"data.labels needs exactly one of fraction"),
    ({"per_class": 0}, r"data.labels.per_class = 0 must be an integer >= 1"),
    ({"fractoin": 0.1}, r"unknown key 'data.labels.fractoin'; allowed: fraction, per_class, seed, val"),
    ({"fraction": 0.1, "val": "yes"}, r"data.labels.val = 'yes' must be true or false"),
])
def test_budget_errors_name_the_key(labels: dict, match: str) -> None:
    with pytest.raises(InputError, match="^c.yaml: " + match):
        validate({"data": {"labels": labels}}, "c.yaml")


def test_budget_outside_range_is_exit_2_one_line(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"labels": {"fraction": 1.2}}}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert _err_line(capsys).endswith("data.labels.fraction = 1.2 must be a number in (0, 1]")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- transfer-set files

def _idx(path: Path, arr: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data))


def test_unlabelled_files_of_each_kind_are_loaded_and_checked(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "u.npz", x=x)
    assert np.array_equal(load_unlabeled(tmp_path / "u.npz", (1, 8, 8)), x)
    np.savetxt(tmp_path / "u.csv", x.reshape(7, 64), delimiter=",")
    assert np.allclose(load_unlabeled(tmp_path / "u.csv", (1, 8, 8)), x, atol=1e-6)
    imgs = np.random.default_rng(1).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    _idx(tmp_path / "u-images-idx3-ubyte.gz", imgs)
    got = load_unlabeled(tmp_path / "u-images-idx3-ubyte.gz", (1, 8, 8))
    assert got.shape == (5, 1, 8, 8) and np.allclose(got[:, 0] * 255, imgs)


@pytest.mark.parametrize("make, match", [
    (lambda p: np.savez(p / "f.npz", x=np.zeros((4, 1, 8, 8)), y=np.arange(4)),
     r"f.npz: data.unlabeled holds labels \(a 'y' array\); a transfer set is inputs only"),
    (lambda p: np.savez(p / "f.npz", x=np.zeros((4, 1, 7, 7))),
     r"f.npz: data.unlabeled rows have shape \(1, 7, 7\), the labelled rows \(1, 8, 8\)"),
    (lambda p: np.savetxt(p / "f.csv", np.zeros((4, 65)), delimiter=","),
     r"f.csv: data.unlabeled rows have 65 columns, one more than the 64 samples of the labelled rows: a label column"),
    (lambda p: _idx(p / "f-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8)),
     r"data.unlabeled is a 1-D IDX file \(labels\); give the images file"),
])
def test_bad_transfer_files_are_one_line_exit_2(make: Any, match: str, tmp_path: Path, capsys) -> None:
    make(tmp_path)
    f = next(p for p in tmp_path.iterdir() if p.name.startswith("f"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dataset": "digits", "unlabeled": str(f)}}))
    assert main(["distill", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert re.search(match, _err_line(capsys))


def test_transfer_file_rows_join_the_dropped_labels(tmp_path: Path) -> None:
    extra = np.random.default_rng(2).random((11, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "u.npz", x=extra)
    cfg = validate({"data": {"dataset": "digits", "labels": {"fraction": 0.5}, "unlabeled": str(tmp_path / "u.npz")}})
    d = load_dataset(cfg.data)
    assert d.manifest["unlabeled"] == d.manifest["labels"]["dropped"] + 11 == len(d.unlab)
    assert np.array_equal(d.unlab[-11:], extra) and d.manifest["unlabeled_file"]["rows"] == 11


# ---------------------------------------------------------------- hard-label term on mixed batches

def test_hard_ce_ignores_unlabelled_rows() -> None:
    z = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=torch.float64)
    ce1 = -math.log(math.exp(2.0) / (math.exp(0.5) + math.exp(2.0) + 1.0))
    assert float(hard_ce(z, torch.tensor([-1, 1]))) == pytest.approx(ce1, rel=1e-9)
    assert float(hard_ce(z, torch.tensor([-1, -1]))) == 0.0
    # mixup targets: row 0 keeps 0.25 of a label (its partner was unlabelled), row 1 a full one
    y = torch.tensor([[0.25, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    ce0 = -math.log(math.exp(1.0) / (math.exp(1.0) + 1.0 + math.exp(-1.0)))
    assert float(hard_ce(z, y)) == pytest.approx((0.25 * ce0 + 1.0 * ce1) / 1.25, rel=1e-9)
    assert one_hot_like(torch.tensor([2, -1]), 3).tolist() == [[0, 0, 1], [0, 0, 0]]


# ---------------------------------------------------------------- augmentation

def test_roll_and_translate_by_hand() -> None:
    x = torch.arange(5.0).reshape(1, 1, 5).repeat(2, 1, 1)
    assert roll_1d(x, torch.tensor([1, -2])).tolist() == [[[4, 0, 1, 2, 3]], [[2, 3, 4, 0, 1]]]
    img = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert translate_2d(img, torch.tensor([1]), torch.tensor([0])).tolist() == [[[[0, 0, 0], [0, 1, 2], [3, 4, 5]]]]
    assert translate_2d(img, torch.tensor([0]), torch.tensor([-1])).tolist() == [[[[1, 2, 0], [4, 5, 0], [7, 8, 0]]]]


def test_augment_acts_in_data_shape_and_is_seeded() -> None:
    aug = Augment(shift=2, scale=0.1, noise=0.05)
    x = torch.rand(8, 40)  # flattened (1, 40) signals, as an MLP student reads them
    a = aug(x, (1, 40), torch.Generator().manual_seed(3))
    b = aug(x, (1, 40), torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert Augment()(x, (1, 40), torch.Generator()) is x
    only_scale = Augment(scale=0.5)(x, (1, 40), torch.Generator().manual_seed(0))
    ratio = only_scale / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per sample
    assert bool(((ratio[:, 0] >= 0.5 - 1e-6) & (ratio[:, 0] <= 1.5 + 1e-6)).all())
    xm, ym = mixup(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 0.75, torch.tensor([1, 0]))
    assert xm.flatten().tolist() == [0.25, 0.75] and ym.tolist() == [[0.75, 0.0], [0.25, 0.0]]


# ---------------------------------------------------------------- pairing: steps per epoch, arms

def test_epoch_order_cycles_to_the_requested_steps() -> None:
    g = torch.Generator().manual_seed(0)
    assert len(_epoch_order(10, 4, None, g)) == 10
    order = _epoch_order(10, 4, 7, g)
    assert len(order) == 28 and sorted(order[:10].tolist()) == list(range(10))
    assert torch.equal(_epoch_order(10, 4, 3, torch.Generator().manual_seed(1)),
                       torch.randperm(10, generator=torch.Generator().manual_seed(1)))


@pytest.fixture(scope="module")
def budget_setup() -> tuple[Any, Any, dict[str, np.ndarray]]:
    cfg = validate({"data": {"dataset": "digits", "labels": {"fraction": 0.1}},
                    "teacher": {"arch": "mlp", "hidden": 16, "epochs": 3, "patience": 3}})
    d = load_dataset(cfg.data)
    teacher, _ = train_teacher(cfg.teacher, d, progress=False)
    return d, teacher, teacher_logits(teacher, "mlp", d)


def _dcfg(**kw: Any) -> dict[str, Any]:
    return validate({"distill": {"epochs": 2, "recipe": "plain", **kw}}).distill


def test_distillation_reads_the_transfer_set_and_scratch_gets_equal_steps(budget_setup: Any) -> None:
    d, teacher, tl = budget_setup
    calls: dict[str, int] = {}

    class Count(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["rows"] = calls.get("rows", 0) + len(x)
            return self.inner(x)

    arms = distill(MLP, _dcfg(method="hinton"), d, tl["train"], False, teacher=teacher, teacher_unlab=tl["unlab"])
    assert arms["kd"].info["transfer_rows"] == len(d.unlab) and "transfer_rows" not in arms["scratch"].info
    # no cache for the transfer set: the teacher network runs once over labelled + transfer rows
    distill(MLP, _dcfg(method="hinton"), d, tl["train"], False, teacher=Count(teacher), scratch=arms["scratch"])
    assert calls["rows"] == len(d.y_train) + len(d.unlab)
    with pytest.raises(InputError, match="needs the teacher network or its logits on the transfer set"):
        distill(MLP, _dcfg(method="hinton"), d, tl["train"], False, scratch=arms["scratch"])
    # the labels-only arm takes as many optimizer steps per epoch as the arm that reads every row
    seen: list[int] = []

    def spy(m: Any, x: Any, y: Any, idx: Any) -> Any:
        seen.append(len(idx))
        return m(x).sum() * 0.0

    from kdhw.train.loop import fit
    steps = math.ceil((len(d.y_train) + len(d.unlab)) / 64)
    fit(torch.nn.Linear(64, 10), spy, d.x_train.reshape(len(d.x_train), -1), d.y_train,
        d.x_val.reshape(len(d.x_val), -1), d.y_val, epochs=1, lr=0.01, batch_size=64, seed=0, progress=False,
        steps_per_epoch=steps)
    assert len(seen) == steps and len(d.y_train) < 64 * steps


def test_qkd_schedule_starts_from_the_scratch_student(budget_setup: Any) -> None:
    d, teacher, tl = budget_setup
    arms = distill(MLP, _dcfg(method="hinton", init="scratch"), d, tl["train"], False, teacher=teacher,
                   teacher_unlab=tl["unlab"])
    assert arms["kd"].info["init"] == "scratch"
    frozen = train_arm("kd", MLP, {**_dcfg(method="hinton"), "lr": 0.0}, d, tl["train"], "hinton", False,
                       teacher=teacher, teacher_unlab=tl["unlab"], init_state=arms["scratch"].model.state_dict())
    for (k, a), b in zip(frozen.model.state_dict().items(), arms["scratch"].model.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match=r"distill.init = 'warm' is not allowed; choose one of: fresh, scratch"):
        validate({"distill": {"init": "warm"}})


def test_function_matching_reports_how_the_teacher_follows_the_augmentation(budget_setup: Any) -> None:
    d, teacher, tl = budget_setup
    arm = train_arm("kd", MLP, _dcfg(mixup_alpha=0.4, augment_noise=0.05, alpha=1.0), d, tl["train"], "hinton",
                    False, teacher=teacher)
    info = arm.info
    assert info["transfer_rows"] == len(d.unlab)
    # recomputed here: the teacher on the labelled rows, clean and after one pass of the augmentation drawn
    # with the generator the report documents (seed + 104729), not merely "some value in [0, 1]"
    from kdhw.train.augment import Augment

    dcfg = _dcfg(mixup_alpha=0.4, augment_noise=0.05, alpha=1.0)
    x = torch.from_numpy(d.x_train.reshape(len(d.x_train), -1))
    g = torch.Generator().manual_seed(int(dcfg["seed"]) + 104729)
    with torch.no_grad():
        clean = teacher(x.reshape(len(x), *d.shape)).argmax(1).numpy()
        augd = teacher(Augment.from_config(dcfg)(x, d.shape, g).reshape(len(x), *d.shape)).argmax(1).numpy()
    assert info["teacher_train_acc_clean"] == float((clean == d.y_train).mean())
    assert info["teacher_train_acc_augmented"] == float((augd == d.y_train).mean())
    for key, bad in (("augment_shift", -1), ("augment_scale", 1.0), ("augment_noise", -0.1)):
        with pytest.raises(InputError, match=rf"distill.{key} = {bad} must be"):
            validate({"distill": {key: bad}})


def test_handed_over_teacher_must_match_the_data(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dataset": "mnist1d_lookalike", "mnist1d_samples": 300},
                                   "teacher": {"arch": "mlp", "hidden": 8, "epochs": 1}}))
    assert main(["teacher", str(cfg), "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    cfg2 = tmp_path / "s.yaml"
    cfg2.write_text(yaml.safe_dump({"data": {"dataset": "digits", "labels": {"fraction": 0.1}},
                                    "teacher": {"path": str(tmp_path / "t" / "teacher.pt")}}))
    capsys.readouterr()
    assert main(["distill", str(cfg2), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "was trained on inputs (1, 40) with 10 classes; the data has (1, 8, 8) and 10 classes" in _err_line(capsys)



# ---------------------------------------------------------------- each new recipe's student is bit-exact

NEW_RECIPES: dict[str, dict[str, Any]] = {
    "transfer_hinton": {"method": "hinton", "alpha": 0.9},
    "transfer_pseudo_label": {"method": "pseudo_label"},
    "function_matching": {"method": "hinton", "alpha": 1.0, "mixup_alpha": 0.4, "augment_noise": 0.05,
                          "augment_scale": 0.1},
    "qkd_warm_start": {"method": "hinton", "init": "scratch"},
    "scratch_augmented": {"method": "none", "mixup_alpha": 0.4, "augment_noise": 0.05},
}


@pytest.mark.slow
def test_new_recipe_students_take_the_same_hardware_path_and_one_is_bit_exact(budget_setup: Any,
                                                                               tmp_path: Path) -> None:
    """Transfer-set recipes change what the student learns from, never the graph the hardware stages read:
    every recipe's student has the label-only student's hardware signature, and the most different one
    (function matching: mixup, augmentation, the teacher online) is verified bit-exact through hls4ml."""
    from conftest import hardware_signature, off_grid_inputs
    from kdhw.verify.levels import verify_project

    from kdhw.hw.export import export_qonnx
    from kdhw.hw.hls import build_hls_project
    from kdhw.train.student import save_student

    d, teacher, tl = budget_setup
    sigs, models = {}, {}
    for recipe, over in NEW_RECIPES.items():
        dc = _dcfg(**over)
        arms = distill(MLP, dc, d, tl["train"], False, teacher=teacher, teacher_unlab=tl["unlab"])
        models[recipe] = arms["kd" if dc["method"] != "none" else "scratch"].model
        sigs[recipe] = hardware_signature(export_qonnx(models[recipe], (64,), tmp_path / f"{recipe}.onnx"))
    assert all(s == sigs["scratch_augmented"] for s in sigs.values()), sigs
    model = models["function_matching"]
    x = np.concatenate([d.x_test[:200].reshape(200, 64), off_grid_inputs((64,), 100, signed=False)])
    save_student(model, MLP, (64,), tmp_path / "student.pt")
    onnx_path = export_qonnx(model, (64,), tmp_path / "m.onnx")
    build_hls_project(onnx_path, tmp_path / "hls", part="xc7z020clg400-1", clock_period_ns=10.0, compile_csim=False)
    res = verify_project(tmp_path / "hls", x, student_pt=tmp_path / "student.pt")
    exact = {"rows": len(x), "exact_rows": len(x), "first_bad_row": None}
    assert res["levels"]["brevitas"] == exact and res["levels"]["csim"] == exact and res["bit_exact"] is True


def test_report_says_whether_validation_was_cut_to_the_budget() -> None:
    from kdhw.flows.run_report import _budget_note

    full = apply_label_budget(dataset("digits"), {"fraction": 0.1}, 0).manifest
    cut = apply_label_budget(dataset("digits"), {"fraction": 0.1, "val": True}, 0).manifest
    assert "validation keeps all its labels (selection sees more labels than training)" in _budget_note(full)
    assert f"validation cut to the same share: {cut['val']} rows" in _budget_note(cut)
    assert f"labels on {cut['labels']['labelled']} training rows (10 % of the train split, seed 0)" in _budget_note(cut)
    assert _budget_note(dataset("digits").manifest) == ""
