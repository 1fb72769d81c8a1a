"""What benchmarks/checkpoint_rule.py says each rule exports, on hand-made epoch records."""

from __future__ import annotations

import pytest

from benchmarks import checkpoint_rule


def _row(seed: int, teacher_epoch: int, tests: list[float]) -> dict:
    # the cut rows tie epochs 0 and 2, the lower loss there keeps epoch 0; the full split's best is epoch 1
    cut = [0.9, 0.8, 0.9, 0.7]
    cut_loss = [0.3, 0.5, 0.4, 0.6]
    full = [0.80, 0.85, 0.84, 0.83]
    return {"set": "s", "student": "m", "seed": seed, "teacher_epoch": teacher_epoch, "cut_rows": 29, "val_rows": 270,
            "checkpoint": {"rows": 900}, "cpu_seconds": 1.0,
            "epochs": [{"test": t, "cut": c, "cut_loss": cl, "full": f, "full_loss": 0.2}
                       for t, c, cl, f in zip(tests, cut, cut_loss, full)]}


def test_each_rule_exports_its_own_epoch_and_the_table_pairs_them_by_seed() -> None:
    r = _row(5, 2, [0.70, 0.75, 0.80, 0.78])
    assert checkpoint_rule.picks(r) == {"cut": 0, "full": 1, "teacher": 2, "last": 3}
    (e,) = checkpoint_rule.summarize([r, _row(6, 3, [0.60, 0.70, 0.90, 0.72])])
    assert e["cut"] == pytest.approx(65.0) and e["full"] == pytest.approx(72.5)
    assert e["teacher"] == pytest.approx(76.0) and e["last"] == pytest.approx(75.0)
    assert e["oracle"] == pytest.approx(85.0)  # the best epoch of each seed, a bound no rule reaches here
    assert e["teacher_minus_cut"]["diff"] == pytest.approx(11.0)
    assert (e["teacher_minus_cut"]["better"], e["teacher_minus_cut"]["worse"]) == (2, 0)
    assert (e["teacher_minus_full"]["better"], e["teacher_minus_full"]["worse"]) == (2, 0)
    assert e["seeds"] == [5, 6] and e["transfer_rows"] == 900


def test_tasks_cover_every_student_and_seed_once() -> None:
    tasks = checkpoint_rule.tasks_for(["digits", "mnist1d"], [5, 6], {"digits": {"digest": "d"}, "mnist1d": {"digest": "m"}})
    assert len(tasks) == 8 and len({t["key"] for t in tasks}) == 8
