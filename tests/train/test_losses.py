"""Loss values checked against numbers computed by hand (plain Python math, not torch): T^2 scaling,
alpha weighting, and each method's own term."""

import itertools
import math

import pytest
import torch

from kdhw.config import CHOICES
from kdhw.errors import InputError
from kdhw.train.losses import (
    METHODS,
    NEEDS_TEACHER,
    ensemble_logits,
    get_loss,
    get_method,
    hint_loss,
    rkd_angle,
    rkd_distance,
    soft_kl,
    soft_kl_probs,
    virtual_teacher,
)

S, T, Y = [1.0, 0.0, -1.0], [2.0, 0.5, 0.0], 2  # one row: student logits, teacher logits, label


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _ce(z: list[float], target: list[float]) -> float:
    p = _softmax(z)
    return -sum(ti * math.log(pi) for ti, pi in zip(target, p))


def _onehot(y: int, k: int = 3) -> list[float]:
    return [1.0 if i == y else 0.0 for i in range(k)]


def _call(name: str, params: dict, s=S, t=T, y=Y, **kw) -> float:
    tt = None if t is None else torch.tensor([t], dtype=torch.float64)
    return float(get_loss(name)(torch.tensor([s], dtype=torch.float64), tt, torch.tensor([y]), params, **kw))


CE = _ce(S, _onehot(Y))
ALPHAS = (0.0, 0.3, 1.0)


def test_soft_kl_matches_hand_computation_with_t_squared() -> None:
    for temp in (1.0, 2.0, 4.0):
        want = _kl(_softmax(T, temp), _softmax(S, temp)) * temp**2
        got = float(soft_kl(torch.tensor([S], dtype=torch.float64), torch.tensor([T], dtype=torch.float64), temp))
        assert got == pytest.approx(want, rel=1e-6)


def test_soft_kl_is_zero_for_identical_logits() -> None:
    z = torch.tensor([[0.3, -1.0, 2.0]])
    assert float(soft_kl(z, z.clone(), 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_hinton_weights_kd_and_hard_terms_by_alpha() -> None:
    kd = _kl(_softmax(T, 2.0), _softmax(S, 2.0)) * 4.0
    for alpha in (0.0, 0.5, 0.9, 1.0):
        got = _call("hinton", {"alpha": alpha, "temperature": 2.0})
        assert got == pytest.approx(alpha * kd + (1 - alpha) * CE, rel=1e-6)


def test_none_is_plain_cross_entropy() -> None:
    assert _call("none", {}, t=None, y=0) == pytest.approx(-math.log(_softmax(S)[0]), rel=1e-6)


def test_logits_mse_is_mean_over_classes() -> None:
    mse = ((1 - 2) ** 2 + (0 - 0.5) ** 2 + (-1 - 0) ** 2) / 3  # 0.75
    for alpha in ALPHAS:
        assert _call("logits_mse", {"alpha": alpha}) == pytest.approx(alpha * mse + (1 - alpha) * CE, rel=1e-6)


def test_kl_mae_adds_absolute_error_of_soft_targets() -> None:
    temp, w = 2.0, 0.7
    ps, pt = _softmax(S, temp), _softmax(T, temp)
    term = _kl(pt, ps) * temp**2 + w * sum(abs(a - b) for a, b in zip(ps, pt))
    for alpha in ALPHAS:
        got = _call("kl_mae", {"alpha": alpha, "temperature": temp, "mae_weight": w})
        assert got == pytest.approx(alpha * term + (1 - alpha) * CE, rel=1e-6)


def test_tf_kd_virtual_teacher_with_t_squared() -> None:
    a, temp = 0.8, 3.0
    q = [0.1, 0.1, 0.8]  # (1 - a) / (K - 1) on the two wrong classes
    assert virtual_teacher(torch.tensor([Y]), 3, a)[0].tolist() == pytest.approx(q)
    term = _kl(q, _softmax(S, temp)) * temp**2
    for alpha in ALPHAS:
        got = _call("tf_kd", {"alpha": alpha, "temperature": temp, "tf_kd_prob": a}, t=None)
        assert got == pytest.approx(alpha * term + (1 - alpha) * CE, rel=1e-6)
    # a = 1 puts zeros in the target: KL(one-hot || p) = -log p_y, times T^2
    got = _call("tf_kd", {"alpha": 1.0, "temperature": temp, "tf_kd_prob": 1.0}, t=None)
    assert got == pytest.approx(-math.log(_softmax(S, temp)[Y]) * temp**2, rel=1e-6)


def test_label_smoothing_targets() -> None:
    eps = 0.3
    target = [(1 - eps) * o + eps / 3 for o in _onehot(Y)]
    for alpha in ALPHAS:
        got = _call("label_smoothing", {"alpha": alpha, "smoothing": eps}, t=None)
        assert got == pytest.approx(alpha * _ce(S, target) + (1 - alpha) * CE, rel=1e-6)


def test_pseudo_label_is_ce_on_teacher_argmax() -> None:
    hard = _ce(S, _onehot(0))  # teacher argmax of [2, .5, 0] is class 0, the label is 2
    for alpha in ALPHAS:
        assert _call("pseudo_label", {"alpha": alpha}) == pytest.approx(alpha * hard + (1 - alpha) * CE, rel=1e-6)


def test_ensemble_averages_soft_targets_not_logits() -> None:
    t2 = [-1.0, 3.0, 0.0]
    temp = 2.0
    mean_p = [(a + b) / 2 for a, b in zip(_softmax(T, temp), _softmax(t2, temp))]
    z = ensemble_logits([torch.tensor([T], dtype=torch.float64), torch.tensor([t2], dtype=torch.float64)], temp)
    assert torch.softmax(z / temp, 1)[0].tolist() == pytest.approx(mean_p, rel=1e-9)
    kd = _kl(mean_p, _softmax(S, temp)) * temp**2
    got = float(get_loss("ensemble")(torch.tensor([S], dtype=torch.float64), z, torch.tensor([Y]),
                                     {"alpha": 0.6, "temperature": temp}))
    assert got == pytest.approx(0.6 * kd + 0.4 * CE, rel=1e-6)


def test_born_again_and_fitnets_stage2_are_hinton() -> None:
    """Checked against the hand formula, not against get_loss("hinton"): if both returned the same wrong
    function, comparing them with each other could never fail."""
    for alpha, temp in ((0.4, 2.0), (1.0, 4.0), (0.0, 1.0)):
        kd = _kl(_softmax(T, temp), _softmax(S, temp)) * temp**2
        for name in ("born_again", "fitnets"):
            got = _call(name, {"alpha": alpha, "temperature": temp})
            assert got == pytest.approx(alpha * kd + (1 - alpha) * CE, rel=1e-6), (name, alpha, temp)


def test_hint_loss_is_mse() -> None:
    got = hint_loss(torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]]))
    assert float(got) == pytest.approx((1 + 0 + 1 + 4) / 4)


def _huber(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def _dist_by_hand(s: list[list[float]], t: list[list[float]]) -> float:
    pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j]
    ds = {p: math.dist(s[p[0]], s[p[1]]) for p in pairs}
    dt = {p: math.dist(t[p[0]], t[p[1]]) for p in pairs}
    ms, mt = sum(ds.values()) / len(pairs), sum(dt.values()) / len(pairs)
    return sum(_huber(ds[p] / ms - dt[p] / mt) for p in pairs) / len(pairs)


def _angle_by_hand(s: list[list[float]], t: list[list[float]]) -> float:
    def cos(e: list[list[float]], i: int, j: int, k: int) -> float:
        u = [a - b for a, b in zip(e[i], e[j])]
        v = [a - b for a, b in zip(e[k], e[j])]
        nu, nv = math.hypot(*u), math.hypot(*v)
        return 0.0 if nu == 0 or nv == 0 else sum(a * b for a, b in zip(u, v)) / (nu * nv)

    idx = list(itertools.product(range(len(s)), repeat=3))
    return sum(_huber(cos(s, i, j, k) - cos(t, i, j, k)) for i, j, k in idx) / len(idx)


def test_rkd_terms_match_hand_computation() -> None:
    s = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]
    t = [[0.0, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]
    st, tt = torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    assert float(rkd_distance(st, tt)) == pytest.approx(_dist_by_hand(s, t), rel=1e-9)
    assert float(rkd_angle(st, tt)) == pytest.approx(_angle_by_hand(s, t), rel=1e-9)
    # relations are scale-free: a scaled copy of the student is a perfect teacher
    assert float(rkd_distance(st, 3 * st)) == pytest.approx(0.0, abs=1e-12)
    assert float(rkd_angle(st, 3 * st)) == pytest.approx(0.0, abs=1e-12)


def test_rkd_weights_and_alpha() -> None:
    s_emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t_emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    logits = torch.tensor([S, T, [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0, 1])
    ce = sum(_ce(z, _onehot(c)) for z, c in zip(logits.tolist(), y.tolist())) / 3
    ld = _dist_by_hand(s_emb.tolist(), t_emb.tolist())
    la = _angle_by_hand(s_emb.tolist(), t_emb.tolist())
    assert ld > 0 and la > 0
    for alpha in ALPHAS:
        p = {"alpha": alpha, "rkd_distance": 25.0, "rkd_angle": 50.0}
        got = float(get_loss("rkd")(logits, None, y, p, s_emb=s_emb, t_emb=t_emb))
        assert got == pytest.approx(alpha * (25 * ld + 50 * la) + (1 - alpha) * ce, rel=1e-9)


def test_mixup_labels_as_probabilities_mix_the_hard_loss() -> None:
    lam = 0.3
    target = torch.tensor([[0.3, 0.0, 0.7]], dtype=torch.float64)  # lam * onehot(0) + (1 - lam) * onehot(2)
    want = lam * _ce(S, _onehot(0)) + (1 - lam) * _ce(S, _onehot(2))
    got = float(get_loss("none")(torch.tensor([S], dtype=torch.float64), None, target, {}))
    assert got == pytest.approx(want, rel=1e-9)
    q = virtual_teacher(target, 3, 0.8)  # mixing targets mixes the virtual teachers
    assert q[0].tolist() == pytest.approx([0.3 * 0.8 + 0.7 * 0.1, 0.1, 0.3 * 0.1 + 0.7 * 0.8])


def test_soft_kl_probs_agrees_with_soft_kl() -> None:
    s, t = torch.tensor([S], dtype=torch.float64), torch.tensor([T], dtype=torch.float64)
    assert float(soft_kl_probs(s, torch.softmax(t / 3, 1), 3.0)) == pytest.approx(float(soft_kl(s, t, 3.0)))


def test_registry_matches_config_choices_and_teacher_needs() -> None:
    assert set(METHODS) == set(CHOICES["distill.method"])
    assert NEEDS_TEACHER == {"hinton", "logits_mse", "kl_mae", "fitnets", "rkd", "ensemble", "pseudo_label"}
    assert {m for m in METHODS if get_method(m).needs_teacher_model} == {"fitnets", "rkd"}


def test_unknown_method_names_the_allowed_ones() -> None:
    with pytest.raises(InputError, match="unknown distillation method 'fitnetz'.*hinton"):
        get_loss("fitnetz")


def test_the_method_table_is_what_the_config_offers() -> None:
    """One record per method: the config's choices and method keys are the table's (config.py cannot import
    torch-heavy training code, so this test holds the two together)."""
    from kdhw.config import CHOICES, SCHEMA
    from kdhw.train.distill import Teaching

    assert sorted(CHOICES["distill.method"]) == sorted(METHODS)
    read = {k for m in METHODS.values() for k in m.params}
    assert read <= set(SCHEMA["distill"]), read - set(SCHEMA["distill"])
    for key in ("hint_layer", "teacher_hint_layer", "hint_epochs", "rkd_distance", "rkd_angle", "mae_weight",
                "generations", "tf_kd_prob", "smoothing", "teachers", "ensemble_size"):
        owners = [n for n, m in METHODS.items() if key in m.params]
        assert owners and all(n in SCHEMA["distill"][key][2] for n in owners), (key, owners)
    assert {n for n, m in METHODS.items() if m.teaching} == {"rkd", "fitnets", "ensemble", "born_again"}
    assert all(issubclass(m.teaching, Teaching) for m in METHODS.values() if m.teaching)
