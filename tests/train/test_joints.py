"""Joints between stages that no single stage's test sees: cached teacher logits must stay aligned with the
rows the training loop shuffles, labelled rows and transfer-set rows alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

import kdhw.train.distill as distill_mod
from kdhw.config import validate
from kdhw.train.data import Dataset
from kdhw.train.loop import _epoch_order

MLP = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "weight_bits": 4, "act_bits": 4,
       "layers": [{"type": "dense", "units": 4}, {"type": "relu"}, {"type": "dense", "units": 5}]}


def _teacher_of(x: np.ndarray) -> np.ndarray:
    """A stand-in teacher whose logits name the row they were computed on: row r of the inputs holds r / 512
    in every pixel, and its 'logits' are (r, 2r, 3r, 4r, 5r)."""
    r = np.round(x.reshape(len(x), -1)[:, 0] * 512)
    return (r[:, None] * np.arange(1, 6)[None, :]).astype(np.float32)


def test_cached_teacher_logits_follow_every_shuffled_row(monkeypatch: pytest.MonkeyPatch) -> None:
    n_lab, n_unlab = 70, 90
    ids = np.arange(n_lab + n_unlab)
    x = np.repeat((ids / 512.0)[:, None], 16, axis=1).reshape(-1, 1, 4, 4).astype(np.float32)
    y = ids[:n_lab] % 5
    val = x[:10]
    d = Dataset("ids", x[:n_lab], y, val, y[:10], val, y[:10], 5, {}, x_unlab=x[n_lab:])
    cache_train, cache_unlab = _teacher_of(d.x_train), _teacher_of(d.unlab)

    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    real = distill_mod.get_method("hinton")

    def spy_loss(out: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, params: dict, **kw: Any) -> torch.Tensor:
        seen[-1] = (*seen[-1][:2], t.detach().numpy().copy())
        return real.loss(out, t, labels, params, **kw)

    real_fit = distill_mod.fit

    def spy_fit(model: Any, loss_fn: Any, *a: Any, **kw: Any) -> Any:
        def wrapped(m: Any, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            seen.append((xb.numpy().copy(), idx.numpy().copy(), np.empty(0)))
            return loss_fn(m, xb, yb, idx)
        return real_fit(model, wrapped, *a, **kw)

    monkeypatch.setattr(distill_mod, "get_method",
                        lambda name: dataclasses.replace(real, loss=spy_loss) if name == "hinton" else real)
    monkeypatch.setattr(distill_mod, "fit", spy_fit)
    dcfg = validate({"distill": {"epochs": 2, "batch_size": 32, "seed": 3}}).distill
    distill_mod.train_arm("kd", MLP, dcfg, d, cache_train, "hinton", False, teacher_unlab=cache_unlab)

    n = n_lab + n_unlab
    batches = -(-n // 32)
    assert len(seen) == 2 * batches
    # the order is the known permutation of the loop's seeded generator, not the stored order
    perm = _epoch_order(n, 32, None, torch.Generator().manual_seed(3)).numpy()
    assert np.array_equal(np.concatenate([s[1] for s in seen[:batches]]), perm) and not np.all(np.diff(perm) > 0)
    for xb, idx, t in seen:
        row = np.round(xb[:, 0] * 512)  # which row each input is (labelled rows first, then the transfer set)
        assert np.array_equal(row, idx), "inputs left their indices"
        assert np.array_equal(t, row[:, None] * np.arange(1, 6)[None, :]), "a cached target left its row"
    assert any((s[1] >= n_lab).any() and (s[1] < n_lab).any() for s in seen), "no batch mixed both kinds of row"
