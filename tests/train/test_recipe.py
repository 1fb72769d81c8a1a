"""The recipe chosen by the data (kdhw.train.recipe): when function matching is picked, what its control trains
with, the teacher-following check, and the selection tie-break on small validation splits."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import dataset

from kdhw.config import validate
from kdhw.errors import InputError
from kdhw.train.augment import Augment, follow
from kdhw.train.data import apply_label_budget
from kdhw.train.distill import Arm, choose, choose_scores, distill, noise_margin
from kdhw.train.loop import FitResult
from kdhw.train.recipe import FM_EPOCHS_FACTOR, augmentation_for, matches_function, resolve
from kdhw.train.teacher import LogitsTeacher, write_logits_file

MLP = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "weight_bits": 4, "act_bits": 4,
       "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}


def dcfg(**kw: Any) -> dict[str, Any]:
    return validate({"distill": {"epochs": 2, **kw}}).distill


@pytest.fixture(scope="module")
def nn_teacher() -> torch.nn.Module:
    """A 1-nearest-neighbour teacher on digits' training rows: right on every clean training row, and (like a
    CNN teacher) thrown off by a one-pixel shift of an 8x8 digit but not by a little noise."""
    d = dataset("digits")
    ref = torch.from_numpy(d.x_train.reshape(len(d.x_train), -1))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(d.y_train), 10).float()

    class NearestNeighbour(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 10 * onehot[torch.cdist(x.reshape(len(x), -1), ref).argmin(1)]

    return NearestNeighbour()


# ---------------------------------------------------------------- which recipe

def _budget(d: Any, fraction: float = 0.2) -> Any:
    return apply_label_budget(d, {"fraction": fraction}, 0)


@pytest.mark.parametrize("case, want", [
    ("budget + network", "function_matching"),
    ("unlabeled file + network", "function_matching"),
    ("budget + logits file", "plain"),
    ("budget + cached logits only", "plain"),
    ("budget + method none", "plain"),
    ("budget + label-free method", "plain"),
    ("full labels + network", "plain"),
    ("budget + network, recipe plain", "plain"),
    ("full labels + network, recipe function_matching", "function_matching"),
])
def test_function_matching_exactly_when_a_transfer_set_and_a_runnable_teacher_exist(
        case: str, want: str, nn_teacher: Any, tmp_path: Path) -> None:
    d = dataset("digits")
    if case.startswith("budget"):
        d = _budget(d)
    if case.startswith("unlabeled"):
        d.x_unlab = d.x_test[:50]  # what data.unlabeled adds: inputs without labels
    teacher: Any = nn_teacher
    if "logits file" in case:
        rows = np.concatenate([d.x_train, d.unlab, d.x_val, d.x_test])
        write_logits_file(tmp_path / "t.npz", rows, nn_teacher(torch.from_numpy(rows)).numpy())
        teacher = LogitsTeacher((tmp_path / "t.npz").read_bytes(), str(tmp_path / "t.npz"))
    if "cached logits only" in case:
        teacher = None
    kw: dict[str, Any] = {}
    if "method none" in case:
        kw["method"] = "none"
    if "label-free" in case:
        kw["method"] = "tf_kd"
    if "recipe" in case:
        kw["recipe"] = case.rsplit("recipe ", 1)[1]
    r = resolve(dcfg(**kw), d, teacher)
    assert r.name == want and matches_function(dcfg(**kw), d, teacher) == (want == "function_matching")
    arms = set(r.arms(kw.get("method", "hinton")))
    if want == "function_matching":
        assert arms == {"scratch", "scratch_aug", "kd"}
        assert r.augmented["epochs"] == 2 * FM_EPOCHS_FACTOR and r.plain["epochs"] == 2
        assert r.augmented["alpha"] == 0.9 and r.augmented["mixup_alpha"] == 0.4 and r.plain["alpha"] == 0.5
    else:
        assert "scratch_aug" not in arms and r.augmented is None and r.plain["mixup_alpha"] == 0.0


def test_explicit_function_matching_without_a_runnable_teacher_is_one_line(tmp_path: Path, nn_teacher: Any) -> None:
    d = _budget(dataset("digits"))
    rows = np.concatenate([d.x_train, d.unlab, d.x_val, d.x_test])
    write_logits_file(tmp_path / "t.npz", rows, nn_teacher(torch.from_numpy(rows)).numpy())
    t = LogitsTeacher((tmp_path / "t.npz").read_bytes(), "t.npz")
    with pytest.raises(InputError, match=r"^c.yaml: distill.recipe = function_matching needs a runnable teacher and a "
                                         r"method that reads it, but the teacher is a logits file, which cannot run"):
        distill(MLP, dcfg(recipe="function_matching"), d, np.zeros((len(d.y_train), 10)), False, "c.yaml", teacher=t)
    with pytest.raises(InputError, match=r"distill.recipe = 'fm' is not allowed; choose one of: auto, plain, "
                                         "function_matching"):
        validate({"distill": {"recipe": "fm"}})


def test_every_field_stays_overridable(nn_teacher: Any) -> None:
    d = _budget(dataset("digits"))
    r = resolve(dcfg(alpha=0.7, mixup_alpha=0.2, augment_noise=0.01, epochs_factor=3, temperature=2.0), d, nn_teacher)
    a = r.augmented
    assert (a["alpha"], a["mixup_alpha"], a["augment_noise"], a["epochs"], a["temperature"]) == (0.7, 0.2, 0.01, 6, 2.0)
    assert r.plain["mixup_alpha"] == 0.0 and r.plain["augment_noise"] == 0.0  # plain scratch stays plain


def test_augmentation_fits_the_modality() -> None:
    img, sig, tab = np.full((4, 1, 28, 28), 0.5), np.ones((4, 1, 40)), np.ones((4, 12))
    assert augmentation_for((1, 28, 28), img)["augment_shift"] == 2 and augmentation_for((1, 8, 8), img)["augment_shift"] == 1
    assert augmentation_for((1, 28, 28), img)["augment_scale"] == 0.0  # images: translations and noise, no flips
    assert augmentation_for((1, 40), sig) == {"augment_shift": 2, "augment_scale": 0.1, "augment_noise": 0.0}
    x = np.random.default_rng(0).normal(0, 2.0, (500, 12))
    t = augmentation_for((12,), x)
    assert t["augment_shift"] == 0 and t["augment_scale"] == 0.0 and t["augment_noise"] == pytest.approx(0.2, rel=0.05)
    assert augmentation_for((12,), tab)["augment_noise"] == 0.0


# ---------------------------------------------------------------- the control: same augmentation, same steps

def test_control_gets_the_distilled_arms_augmentation_and_steps(nn_teacher: Any, monkeypatch: Any) -> None:
    import kdhw.train.distill as dm

    d = _budget(dataset("digits"), 0.1)
    seen: dict[str, dict[str, Any]] = {}
    real_fit = dm.fit

    def spy(model: Any, loss: Any, x: np.ndarray, y: np.ndarray, *a: Any, desc: str, epochs: int,
            steps_per_epoch: int | None, batch_size: int, **kw: Any) -> FitResult:
        steps = steps_per_epoch if steps_per_epoch is not None else math.ceil(len(x) / batch_size)
        seen[desc] = {"epochs": epochs, "steps": steps, "rows": len(x)}
        return real_fit(model, loss, x, y, *a, desc=desc, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        batch_size=batch_size, **kw)

    monkeypatch.setattr(dm, "fit", spy)
    arms = distill(MLP, dcfg(epochs=2, epochs_factor=1.5), d, None, False, teacher=nn_teacher)
    assert set(arms) == {"scratch", "scratch_aug", "kd"}
    n_all = len(d.y_train) + len(d.unlab)
    assert seen["kd"] == {"epochs": 3, "steps": math.ceil(n_all / 64), "rows": n_all}  # reads the transfer set
    assert seen["scratch_aug"] == {"epochs": 3, "steps": math.ceil(n_all / 64), "rows": len(d.y_train)}
    assert seen["scratch"]["epochs"] == 2 and seen["scratch"]["steps"] == seen["kd"]["steps"]
    rec = arms["kd"].info["recipe"]
    assert rec["name"] == "function_matching" and rec["augmented"]["epochs"] == 3
    # both augmented arms were trained from the same settings: the recipe's, shift scaled down for 8x8 digits
    assert rec["augmented"]["augment_shift"] == 0 and rec["augmented"]["augment_noise"] > 0
    assert arms["kd"].fit.epochs_run == arms["scratch_aug"].fit.epochs_run == 3


def test_the_control_trained_in_a_second_process_is_the_same_arm(nn_teacher: Any) -> None:
    """distill(parallel=True) trains scratch_aug in a spawned process while kd trains here: the same weights,
    history and test accuracy as trained in this process, and the arms in the recipe's order."""
    d = _budget(dataset("digits"), 0.1)
    cfg = dcfg(epochs=2, epochs_factor=1.5)
    here = distill(MLP, cfg, d, None, False, teacher=nn_teacher)
    apart = distill(MLP, cfg, d, None, False, teacher=nn_teacher, parallel=True)
    assert list(apart) == list(here) == ["scratch", "scratch_aug", "kd"]
    a, b = here["scratch_aug"], apart["scratch_aug"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [h["loss"] for h in a.fit.history] == [h["loss"] for h in b.fit.history]
    assert a.test_acc == b.test_acc and a.model.training == b.model.training
    x = torch.from_numpy(d.x_test[:64].reshape(64, -1))
    a.model.eval(), b.model.eval()
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))  # the rebuilt student computes what the trained one does


def test_batches_made_ahead_on_a_worker_thread_train_the_same_arm(nn_teacher: Any, monkeypatch: Any) -> None:
    """The online teacher's batches made on a worker thread, each epoch's handed over before the previous
    epoch's evaluation, are the batches the step makes itself: the same losses, epoch and weights."""
    from kdhw.train import fast

    d = _budget(dataset("digits"), 0.1)
    runs = []
    for spare in (False, True):
        monkeypatch.setattr(fast, "spare_core", lambda s=spare: s)
        runs.append(distill(MLP, dcfg(epochs=2, epochs_factor=2), d, None, False, teacher=nn_teacher)["kd"])
    a, b = runs
    assert [h["loss"] for h in a.fit.history] == [h["loss"] for h in b.fit.history] and len(a.fit.history) == 4
    assert a.fit.best_epoch == b.fit.best_epoch and a.test_acc == b.test_acc
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- which epoch the distilled arm exports

def test_a_score_picks_the_epoch_and_validation_is_reported_at_that_epoch() -> None:
    from kdhw.train.loop import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32), np.arange(32) % 2
    calls: list[int] = []

    def score(m: torch.nn.Module) -> tuple[float, float]:  # prefers the second epoch, whatever validation says
        calls.append(1)
        return (1.0 if len(calls) == 2 else 0.5, 0.0)

    def loss(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(xb), yb)

    r = fit(model, loss, x, y, x, y, epochs=4, lr=0.1, batch_size=8, seed=0, progress=False, score=score)
    assert r.best_epoch == 1 and r.best_score == 1.0 and [h["score"] for h in r.history] == [0.5, 1.0, 0.5, 0.5]
    assert r.best_val_acc == r.history[1]["val_acc"] and r.best_val_loss == r.history[1]["val_loss"]
    plain = fit(torch.nn.Linear(4, 2), loss, x, y, x, y, epochs=4, lr=0.1, batch_size=8, seed=0, progress=False)
    assert plain.best_score is None and "score" not in plain.history[0]


def test_function_matching_exports_the_epoch_that_agrees_best_with_the_teacher(nn_teacher: Any) -> None:
    from kdhw.train.distill import student_input
    from kdhw.train.loop import predict_logits

    d = _budget(dataset("digits"), 0.1)
    arms = distill(MLP, dcfg(epochs=2, epochs_factor=2), d, None, False, teacher=nn_teacher)
    kd, hist = arms["kd"], arms["kd"].fit.history
    assert arms["kd"].info["recipe"]["augmented"]["checkpoint"] == "teacher"
    chk = kd.info["checkpoint"]
    assert chk["by"] == "teacher agreement" and chk["rows"] == len(d.unlab)
    assert chk["agreement"] == kd.fit.best_score == max(h["score"] for h in hist) == hist[kd.fit.best_epoch]["score"]
    assert kd.fit.best_val_acc == hist[kd.fit.best_epoch]["val_acc"]  # what choose() compares arms by
    # the exported weights are that epoch's: recount the agreement on the transfer rows from scratch
    top = nn_teacher(torch.from_numpy(d.unlab)).argmax(1).numpy()
    mine = predict_logits(kd.model, student_input(d.unlab, MLP)).argmax(1)
    assert float((mine == top).mean()) == chk["agreement"]
    # the control reads no teacher: it keeps the best-validation epoch; a user's checkpoint: val wins
    assert "checkpoint" not in arms["scratch_aug"].info and "score" not in arms["scratch_aug"].fit.history[0]
    val = distill(MLP, dcfg(epochs=2, epochs_factor=2, checkpoint="val"), d, None, False, teacher=nn_teacher)
    assert "checkpoint" not in val["kd"].info and val["kd"].fit.best_score is None
    # the rule changes which epoch is kept, never the training: every epoch's validation is the same
    assert [h["val_loss"] for h in val["kd"].fit.history] == [h["val_loss"] for h in hist]


def test_checkpoint_by_teacher_without_a_transfer_set_is_one_line(nn_teacher: Any) -> None:
    with pytest.raises(InputError, match=r"^c.yaml: distill.checkpoint = teacher needs a transfer set \(a label budget "
                                         r"or data.unlabeled\): the teacher's agreement is measured on rows without "
                                         r"labels; use val$"):
        distill(MLP, dcfg(checkpoint="teacher"), dataset("digits"), None, False, "c.yaml", teacher=nn_teacher)
    with pytest.raises(InputError, match=r"distill.checkpoint = 'last' is not allowed; choose one of: val, teacher"):
        validate({"distill": {"checkpoint": "last"}})



def test_kdhw_run_refuses_checkpoint_by_teacher_before_training_a_teacher(tmp_path: Path, capsys: Any,
                                                                          monkeypatch: Any) -> None:
    import kdhw.flows.run as pl
    from kdhw.cli import main

    def no_teacher(*a: Any, **k: Any) -> None:
        raise AssertionError("a teacher was trained before the config was refused")

    monkeypatch.setattr(pl, "teacher_stage", no_teacher)
    (tmp_path / "c.yaml").write_text("distill: {checkpoint: teacher}\n")
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("distill.checkpoint = teacher needs a transfer set (a label budget or "
                                             "data.unlabeled): the teacher's agreement is measured on rows without "
                                             "labels; use val")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- augmentations the teacher can follow

def test_follow_scales_down_a_shift_the_teacher_cannot_follow_and_keeps_noise(nn_teacher: Any) -> None:
    d = dataset("digits")
    x, y = np.concatenate([d.x_train, d.x_val]), np.concatenate([d.y_train, d.y_val])
    kept, rec = follow(Augment(shift=1, noise=0.04), nn_teacher, x, y, d.shape, 0, 0.05)
    by = {r["augment"]: r for r in rec}
    assert kept == Augment(shift=0, noise=0.04)
    assert by["shift"]["scaled_down"] and by["shift"]["tried"][0]["value"] == 1
    assert by["shift"]["teacher_acc_clean"] - by["shift"]["tried"][0]["teacher_acc"] > 0.2  # a shifted 8x8 digit
    assert not by["noise"]["scaled_down"] and by["noise"]["teacher_acc_clean"] - by["noise"]["tried"][0]["teacher_acc"] < 0.05
    assert by["all kept"]["kept"] == {"shift": 0, "scale": 0.0, "noise": 0.04}
    # a float augmentation is halved until the teacher follows (or switched off after MAX_HALVINGS)
    kept, rec = follow(Augment(noise=2.0), nn_teacher, x, y, d.shape, 0, 0.05)
    assert 0 <= kept.noise < 2.0 and [t["value"] for t in rec[0]["tried"]][:3] == [2.0, 1.0, 0.5]
    # what the user set is measured and reported, never changed
    kept, rec = follow(Augment(shift=1), nn_teacher, x, y, d.shape, 0, 0.05, scalable={"noise", "scale"})
    assert kept.shift == 1 and rec[0]["user_set"] and not rec[0]["scaled_down"]


def test_recipe_reports_the_scaled_down_augmentation(nn_teacher: Any) -> None:
    from kdhw.flows.run_report import _recipe_lines

    d = _budget(dataset("digits"))
    r = resolve(dcfg(), d, nn_teacher)
    assert r.augmented["augment_shift"] == 0 and r.teacher_check[0]["asked"] == 1
    text = "\n".join(_recipe_lines({"kd": {"info": {"recipe": r.describe()}, "test_acc": 0.9},
                                    "scratch": {"test_acc": 0.8}, "scratch_aug": {"test_acc": 0.85}}))
    assert "Augmentation `shift` 1 cost the teacher" in text and "scaled down to 0" in text
    assert "the teacher's share (kd − scratch_aug) +5.00**" in text


# ---------------------------------------------------------------- selection on a small validation split

def _arm(name: str, val: float, loss: float | None) -> Arm:
    return Arm(name, torch.nn.Linear(1, 1), FitResult(val, 0, 1, best_val_loss=loss), 0.0)  # type: ignore[arg-type]


def test_ties_in_validation_accuracy_go_to_the_lower_validation_loss() -> None:
    arms = {"scratch": _arm("scratch", 0.9, 0.61), "scratch_aug": _arm("scratch_aug", 0.8, 0.2),
            "kd": _arm("kd", 0.9, 0.35)}
    best, why = choose(arms, "best_val")
    assert best == "kd" and why == "validation accuracy tied at 90.00 %; lowest validation loss (kd 0.350, scratch 0.610)"
    assert choose({**arms, "kd": _arm("kd", 0.9, 0.7)}, "best_val")[0] == "scratch"
    assert choose({**arms, "kd": _arm("kd", 0.93, 0.9)}, "best_val") == ("kd", "best validation accuracy")
    assert choose({"scratch": _arm("s", 0.9, None), "kd": _arm("k", 0.9, None)}, "best_val")[0] == "scratch"
    assert choose(arms, "scratch_aug") == ("scratch_aug", "forced by distill.select")


def test_with_a_transfer_set_the_distilled_arm_is_kept_unless_validation_clearly_overturns_it() -> None:
    # hand count: two arms at 90 % on 100 rows differ by chance by 1.645 * sqrt(2 * 0.9 * 0.1 / 100) = 6.979 points
    assert noise_margin(0.9, 0.9, 100) == pytest.approx(0.069791, abs=1e-6)
    n = 29  # digits' validation split cut to a 10 % label budget
    one_row, three_rows = 28 / 29, 26 / 29
    scores = {"scratch": (1.0, 0.17), "scratch_aug": (0.9, 0.3), "kd": (one_row, 0.23)}
    # without a transfer set: best validation accuracy (scratch, one row ahead)
    assert choose_scores(scores, "best_val")[0] == "scratch"
    best, why = choose_scores(scores, "best_val", transfer_rows=900, val_rows=n)
    assert best == "kd" and why == ("distilled arm kept (transfer set of 900 rows): no other arm beats its validation "
                                    "accuracy 96.55 % by more than the noise of 29 rows")
    # a clearly better arm (three rows of 29 ahead) still wins, and the reason says why
    assert choose_scores({**scores, "kd": (three_rows, 0.2)}, "best_val", transfer_rows=900, val_rows=n) == (
        "scratch", "best validation accuracy (by more than the validation noise)")
    # a forced arm stays forced; the same gap on a large split is not noise
    assert choose_scores(scores, "scratch_aug", transfer_rows=900, val_rows=n)[0] == "scratch_aug"
    assert choose_scores({"scratch": (0.95, 0.2), "kd": (0.90, 0.3)}, "best_val", transfer_rows=900,
                         val_rows=2000)[0] == "scratch"
    # choose reads both counts off the data set
    arms = {k: _arm(k, v[0], v[1]) for k, v in scores.items()}
    data = SimpleNamespace(unlab=np.zeros((900, 64)), y_val=np.zeros(n))
    assert choose(arms, "best_val", data)[0] == "kd"  # type: ignore[arg-type]
    assert choose(arms, "best_val", SimpleNamespace(unlab=np.zeros((0, 64)), y_val=np.zeros(n)))[0] == "scratch"  # type: ignore[arg-type]


def test_function_matching_schedule_is_capped_in_optimizer_steps(monkeypatch: Any) -> None:
    """Unset epochs_factor: 30 x epochs of FM_BATCH_FACTOR x batch_size rows (at most one epoch's) at lr x the
    square root of the batch's growth, at most FM_STEPS steps (whole epochs, never below the plain epochs) where
    that is set; a set epochs_factor is taken as given."""
    import kdhw.train.recipe as recipe

    monkeypatch.setattr(recipe, "FM_STEPS", 2500)
    monkeypatch.setattr(recipe, "FM_BATCH_FACTOR", 1)
    base = {"epochs": 60, "batch_size": 64, "lr": 0.01, "epochs_factor": None}

    def sched(over: dict[str, Any], rows: int = 1077) -> tuple[Any, ...]:
        r = recipe.fm_schedule({**base, **over}, rows)
        return r["epochs_factor"], r["epochs"], r["batch_size"], r["lr"]

    assert sched({}) == (round(148 / 60, 2), 148, 64, 0.01)  # 17 steps per epoch: 148 x 17 >= 2500
    assert sched({"epochs": 2}) == (recipe.FM_EPOCHS_FACTOR, 2 * recipe.FM_EPOCHS_FACTOR, 64, 0.01)
    assert sched({"epochs": 200}, 100_000) == (1.0, 200, 64, 0.01)  # never fewer than the plain epochs
    assert sched({"epochs_factor": 30}) == (30, 1800, 64, 0.01)
    monkeypatch.setattr(recipe, "FM_BATCH_FACTOR", 2)
    assert sched({}) == (round(278 / 60, 2), 278, 128, 0.01 * 2 ** 0.5)  # 9 steps of 128 rows per epoch
    assert sched({"epochs_factor": 30}) == (30, 1800, 64, 0.01)
    monkeypatch.setattr(recipe, "FM_STEPS", None)
    assert sched({}) == (recipe.FM_EPOCHS_FACTOR, 60 * recipe.FM_EPOCHS_FACTOR, 128, 0.01 * 2 ** 0.5)
    monkeypatch.setattr(recipe, "FM_BATCH_FACTOR", 4)
    assert sched({}) == (recipe.FM_EPOCHS_FACTOR, 60 * recipe.FM_EPOCHS_FACTOR, 256, 0.02)
    assert sched({}, 100) == (recipe.FM_EPOCHS_FACTOR, 60 * recipe.FM_EPOCHS_FACTOR, 100, 0.01 * (100 / 64) ** 0.5)
    assert sched({}, 40) == (recipe.FM_EPOCHS_FACTOR, 60 * recipe.FM_EPOCHS_FACTOR, 64, 0.01)  # never below the batch
