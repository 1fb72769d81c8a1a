"""Loss values checked against numbers computed by hand (T^2 scaling, alpha weighting)."""

import math

import pytest
import torch

from kdhw.errors import InputError
from kdhw.losses import get_loss, soft_kl


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_soft_kl_matches_hand_computation_with_t_squared() -> None:
    s, t = [1.0, 0.0, -1.0], [2.0, 0.5, 0.0]
    for temp in (1.0, 2.0, 4.0):
        want = _kl(_softmax(t, temp), _softmax(s, temp)) * temp**2
        got = float(soft_kl(torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64), temp))
        assert got == pytest.approx(want, rel=1e-5)


def test_soft_kl_is_zero_for_identical_logits() -> None:
    z = torch.tensor([[0.3, -1.0, 2.0]])
    assert float(soft_kl(z, z.clone(), 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_hinton_weights_kd_and_hard_terms_by_alpha() -> None:
    s, t, y = [1.0, 0.0, -1.0], [2.0, 0.5, 0.0], 2
    ce = -math.log(_softmax(s, 1.0)[y])
    kd = _kl(_softmax(t, 2.0), _softmax(s, 2.0)) * 4.0
    loss = get_loss("hinton")
    for alpha in (0.0, 0.5, 0.9, 1.0):
        got = float(loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]),
                         {"alpha": alpha, "temperature": 2.0}))
        assert got == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-5)


def test_none_is_plain_cross_entropy() -> None:
    s = torch.tensor([[1.0, 0.0, -1.0]])
    got = float(get_loss("none")(s, None, torch.tensor([0]), {}))
    assert got == pytest.approx(-math.log(_softmax([1.0, 0.0, -1.0], 1.0)[0]), rel=1e-6)


def test_unknown_method_names_the_allowed_ones() -> None:
    with pytest.raises(InputError, match="unknown distillation method 'fitnetz'.*hinton"):
        get_loss("fitnetz")
