"""Resource-aware QAT (kdhw.train.resource): the cost against a hand count, the fold into brevitas is exact and goes
through QONNX -> hls4ml C-sim -> da4ml RTL bit-exactly for every layer type, and pruned weights cost no logic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdhw.train.resource import FineLinear, FineNet, fold

TINY = {"input": {"bits": 4, "int_bits": 1, "signed": False}, "output": {"bits": 8}, "bias_bits": 16,
        "layers": [{"type": "dense", "units": 2, "bias": False}, {"type": "relu"},
                   {"type": "dense", "units": 2, "bias": False}],
        "resource": {"beta": 1e-3, "epochs": 10}}


def _set(layer: FineLinear, w: list, frac: float) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
        layer.frac.fill_(frac)


def test_ebops_hand_count_and_gradients() -> None:
    """4 inputs of ufixed<4,1> -> 2 units -> ReLU (3 bits, 2 fractional) -> 2 outputs, counted by hand.

    Layer 1 at f = 1: codes [2, 0, -1, 0] and [0, 0, 0, 0]: bits 2 + 1, times 4 input bits = 12.
    Unit 1 spans [-0.9375, 1.875] -> ReLU codes 0..7 (clamped) = 3 bits; unit 2 is the constant 0 = 0 bits.
    Layer 2 at f = 0: codes [[3, 5], [1, 0]]; column of unit 1 has bits 2 + 1 -> 3 x 3 = 9; unit 2 costs 0.
    """
    m = FineNet(TINY, (4,), 2)
    l1, relu, l2 = m.layers[1], m.layers[2], m.layers[3]
    _set(l1, [[1.0, 0.1, -0.5, 0.2], [0.2, -0.1, 0.0, 0.1]], 1.0)  # small ones round to 0 at f = 1
    _set(l2, [[3.0, 5.0], [1.0, 0.4]], 0.0)
    with torch.no_grad():
        relu.frac.fill_(2.0)
    relu.int_bits.fill_(1.0)
    e = m.ebops()
    assert float(e.detach()) == 21.0
    e.backward()
    # d/df of a live weight's bits is 1, times its input's bits; pruned weights get no cost gradient
    assert l1.frac.grad[0].tolist() == [4.0, 0.0, 4.0, 0.0] and l1.frac.grad[1].tolist() == [0.0] * 4
    assert l2.frac.grad.tolist() == [[3.0, 0.0], [3.0, 0.0]]
    assert float(relu.frac.grad) == 3.0  # unit 1's bits feed two live weights of 2 + 1 bits
    st = m.stats()
    assert st["ebops"] == 21.0 and st["live_weights"] == 5 and st["inputs_read"] == 2  # inputs 2 and 4 unread


def test_conv_ebops_counts_every_output_position() -> None:
    spec = {"input": {"bits": 6, "int_bits": 1, "signed": True}, "output": {"bits": 8},
            "layers": [{"type": "conv1d", "filters": 1, "kernel": 2, "bias": False}, {"type": "relu"},
                       {"type": "dense", "units": 2, "bias": False}], "resource": {"beta": 0.0}}
    m = FineNet(spec, (1, 5), 2)
    _set(m.layers[1], [[[3.0, -1.0]]], 0.0)  # codes 3 and -1: 2 + 1 bits
    _set(m.layers[4], [[0.0] * 4, [0.0] * 4], 0.0)  # the dense layer reads nothing: costs 0
    assert float(m.ebops()) == 4 * 6 * (2 + 1)  # 4 output positions x 6 input bits x 3 weight bits


def _train(spec: dict, data_x: np.ndarray, data_y: np.ndarray, epochs: int = 4, seed: int = 0) -> FineNet:
    torch.manual_seed(seed)
    m = FineNet({**spec, "resource": {"beta": 2e-4, "epochs": epochs, "ramp": 0.5}}, data_x.shape[1:], 10)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(data_x), torch.from_numpy(data_y)
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        m.set_epoch(ep)
        m.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx]) + m.resource_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
def test_folded_precisions_bit_exact(kind: str, tmp_path) -> None:
    """Per-weight precisions fold into one constant po2 Quant per tensor: the brevitas student equals the
    trained model exactly, and QONNX -> hls4ml C-sim -> da4ml RTL are bit-exact through ``verify_project``.

    The dense case is proven by tests/test_pareto.py (every front point of ``kdhw pareto`` is a folded MLP
    verified through kdhw.flows.to_hardware, the RTL simulator included); the simulator itself is exercised on conv
    designs by tests/test_rtl.py, so here the da4ml interpreter stands for the RTL.
    """
    from conftest import SPECS, dataset, off_grid_inputs
    from kdhw.verify.levels import verify_project

    from kdhw.hw.export import export_qonnx
    from kdhw.hw.hls import build_hls_project
    from kdhw.hw.rtl import qonnx_to_rtl
    from kdhw.train.distill import student_input
    from kdhw.train.student import save_student

    spec = SPECS[kind]
    data = dataset(spec["data"])
    x = student_input(data.x_train, spec["student"]).astype(np.float32)
    m = _train(spec["student"], x, data.y_train)
    fracs = [l.quantized()[2][l.quantized()[1] != 0] for l in m.layers if isinstance(l, FineLinear)]
    assert any(len(torch.unique(f)) > 1 for f in fracs), "training left one precision per tensor: nothing to fold"
    x_test = student_input(data.x_test, spec["student"]).astype(np.float32)
    xv = np.concatenate([x_test[:200], off_grid_inputs(x_test.shape[1:], 100, spec["student"]["input"]["signed"])])
    student, fspec = fold(m, check_x=xv)  # raises on any difference
    with torch.no_grad():
        assert torch.equal(student(torch.from_numpy(xv)), m(torch.from_numpy(xv)))
    onnx = export_qonnx(student, x_test.shape[1:], tmp_path / "student.qonnx.onnx")
    save_student(student, fspec, x_test.shape[1:], tmp_path / "student.pt")
    build_hls_project(onnx, tmp_path / "hls", part="xc7z020clg400-1", clock_period_ns=10.0, compile_csim=False)
    qonnx_to_rtl(onnx, tmp_path / "rtl")
    res = verify_project(tmp_path / "hls", xv, student_pt=tmp_path / "student.pt", rtl_dir=tmp_path / "rtl",
                         sim_rows=0, trace_rows=8)
    lv = res["levels"]
    for level in ("brevitas", "csim", "rtl"):
        assert lv[level]["exact_rows"] == lv[level]["rows"] == len(xv), level
    assert res["bit_exact"] is True


def test_fold_check_catches_a_one_lsb_change() -> None:
    """The equality check in ``fold`` can fail: one weight moved by one LSB of its folded grid is caught."""
    from conftest import dataset

    data = dataset("digits")
    x = data.x_train.reshape(len(data.x_train), -1)[:400].astype(np.float32)
    spec = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "output": {"bits": 8},
            "layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}
    m = _train(spec, x, data.y_train[:400], epochs=2)
    student, fspec = fold(m, check_x=x)
    lay = student.layers[student.names.index("dense2")]
    with torch.no_grad():
        j = int(m(torch.from_numpy(x), return_features=True)[1]["relu1"].sum(0).argmax())  # most active unit
        lay.weight[0, j] += 2.0 ** -fspec["layers"][2]["weight_frac_bits"]
        a, b = student(torch.from_numpy(x)), m(torch.from_numpy(x))
    assert not torch.equal(a, b)


def _pruned_pair() -> tuple[FineNet, FineNet]:
    """The same 6-unit MLP twice: once with hidden unit 3 pruned (every weight reading the input of it and
    its bias 0), once as a 5-unit network without it; every other weight identical."""
    spec6 = {"input": {"bits": 8, "int_bits": 1, "signed": False}, "output": {"bits": 8},
             "layers": [{"type": "dense", "units": 6}, {"type": "relu"}, {"type": "dense", "units": 10}],
             "resource": {"beta": 0.0}}
    spec5 = {**spec6, "layers": [{"type": "dense", "units": 5}, {"type": "relu"}, {"type": "dense", "units": 10}]}
    rng = np.random.default_rng(3)
    w1 = np.round(rng.normal(0, 0.5, (6, 64)) * 8) / 8
    w1[:, rng.permutation(64)[:20]] = 0.0  # 20 input features read by no weight
    b1 = np.round(rng.normal(0, 0.3, 6) * 64) / 64
    w2 = np.round(rng.normal(0, 0.5, (10, 6)) * 8) / 8
    b2 = np.round(rng.normal(0, 0.3, 10) * 64) / 64
    w1[3], b1[3] = 0.0, 0.0
    keep = [0, 1, 2, 4, 5]
    nets = []
    for spec, a, ab, c in ((spec6, w1, b1, w2), (spec5, w1[keep], b1[keep], w2[:, keep])):
        m = FineNet(spec, (64,), 10)
        with torch.no_grad():
            for lay, w, b in ((m.layers[1], a, ab), (m.layers[3], c, b2)):
                lay.weight.copy_(torch.tensor(w, dtype=torch.float32))
                lay.bias.copy_(torch.tensor(b, dtype=torch.float32))
                lay.frac.fill_(3.0)
        m.layers[2].int_bits.fill_(2.0)
        m.layers[4].int_bits.fill_(3.0)
        nets.append(m.eval())
    return nets[0], nets[1]


def test_pruned_weights_produce_no_logic(tmp_path) -> None:
    """A pruned hidden unit and 20 unread input features cost nothing in the RTL: the da4ml design of the
    6-unit network with unit 3 pruned is exactly as large as the 5-unit network without it, and the EBOPs
    agree too; the unread inputs keep their port slots and drive no logic."""
    from kdhw.hw.export import export_qonnx, load_qonnx
    from kdhw.hw.rtl._build import _trace

    pruned, small = _pruned_pair()
    x = np.random.default_rng(0).uniform(0, 2, (64, 64)).astype(np.float32)
    costs, ebops = [], []
    for name, m in (("pruned", pruned), ("small", small)):
        student, _ = fold(m, check_x=x)
        onnx = export_qonnx(student, (64,), tmp_path / f"{name}.onnx")
        _, comb = _trace(load_qonnx(onnx), 5.0)
        costs.append(comb.cost)
        ebops.append(float(m.ebops()))
    assert costs[0] == costs[1] and costs[0] > 0
    assert ebops[0] == ebops[1]
    assert pruned.stats()["inputs_read"] == small.stats()["inputs_read"] == 44


def test_an_activation_never_folds_to_one_bit(tmp_path) -> None:
    """A ReLU whose learned precision shrinks to one bit keeps two: brevitas would export a 1-bit activation
    as BipolarQuant ({-1, +1}), which is not the unsigned grid trained and which kdhw's exact path refuses
    (a mnist1d pareto point at beta 1e-4 hit it)."""
    import onnx

    from kdhw.hw.export import export_qonnx
    from kdhw.train.resource import FineReLU

    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, size=(64, 4)).astype(np.float32) / 8
    m = FineNet(TINY, (4,), 2).eval()
    relu = next(l for l in m.layers if isinstance(l, FineReLU))
    with torch.no_grad():
        relu.frac.fill_(-6.0)  # learned down to nothing: int_bits 1 + frac -6 would be -5 bits
    assert relu.grid()[2] == 2
    student, fspec = fold(m, check_x=x)  # exact, or it raises
    assert fspec["layers"][1]["bits"] == 2
    onnx_path = export_qonnx(student, (4,), tmp_path / "s.onnx")
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "BipolarQuant" not in ops and "Quant" in ops


@pytest.mark.parametrize("leak", [0.0, 0.05])
def test_resource_aware_relu_leaks_the_gradient_of_a_dead_unit(leak: float) -> None:
    """FineReLU follows distill.relu_grad_leak like the brevitas ReLU: same value, gradient below zero."""
    from kdhw.train.student import set_relu_grad_leak

    m = FineNet(TINY, (4,), 2)
    l1 = m.layers[1]
    _set(l1, [[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]], 2.0)  # unit 0 < 0 on every non-negative input
    set_relu_grad_leak(m, leak)
    m.train()
    x = torch.rand(8, 4)
    out = m(x)
    ref = FineNet(TINY, (4,), 2)
    ref.load_state_dict(m.state_dict())
    ref.train()
    assert torch.equal(out, ref(x))  # the leak never changes a value
    out.sum().backward()
    assert (l1.weight.grad[0].abs().sum() > 0) == (leak > 0)


def _run(spec: dict, x: np.ndarray, y: np.ndarray, fused: bool, steps: int, leak: float,
         gran: str = "weight") -> tuple[list[float], dict, list]:
    """``steps`` training steps (task loss + beta x EBOPs, Adam) of a FineNet with the one-op quantizers on or off:
    the losses, the final state and every step's gradients."""
    import kdhw.train.resource as R
    from kdhw.train.student import set_relu_grad_leak

    old = R.FUSED
    R.FUSED = fused
    try:
        torch.manual_seed(0)
        m = FineNet({**spec, "resource": {"beta": 3e-3, "epochs": 4, "ramp": 0.25, "granularity": gran}},
                    x.shape[1:], 10)
        set_relu_grad_leak(m, leak)
        opt = torch.optim.Adam(m.parameters(), lr=3e-2)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        g = torch.Generator().manual_seed(0)
        losses, grads = [], []
        for step in range(steps):
            m.set_epoch(step // 4)
            m.train()
            idx = torch.randperm(len(xt), generator=g)[:32]
            loss = torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx]) + m.resource_loss()
            opt.zero_grad()
            loss.backward()
            grads.append([None if p.grad is None else p.grad.clone() for p in m.parameters()])
            opt.step()
            losses.append(float(loss.detach()))
        m.eval()
        with torch.no_grad():
            out = m(xt)
        return losses, {**m.state_dict(), "out": out, "ebops": m.ebops().detach()}, grads
    finally:
        R.FUSED = old


@pytest.mark.parametrize("case", ["dense", "dense_channel_noleak", "conv1d", "conv2d"])
def test_one_op_quantizers_train_exactly_as_the_reference_ops(case: str) -> None:
    """FineNet's one-op quantizers (and the forward's codes reused by the cost) compute the values and the
    gradients of the reference autograd ops bit for bit: every step's gradients, losses and the final weights
    are equal (the ranges and clamps are hit: wide learning rate, a beta that prunes, a ReLU that saturates)."""
    rng = np.random.default_rng(0)
    if case.startswith("dense"):
        spec = {"input": {"bits": 5, "int_bits": 1, "signed": False}, "output": {"bits": 6}, "bias_bits": 16,
                "weight_bits": 4, "act_bits": 3,
                "layers": [{"type": "dense", "units": 12}, {"type": "relu"}, {"type": "dense", "units": 10}]}
        x = rng.uniform(0, 2, (96, 16)).astype(np.float32)
    else:
        conv = "conv1d" if case == "conv1d" else "conv2d"
        spec = {"input": {"bits": 6, "int_bits": 1, "signed": True}, "output": {"bits": 8}, "bias_bits": 16,
                "weight_bits": 4, "act_bits": 4,
                "layers": [{"type": conv, "filters": 3, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                           {"type": "flatten"}, {"type": "dense", "units": 10}]}
        x = rng.normal(0, 0.7, (96, 1, 12) if conv == "conv1d" else (96, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 10, 96).astype(np.int64)
    gran = "channel" if "channel" in case else "weight"
    leak = 0.0 if "noleak" in case else 0.05
    ref = _run(spec, x, y, False, 24, leak, gran)
    new = _run(spec, x, y, True, 24, leak, gran)
    assert ref[0] == new[0]
    for a, b in zip(ref[2], new[2]):
        for ga, gb in zip(a, b):
            assert (ga is None) == (gb is None) and (ga is None or torch.equal(ga, gb))
    assert ref[1].keys() == new[1].keys() and all(torch.equal(ref[1][k], new[1][k]) for k in ref[1])
