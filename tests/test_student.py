"""Student specs that cannot be bit-exact are refused at build time with the change to make."""

import pytest
import torch

from kdhw.errors import InputError
from kdhw.student import build_student, describe, param_count

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
