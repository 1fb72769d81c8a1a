"""The rule benchmarks/fm_variants.py would change the function-matching defaults by, on hand-made tables."""

from __future__ import annotations

from benchmarks import fm_variants


def _table(gains: dict[str, list[float]]) -> list[dict]:
    """Per variant, the validation change (fraction) of each of four students."""
    return [{"set": "s", "student": f"m{i}", "variant": v, "d_val": d} for v, ds in gains.items()
            for i, d in enumerate(ds)]


def test_a_variant_needs_a_mean_gain_and_no_student_losing_much() -> None:
    dec = fm_variants.decide(_table({"mixup_1": [0.012, 0.012, 0.0, 0.0],    # +0.6 mean: qualifies
                                     "alpha_1": [0.03, 0.01, 0.0, -0.006],   # +0.86 mean, one student -0.6
                                     "T_2": [0.004, 0.004, 0.004, 0.004]}))  # +0.4 mean: too small
    v = dec["verdicts"]
    assert v["mixup_1"]["qualifies"] and not v["alpha_1"]["qualifies"] and not v["T_2"]["qualifies"]
    assert v["alpha_1"]["worst_student"] == "s m3"
    assert dec["adopt"] == "mixup_1"
    assert fm_variants.decide(_table({"T_2": [-0.01, 0.0, 0.0, 0.0]}))["adopt"] is None


def test_the_shift_variant_runs_on_signals_only() -> None:
    teachers = {"digits": {"digest": "d"}, "mnist1d": {"digest": "m"}}
    tasks = fm_variants.tasks_for(["digits", "mnist1d"], [5], teachers)
    shifted = {t["set"] for t in tasks if t["variant"] == "shift_x2"}
    assert shifted == {"mnist1d"}
    assert {t["variant"] for t in tasks if t["set"] == "digits"} == set(fm_variants.VARIANTS) - {"shift_x2"}
    assert len({t["key"] for t in tasks}) == len(tasks)


def test_chosen_variants_on_todays_schedule_get_keys_apart_from_the_batch_64_rows() -> None:
    from kdhw.train.recipe import FM_BATCH_FACTOR

    tasks = fm_variants.tasks_for(["digits"], [5], {"digits": {"digest": "d"}}, ["default", "long_x2", "ensemble3"])
    assert [t["variant"] for t in tasks] == ["default", "long_x2", "ensemble3"] * 2  # two digits students
    assert all(t["key"].endswith(f"/b{FM_BATCH_FACTOR}") for t in tasks) and FM_BATCH_FACTOR != 1
