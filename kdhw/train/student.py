"""Fixed-point student: a brevitas network built from a layer spec.

Only specs that can be bit-exact through QONNX -> hls4ml are accepted (docs/verification.md):
power-of-two scales everywhere (brevitas ``*FixedPoint`` quantizers), integer bias (or none), no unfolded BatchNorm,
a constant-scale input quantizer whose fixed-point type becomes the HLS input precision.  Anything else is
refused at build time with the change to make, rather than discovered as a mismatch after a long run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import brevitas.nn as qnn
import torch
import torch.nn as nn
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    IntBias,
    Uint8ActPerTensorFixedPoint,
)

from kdhw.contract import IOFormat, input_format
from kdhw.errors import InputError

_REFUSED = {
    "batchnorm": "an unfolded BatchNorm is not bit-exact in hls4ml; fold it into the previous layer or drop it",
    "dropout": "dropout has no hardware meaning; remove it from the student spec",
}


class _IntBiasN(IntBias):
    """Integer bias with the scale inferred from input scale x weight scale (power of two when both are)."""

    bit_width = 16


class _LeakyGrad(torch.autograd.Function):
    """relu(x) forward; backward passes ``leak`` x the gradient where x <= 0 instead of nothing."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, leak: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.leak = leak
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, g, ctx.leak * g), None


def relu_grad_leak(x: torch.Tensor, leak: float) -> torch.Tensor:
    """Exactly relu(x) in value; in training, units below zero still get ``leak`` x their gradient.

    Why: a tiny student's ReLU units die (negative on every row, so no gradient ever reaches them again).
    Measured on the 64-16-10 w2 digits student with function matching: 10, 4 and 5 of its 16 hidden units
    were dead at the exported epoch on three seeds, and a leak of 0.05 raised its test accuracy by about
    5 points (benchmarks/results/relu_leak.md).  The leak only changes the backward pass, so the exported
    network and its bit-exactness are untouched.
    """
    return _LeakyGrad.apply(x, leak) if leak > 0 and torch.is_grad_enabled() else torch.relu(x)


class LeakyGradReLU(nn.ReLU):
    """The activation inside each QuantReLU: ``relu_grad_leak`` while training, a plain ReLU otherwise.

    A subclass of nn.ReLU so that brevitas' export, which reads the activation it wraps, sees a ReLU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.relu_leak = 0.0  # set per training run by set_relu_grad_leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_grad_leak(x, self.relu_leak) if self.training else torch.relu(x)


def set_relu_grad_leak(model: nn.Module, leak: float) -> None:
    """Set the backward leak of every ReLU of a student built by kdhw (brevitas or resource-aware: each
    keeps it as ``relu_leak``)."""
    for m in model.modules():
        if hasattr(m, "relu_leak"):
            m.relu_leak = float(leak)


class StudentNet(nn.Module):
    """A brevitas student; ``features`` exposes per-layer outputs for hint-based distillation."""

    def __init__(self, layers: list[tuple[str, nn.Module]], input_format: IOFormat, n_classes: int,
                 bits: dict[str, dict[str, int]] | None = None) -> None:
        super().__init__()
        self.bits = bits or {}
        self.input_format = input_format
        self.n_classes = n_classes
        self.names = [n for n, _ in layers]
        self.layers = nn.ModuleList(m for _, m in layers)
        # kdhw.train.fast.FusedForward while training attaches one: the same numbers without brevitas' overhead
        self.fused: Any = None

    def forward(self, x: torch.Tensor, return_features: bool = False) -> Any:
        if self.fused is not None and self.fused.usable():
            return self.fused(self, x, return_features)
        feats: dict[str, torch.Tensor] = {}
        for name, layer in zip(self.names, self.layers):
            x = layer(x)
            if return_features:
                feats[name] = _value(x)
        out = _value(x)
        return (out, feats) if return_features else out


def _value(x: Any) -> torch.Tensor:
    return x.value if hasattr(x, "value") and not isinstance(x, torch.Tensor) else x


def _int(layer: dict[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    v = layer.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(f"{where}: {key} = {v!r} must be an integer in [{lo}, {hi}]")
    return v


def _const_po2(layer: dict[str, Any], key: str, bits: int, signed: bool, where: str, prefix: str = "") -> dict[str, Any]:
    """Quantizer keywords for a constant power-of-two scale 2^-frac_bits when ``key`` is given (else {}).

    A statistics-based po2 scale rounds log2 of a running statistic and was seen clipping a weight of
    exactly 4.0; students whose precision was learned elsewhere (kdhw.train.resource) need the scale they were
    trained with, fixed.  brevitas' fixed-point quantizers derive the scale as init / 2^(bits - signed).
    """
    f = layer.get(key)
    if f is None:
        return {}
    if isinstance(f, bool) or not isinstance(f, int) or not -16 <= f <= 24:
        raise InputError(f"{where}: {key} = {f!r} must be an integer in [-16, 24]")
    return {f"{prefix}scaling_impl_type": "const", f"{prefix}scaling_init": 2.0 ** (bits - int(signed) - f)}


def _io_format(spec: dict[str, Any], src: str) -> IOFormat:
    """The input port's format; ``auto`` must have been resolved against the data (``kdhw.train.data.load_data``)."""
    return input_format(spec, src)


@dataclass
class _Build:
    """What building one layer reads and updates: the running shape, the layer defaults, the bit widths the
    report lists, and the modules so far."""

    shape: tuple[int, ...]
    defaults: dict[str, int]
    bits: dict[str, dict[str, int]]
    mods: list[tuple[str, nn.Module]]
    counts: dict[str, int] = field(default_factory=dict)


def _bias_kw(layer: dict[str, Any], b: _Build, name: str, wb: int, where: str) -> dict[str, Any]:
    """Quantizer keywords for a weighted layer's bias (integer or none: a float bias is not bit-exact)."""
    use_bias = layer.get("bias", True)
    if use_bias == "float":
        raise InputError(f"{where}: a float bias is not bit-exact in hls4ml; use bias: true (quantized) or false")
    if not isinstance(use_bias, bool):
        raise InputError(f"{where}: bias must be true or false")
    bb = layer.get("bias_bits", b.defaults["bias_bits"])
    if use_bias and (bb is None or isinstance(bb, bool) or not isinstance(bb, int) or not 4 <= bb <= 32):
        raise InputError(f"{where}: bias_bits = {bb!r} must be an integer in [4, 32] (a float bias is not bit-exact; "
                         "set bias: false to drop it)")
    b.bits[name] = {"weight_bits": wb, **({"bias_bits": bb} if use_bias else {})}
    return {"bias": use_bias, **({"bias_quant": _IntBiasN, "bias_bit_width": bb} if use_bias else {})}


def _weight_kw(layer: dict[str, Any], b: _Build, name: str, where: str) -> dict[str, Any]:
    wb = _int(layer, "weight_bits", b.defaults["weight_bits"], 2, 16, where)
    return dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wb, return_quant_tensor=True,
                **_bias_kw(layer, b, name, wb, where), **_const_po2(layer, "weight_frac_bits", wb, True, where, "weight_"))


def _dense(layer: dict[str, Any], b: _Build, name: str, where: str) -> nn.Module:
    if len(b.shape) > 1:
        b.counts["flatten"] = b.counts.get("flatten", 0) + 1
        b.mods.append((f"flatten{b.counts['flatten']}", nn.Flatten()))
        b.shape = (math.prod(b.shape),)
    units = _int(layer, "units", 0, 1, 4096, where)
    m = qnn.QuantLinear(b.shape[0], units, **_weight_kw(layer, b, name, where))
    b.shape = (units,)
    return m


def _conv(nd: int) -> Callable[[dict[str, Any], _Build, str, str], nn.Module]:
    def build(layer: dict[str, Any], b: _Build, name: str, where: str) -> nn.Module:
        t = layer["type"]
        if len(b.shape) != nd + 1:
            raise InputError(f"{where}: {t} needs an input of rank {nd + 1} (channels + {nd} spatial), got shape "
                             f"{b.shape}")
        filters = _int(layer, "filters", 0, 1, 512, where)
        k = _int(layer, "kernel", 3, 1, 15, where)
        pad = _int(layer, "padding", 0, 0, k // 2, where)
        cls = qnn.QuantConv1d if nd == 1 else qnn.QuantConv2d
        m = cls(b.shape[0], filters, k, padding=pad, **_weight_kw(layer, b, name, where))
        spatial = tuple(s + 2 * pad - k + 1 for s in b.shape[1:])
        if min(spatial) < 1:
            raise InputError(f"{where}: kernel {k} is larger than the input {b.shape[1:]}")
        b.shape = (filters, *spatial)
        return m
    return build


def _maxpool(layer: dict[str, Any], b: _Build, name: str, where: str) -> nn.Module:
    size = _int(layer, "size", 2, 2, 8, where)
    if len(b.shape) not in (2, 3):
        raise InputError(f"{where}: maxpool needs a conv feature map, got shape {b.shape}")
    m = nn.MaxPool1d(size) if len(b.shape) == 2 else nn.MaxPool2d(size)
    b.shape = (b.shape[0], *(s // size for s in b.shape[1:]))
    if min(b.shape[1:]) < 1:
        raise InputError(f"{where}: pool size {size} is larger than the feature map")
    return m


def _relu(layer: dict[str, Any], b: _Build, name: str, where: str) -> nn.Module:
    abits = _int(layer, "bits", b.defaults["act_bits"], 1, 16, where)
    b.bits[name] = {"act_bits": abits}
    m = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=abits, return_quant_tensor=True,
                      **_const_po2(layer, "frac_bits", abits, False, where))
    m.act_quant.fused_activation_quant_proxy.activation_impl = LeakyGradReLU()
    return m


def _flatten(layer: dict[str, Any], b: _Build, name: str, where: str) -> nn.Module:
    b.shape = (math.prod(b.shape),)
    return nn.Flatten()


@dataclass(frozen=True)
class LayerKind:
    """One student layer type: the keys its spec may carry and how it is built.  Adding a type to the
    student is one entry here (the hardware side registers its own ops in ``kdhw.hw.rtl``)."""

    keys: frozenset[str]
    build: Callable[[dict[str, Any], _Build, str, str], nn.Module]


_WEIGHTED = {"type", "weight_bits", "bias_bits", "bias", "weight_frac_bits"}
LAYERS: dict[str, LayerKind] = {
    "dense": LayerKind(frozenset(_WEIGHTED | {"units"}), _dense),
    "conv1d": LayerKind(frozenset(_WEIGHTED | {"filters", "kernel", "padding"}), _conv(1)),
    "conv2d": LayerKind(frozenset(_WEIGHTED | {"filters", "kernel", "padding"}), _conv(2)),
    "maxpool": LayerKind(frozenset({"type", "size"}), _maxpool),
    "relu": LayerKind(frozenset({"type", "bits", "frac_bits"}), _relu),
    "flatten": LayerKind(frozenset({"type"}), _flatten),
}
LAYER_TYPES = tuple(LAYERS)


def _layer_kind(layer: Any, where: str) -> LayerKind:
    if not isinstance(layer, dict) or "type" not in layer:
        raise InputError(f"{where}: each layer must be a mapping with a 'type' ({', '.join(LAYER_TYPES)})")
    t = layer["type"]
    if t in _REFUSED:
        raise InputError(f"{where}: type '{t}' refused: {_REFUSED[t]}")
    if t not in LAYERS:
        raise InputError(f"{where}: unknown layer type '{t}'; allowed: {', '.join(LAYER_TYPES)}")
    extra = set(layer) - LAYERS[t].keys
    if extra:
        raise InputError(f"{where}: unknown key '{sorted(extra)[0]}' for {t}; allowed: "
                         f"{', '.join(sorted(LAYERS[t].keys))}")
    return LAYERS[t]


def _input_quant(fmt: IOFormat) -> nn.Module:
    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if fmt.signed else Uint8ActPerTensorFixedPoint,
                             bit_width=fmt.bits, scaling_impl_type="const", scaling_init=2.0 ** fmt.int_bits,
                             return_quant_tensor=True)


def build_student(
    spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, src: str = "student"
) -> StudentNet:
    """Build the brevitas student; ``input_shape`` excludes the batch dim ((F,), (C, L) or (C, H, W))."""
    if spec.get("scaling", "po2") != "po2":
        raise InputError(
            f"{src}: student.scaling = {spec.get('scaling')!r} is not bit-exact (hls4ml turns non-power-of-two "
            "scales into normalize layers); use scaling: po2"
        )
    layers_spec = spec.get("layers")
    if not layers_spec:
        raise InputError(f"{src}: student.layers is empty; give a list of layers ({', '.join(LAYER_TYPES)})")
    fmt = _io_format(spec, src)
    out_spec = spec.get("output") or {}
    out_bits = _int(out_spec, "bits", 8, 2, 32, f"{src}: student.output")
    b = _Build(tuple(input_shape), {k: spec.get(k, d) for k, d in (("weight_bits", 4), ("bias_bits", 16),
                                                                    ("act_bits", 4))},
               {"input_quant": {"act_bits": fmt.bits}}, [("input_quant", _input_quant(fmt))])
    last_weighted = False
    for i, layer in enumerate(layers_spec):
        where = f"{src}: student.layers[{i}]"
        kind = _layer_kind(layer, where)
        t = layer["type"]
        b.counts[t] = b.counts.get(t, 0) + 1
        name = f"{t}{b.counts[t]}"
        b.mods.append((name, kind.build(layer, b, name, where)))
        last_weighted = t == "dense"
    if not last_weighted:
        raise InputError(f"{src}: student.layers must end with a dense layer of {n_classes} units (the logits)")
    if b.shape != (n_classes,):
        raise InputError(f"{src}: the last dense layer has {b.shape[0]} units but the data has {n_classes} classes")
    b.mods.append((
        "output_quant",
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=out_bits, return_quant_tensor=True,
                          **_const_po2(out_spec, "frac_bits", out_bits, True, f"{src}: student.output")),
    ))
    b.bits["output_quant"] = {"act_bits": out_bits}
    return StudentNet(b.mods, fmt, n_classes, b.bits)


def describe(model: StudentNet) -> list[dict[str, Any]]:
    """Per-layer summary (parameters, bit widths) for the report."""
    return [
        {"layer": name, "params": sum(p.numel() for n, p in m.named_parameters() if n in ("weight", "bias")),
         **model.bits.get(name, {})}
        for name, m in zip(model.names, model.layers)
    ]


def param_count(model: nn.Module) -> int:
    """Trainable weights and biases (quantizer scales excluded: they become fixed-point types in hardware)."""
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith(("weight", "bias")) and "quant" not in n)


def save_student(model: StudentNet, spec: dict[str, Any], input_shape: tuple[int, ...], path: Any) -> None:
    """Save weights + the spec that rebuilds the network (loadable with ``weights_only=True``)."""
    import io

    from kdhw.util.atomic import write_bytes

    buf = io.BytesIO()
    torch.save({"spec": spec, "input_shape": list(input_shape), "n_classes": model.n_classes,
                "state_dict": model.state_dict()}, buf)
    write_bytes(path, buf.getvalue())


def load_student(path: Any) -> StudentNet:
    """Rebuild a saved student in eval mode; no unpickling of arbitrary objects."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = build_student(blob["spec"], tuple(blob["input_shape"]), int(blob["n_classes"]), str(path))
        model.load_state_dict(blob["state_dict"])
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a kdhw student checkpoint ({type(e).__name__})") from None
    return model.eval()
