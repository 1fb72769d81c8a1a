"""The fused training forward (kdhw.train.fast) computes what the brevitas student computes.

Values are compared with torch.equal (eval and train mode), gradients with a tight allclose, for dense,
conv1d and conv2d students at several bit widths, signed and unsigned inputs, with and without bias, with
constant (``weight_frac_bits`` / ``frac_bits``) and statistics-based scales, through the quantizers'
statistics phase and after it.  A student trained on the fused path exports a QONNX model whose reference
execution equals the brevitas forward bit for bit.  FlatAdam updates like torch.optim.Adam.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from kdhw.train import fast
from kdhw.train.loop import FlatAdam, adam
from kdhw.train.student import build_student, set_relu_grad_leak

_IN_U = {"bits": 8, "int_bits": 1, "signed": False}
_IN_S = {"bits": 6, "int_bits": 2, "signed": True}


def _mlp(wb: int, ab: int, inp: dict[str, Any], **layer: Any) -> tuple[dict[str, Any], tuple[int, ...]]:
    return ({"input": inp, "weight_bits": wb, "act_bits": ab,
             "layers": [{"type": "dense", "units": 12, **layer}, {"type": "relu"}, {"type": "dense", "units": 10}]},
            (20,))


def _conv1d(wb: int, ab: int, inp: dict[str, Any], **layer: Any) -> tuple[dict[str, Any], tuple[int, ...]]:
    return ({"input": inp, "weight_bits": wb, "act_bits": ab,
             "layers": [{"type": "conv1d", "filters": 4, "kernel": 3, **layer}, {"type": "relu"},
                        {"type": "maxpool", "size": 2}, {"type": "conv1d", "filters": 6, "kernel": 3, "padding": 1},
                        {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10}]},
            (2, 24))


def _conv2d(wb: int, ab: int, inp: dict[str, Any], **layer: Any) -> tuple[dict[str, Any], tuple[int, ...]]:
    return ({"input": inp, "weight_bits": wb, "act_bits": ab,
             "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, **layer}, {"type": "relu"},
                        {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]},
            (1, 8, 8))


def _mlp_const_acts() -> tuple[dict[str, Any], tuple[int, ...]]:
    """Constant-scale ReLU and output quantizers (``frac_bits``), what a folded resource-aware student has."""
    spec, shape = _mlp(4, 3, _IN_U)
    spec["layers"][1] = {"type": "relu", "frac_bits": 2}
    spec["output"] = {"bits": 8, "frac_bits": 4}
    return spec, shape


CASES = {
    "mlp_w2a4_u8": _mlp(2, 4, _IN_U),
    "mlp_w4a3_u8_const_acts": _mlp_const_acts(),
    "mlp_w4a4_s6_nobias": _mlp(4, 4, _IN_S, bias=False),
    "mlp_w8a8_u8_frac": _mlp(8, 8, _IN_U, weight_frac_bits=6),
    "conv1d_w4a4_s6": _conv1d(4, 4, _IN_S),
    "conv1d_w3a2_u8_nobias": _conv1d(3, 2, _IN_U, bias=False),
    "conv2d_w4a4_u8": _conv2d(4, 4, _IN_U),
    "conv2d_w6a3_s6_frac": _conv2d(6, 3, _IN_S, weight_frac_bits=4),
}


def _inputs(spec: dict[str, Any], shape: tuple[int, ...], n: int, gen: torch.Generator) -> torch.Tensor:
    """Off-grid floats that round, clamp and (signed) go negative in the input quantizer."""
    lo = -2.5 if spec["input"]["signed"] else -0.3
    return lo + (2.6 - lo) * torch.rand((n, *shape), generator=gen)


def _pair(spec: dict[str, Any], shape: tuple[int, ...], collect: int, leak: float = 0.05,
          seed: int = 0) -> tuple[Any, Any]:
    """(brevitas student, an identical copy on the fused forward); statistics phases shortened to ``collect``."""
    torch.manual_seed(seed)
    ref = build_student(spec, shape, 10)
    set_relu_grad_leak(ref, leak)
    for m in ref.modules():
        if hasattr(m, "collect_stats_steps"):
            m.collect_stats_steps = collect
    fused = copy.deepcopy(ref)
    assert fast.attach(fused) is not None and ref.fused is None
    return ref, fused


def _scaling_state(model: Any) -> list[tuple[int, torch.Tensor]]:
    return [(m.counter, m.buffer.clone()) for m in model.modules() if hasattr(m, "collect_stats_steps")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_forward_equals_brevitas_values_and_gradients(case: str) -> None:
    spec, shape = CASES[case]
    ref, fused = _pair(spec, shape, collect=3)
    gen = torch.Generator().manual_seed(1)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (ref, fused)]
    for step in range(7):  # 3 statistics steps, the step that initialises the learned scales, 3 after
        x = _inputs(spec, shape, 32, gen)
        ref.train()
        fused.train()
        ya, yb = ref(x), fused(x)
        assert torch.equal(ya, yb), f"step {step}: train-mode outputs differ"
        r = torch.randn(ya.shape, generator=gen)
        (ya * r).sum().backward()
        (yb * r).sum().backward()
        for (name, pa), pb in zip(ref.named_parameters(), fused.parameters()):
            assert (pa.grad is None) == (pb.grad is None), name
            if pa.grad is not None:
                assert torch.allclose(pa.grad, pb.grad, rtol=1e-6, atol=1e-7 * float(pa.grad.abs().max()) + 1e-12), \
                    f"step {step}: gradient of {name}"
        for o in opts:
            o.step()
            o.zero_grad()
        ref.eval()
        fused.eval()
        xe = _inputs(spec, shape, 64, gen)
        with torch.no_grad():
            assert torch.equal(ref(xe), fused(xe)), f"step {step}: eval outputs differ"
        assert torch.equal(ref(xe), fused(xe))  # eval with gradients on
    for (ca, ba), (cb, bb) in zip(_scaling_state(ref), _scaling_state(fused)):
        assert ca == cb and torch.equal(ba, bb)


@pytest.mark.parametrize("case", ["mlp_w2a4_u8", "mlp_w4a3_u8_const_acts", "conv1d_w4a4_s6",
                                  "conv1d_w3a2_u8_nobias", "conv2d_w4a4_u8"])
def test_training_trajectory_is_bit_identical(case: str) -> None:
    """Gradients are summed in the order brevitas' autograd graph sums them: a whole run with Adam (flat on
    the fused side) stays bit-identical, statistics phase included."""
    spec, shape = CASES[case]
    ref, fused = _pair(spec, shape, collect=4, seed=3)
    gen = torch.Generator().manual_seed(2)
    fast.ENABLED = False
    try:
        opt_a = adam(ref.parameters(), 0.01)
    finally:
        fast.ENABLED = True
    opt_b = adam(fused.parameters(), 0.01)
    assert type(opt_a) is torch.optim.Adam and isinstance(opt_b, FlatAdam)
    for _ in range(12):
        x = _inputs(spec, shape, 16, gen)
        t = torch.randint(0, 10, (16,), generator=gen)
        for model, opt in ((ref, opt_a), (fused, opt_b)):
            model.train()
            loss = torch.nn.functional.cross_entropy(model(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt_b.release()
    sa, sb = ref.state_dict(), fused.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_fused_path_refuses_what_it_does_not_reproduce() -> None:
    """A student whose quantizer the fused forward does not know keeps brevitas' forward (attach: None)."""
    from brevitas.core.function_wrapper.ops_ste import FloorSte

    spec, shape = CASES["mlp_w2a4_u8"]
    model = build_student(spec, shape, 10)
    model.layers[1].weight_quant.tensor_quant.int_quant.float_to_int_impl = FloorSte()
    assert fast.attach(model) is None and model.fused is None


def test_float_warmup_falls_back_to_brevitas() -> None:
    """Quantizers switched off (float warm-up) are not fused: the student computes in float."""
    from kdhw.train.loop import FloatWarmup

    spec, shape = CASES["mlp_w4a4_s6_nobias"]
    ref, fused = _pair(spec, shape, collect=2)
    x = _inputs(spec, shape, 8, torch.Generator().manual_seed(0))
    for m in (ref, fused):
        FloatWarmup(m, 1)(0)
        m.train()
    assert not fused.fused.usable()
    assert torch.equal(ref(x), fused(x))


def test_flat_adam_matches_adam_with_missing_gradients() -> None:
    """Bit-identical to torch.optim.Adam, also when some parameters get no gradient for a while."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (), (3, 2, 3)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    pa = [torch.nn.Parameter(t.clone()) for t in init]
    pb = [torch.nn.Parameter(t.clone()) for t in init]
    opt_a, opt_b = torch.optim.Adam(pa, lr=0.02), FlatAdam(pb, lr=0.02)
    sched = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=9) for o in (opt_a, opt_b)]
    for step in range(40):
        grads = [None if (step < 10 and i == 3) else torch.randn(s, generator=gen) * 10 ** (i - 2)
                 for i, s in enumerate(shapes)]
        for ps, o in ((pa, opt_a), (pb, opt_b)):
            for p, g in zip(ps, grads):
                p.grad = None if g is None else g.clone()
            o.step()
        if step % 4 == 3:
            for s in sched:
                s.step()
    opt_b.release()
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
    assert all(p.data.untyped_storage().data_ptr() != pb[0].data.untyped_storage().data_ptr() for p in pb[1:])


def test_exact_max_pool_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    for m, shape in [(torch.nn.MaxPool2d(2), (6, 3, 8, 8)), (torch.nn.MaxPool2d(2), (2, 3, 7, 9)),
                     (torch.nn.MaxPool1d(2), (5, 4, 41)), (torch.nn.MaxPool1d(3), (2, 2, 20))]:
        x = torch.randn(shape, generator=gen)
        assert torch.equal(m(x), fast.exact_max_pool(m)(x))
    assert fast.exact_max_pool(torch.nn.MaxPool2d(2, stride=1)) is None
    assert fast.exact_max_pool(torch.nn.MaxPool1d(2, padding=1)) is None


@pytest.mark.parametrize("kind", ["mlp", "conv1d"])
def test_student_trained_on_fused_path_exports_bit_exact_qonnx(kind: str, tmp_path) -> None:
    """train_arm (fused forward, FlatAdam, batches made ahead) leaves an ordinary brevitas student: the same
    training as today's path, and its QONNX reference equals its brevitas forward on every row."""
    from conftest import SPECS, dataset, off_grid_inputs

    from kdhw.config import validate
    from kdhw.hw.export import export_qonnx, load_qonnx, reference
    from kdhw.train.distill import student_input, train_arm

    spec = SPECS[kind]
    data = dataset(spec["data"])
    dcfg = validate({"distill": {"epochs": 2, "method": "none", "mixup_alpha": 0.4, "augment_noise": 0.05}}).distill
    arms = {}
    for on in (False, True):
        fast.ENABLED = on
        try:
            arms[on] = train_arm("scratch", spec["student"], dcfg, data, None, "none", progress=False)
        finally:
            fast.ENABLED = True
    new, old = arms[True], arms[False]
    assert new.model.fused is None  # detached after training: export runs brevitas' own forward
    assert new.fit.history == old.fit.history and new.test_acc == old.test_acc
    for (k, a), b in zip(old.model.state_dict().items(), new.model.state_dict().values()):
        assert torch.equal(a, b), k
    x = student_input(data.x_test, spec["student"])
    shape = x.shape[1:]
    x = np.concatenate([x[:200], off_grid_inputs(shape, 100, spec["student"]["input"]["signed"])])
    path = export_qonnx(new.model, shape, tmp_path / f"{kind}.onnx")
    with torch.no_grad():
        ours = new.model(torch.from_numpy(x)).numpy()
    assert np.array_equal(reference(load_qonnx(path), x), ours.reshape(len(x), -1))
