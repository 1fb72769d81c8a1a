"""The shared hardware path's bookkeeping: which rows the fidelity figures are measured on."""

from __future__ import annotations

import numpy as np
import pytest
from kdhw.verify.levels import UNLABELLED, fidelity

from kdhw.flows.to_hardware import verification_rows
from kdhw.train.student import IOFormat


def test_fidelity_counts_labelled_rows_only() -> None:
    ref = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float)  # student predicts 1, 0, 1, 0
    teacher = np.array([[0, 1], [0, 1], [0, 1], [0, 1]], dtype=float)  # teacher predicts 1 everywhere
    labels = np.array([1, 1, UNLABELLED, UNLABELLED])
    f = fidelity(ref, labels, teacher)
    assert f == {"fidelity_rows": 2, "student_accuracy": 0.5, "teacher_accuracy": 1.0, "teacher_agreement": 0.5}
    # the random rows would have changed the agreement (1 of 2 agree there too, but 3 of 4 predictions differ
    # on all rows): they must not enter it
    assert fidelity(ref, np.array([1, 1, 1, 1]), teacher)["teacher_agreement"] == 0.5
    assert fidelity(ref, None, teacher) == {"fidelity_rows": 0, "student_accuracy": None, "teacher_accuracy": None,
                                            "teacher_agreement": None}
    assert fidelity(ref, labels, None)["teacher_agreement"] is None


def test_verification_rows_label_the_test_rows_and_not_the_random_ones() -> None:
    x = np.full((3, 4), 0.5, np.float32)
    xv, lab = verification_rows(x, np.array([2, 0, 1]), 5, IOFormat(8, 1, True), seed=0)
    assert xv.shape == (8, 4) and np.array_equal(xv[:3], x)
    assert lab.tolist() == [2, 0, 1] + [UNLABELLED] * 5
    assert xv[3:].min() < -2.0 and xv[3:].max() > 0  # signed format: random rows cover below -2**int_bits
    with pytest.raises(ValueError):
        verification_rows(x, np.array([1]), 1, IOFormat(8, 1, True), seed=0)
