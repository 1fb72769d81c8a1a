"""Student specs that cannot be bit-exact are refused at build time with the change to make."""

import pytest
import torch

from kdhw.errors import InputError
from kdhw.train.student import build_student, describe, param_count

MLP = {"layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}]}


def test_mlp_builds_with_the_requested_bits() -> None:
    m = build_student({**MLP, "weight_bits": 3}, (64,), 10)
    assert m(torch.rand(2, 64)).shape == (2, 10)
    rows = {r["layer"]: r for r in describe(m)}
    assert rows["dense1"]["weight_bits"] == 3 and rows["dense1"]["bias_bits"] == 16
    assert rows["relu1"]["act_bits"] == 4
    assert param_count(m) == 64 * 8 + 8 + 8 * 10 + 10


@pytest.mark.parametrize(
    "layers, match",
    [
        ([{"type": "batchnorm"}, {"type": "dense", "units": 10}], "BatchNorm.*fold it"),
        ([{"type": "dense", "units": 10, "bias": "float"}], "float bias is not bit-exact"),
        ([{"type": "dense", "units": 10, "bias_bits": None}], r"bias_bits = None.*float bias"),
        ([{"type": "dense", "units": 10, "weight_bits": 1}], r"weight_bits = 1 must be an integer in \[2, 16\]"),
        ([{"type": "dense", "units": 7}], "7 units but the data has 10 classes"),
        ([{"type": "dense", "units": 10}, {"type": "relu"}], "must end with a dense layer"),
        ([{"type": "lstm"}], "unknown layer type 'lstm'; allowed: dense, conv1d"),
        ([{"type": "dense", "units": 10, "activation": "relu"}], "unknown key 'activation' for dense"),
        ([{"type": "conv2d", "filters": 2}, {"type": "dense", "units": 10}], "conv2d needs an input of rank 3"),
    ],
)
def test_refused_specs(layers: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        build_student({"layers": layers}, (64,), 10)


def test_float_scaling_is_refused() -> None:
    with pytest.raises(InputError, match="scaling: po2"):
        build_student({**MLP, "scaling": "float"}, (64,), 10)


def test_conv_students_track_shapes() -> None:
    spec = {"layers": [{"type": "conv1d", "filters": 4, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                       {"type": "dense", "units": 10}]}
    m = build_student(spec, (1, 40), 10)
    assert m(torch.rand(3, 1, 40)).shape == (3, 10)
    assert "flatten1" in m.names


def test_relu_grad_leak_keeps_the_value_and_leaks_the_gradient() -> None:
    from kdhw.train.student import relu_grad_leak

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = relu_grad_leak(x, 0.05)
    assert torch.equal(y, torch.relu(x.detach()))  # bit for bit: the exported network cannot change
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.05, 0.05, 0.05, 1.0, 1.0]))


def _dead_unit_student(leak: float) -> tuple[torch.nn.Module, torch.Tensor]:
    """A student whose hidden unit 0 is negative on every (non-negative) input: a dead ReLU unit."""
    from kdhw.train.student import set_relu_grad_leak

    torch.manual_seed(0)
    m = build_student({**MLP, "input": {"bits": 8, "int_bits": 1, "signed": False}}, (64,), 10)
    dense = m.layers[m.names.index("dense1")]
    with torch.no_grad():
        dense.weight[0] = -dense.weight[0].abs()
        dense.bias[0] = -1.0
    set_relu_grad_leak(m, leak)
    return m, dense.weight[0].detach().clone()


@pytest.mark.parametrize("leak", [0.0, 0.05])
def test_a_dead_unit_gets_a_gradient_only_with_the_leak(leak: float) -> None:
    m, w0 = _dead_unit_student(leak)
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    m.train()
    _, feats = m(x, return_features=True)
    assert not (feats["relu1"][:, 0] > 0).any()  # dead on every row
    torch.nn.functional.cross_entropy(m(x), y).backward()
    g = m.layers[m.names.index("dense1")].weight.grad[0]
    assert (g.abs().sum() > 0) == (leak > 0)
    assert torch.equal(m.layers[m.names.index("dense1")].weight[0].detach(), w0)


def test_the_leak_is_off_outside_training() -> None:
    m, _ = _dead_unit_student(0.05)
    m.eval()
    x = torch.rand(4, 64, requires_grad=True)
    m(x).sum().backward()  # eval: a plain ReLU, so the dead unit passes nothing back
    assert m.layers[m.names.index("dense1")].weight.grad[0].abs().sum() == 0
