"""Resource-aware QAT: fixed-point precision learned per weight, trained against what the RTL pays.

Why a plain-torch model and not brevitas: QONNX, qonnx execution and hls4ml 1.3.0 accept one scalar bit width
per Quant node, and brevitas' per-channel bit widths do not export.  So the student is trained here as a
plain-torch network whose forward pass *is* the fixed-point arithmetic (every weight on the grid 2^-f of its
own learned fractional bits f, straight-through gradients), and is then **folded** into an ordinary kdhw
brevitas student: per tensor one constant power-of-two scale 2^-max(f) and enough bits to carry every
weight's code.  The per-weight grids are subsets of that one grid, so the folded student computes exactly
the same numbers (``fold`` checks it on the data), and from there the usual QONNX -> hls4ml / da4ml path and
its bit-exact verification apply unchanged.

The cost is HGQ's EBOPs: sum over non-zero weights of (bits of the input element) x (bits of the weight's
integer code).  da4ml builds every constant multiplication from shifts and adds, so a weight whose code is 0
costs nothing, and an input element that no weight reads (or that is a constant) drops out of the RTL.
Input bits per element come from interval bounds propagated through the network, the same worst-case
ranges da4ml sizes its adders with, so a hidden unit whose weights shrink also narrows what reads it.

Gradients: the weights get the identity (STE); the fractional bits f get the task gradient through the
quantization error (q = w + d with d ~ 2^-f, so dq/df = -ln2 * d) and the cost gradient d(bits)/df = 1 on
every weight still alive.  A weight whose f falls below -log2|w| rounds to 0 (pruned) and can come back if
the task needs it.  Beta ramps up log-linearly over the first ``ramp`` of the epochs, then stays; the
checkpoint is chosen among the epochs after the ramp (``select_from``), so a point's cost is the one its
beta asked for.  ``target_ebops`` steers beta instead (multiplied up or down each epoch toward the target).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdhw.config import RESOURCE_KEYS
from kdhw.errors import InputError

from .student import IOFormat, StudentNet, build_student, relu_grad_leak

LN2 = math.log(2.0)
F_MIN, F_MAX = -8.0, 8.0  # learned fractional bits of weights (8: products stay exact in float32)
A_MIN, A_MAX = -4.0, 8.0  # learned fractional bits of activations
CODE_MAX = 2 ** 15 - 1  # weight codes: the folded tensor stays within 16 bits


def _exact_plus(q0: torch.Tensor, *zeros: torch.Tensor) -> torch.Tensor:
    """``q0`` plus terms that are exactly 0 in the forward pass but carry gradients (x - x.detach())."""
    out = q0
    for z in zeros:
        out = out + z
    return out


def _code_bits(codes: torch.Tensor) -> torch.Tensor:
    """Bits of |code| (0 for a zero code): what a shift-and-add multiplier by that constant spans."""
    a = codes.abs()
    return torch.where(a > 0, torch.floor(torch.log2(a.clamp(min=1))) + 1, torch.zeros_like(a))


def _bits_of_range(lo_code: torch.Tensor, hi_code: torch.Tensor) -> torch.Tensor:
    """Bits a value with integer codes in [lo, hi] occupies (sign included when lo < 0); 0 for a constant."""
    mag = torch.maximum(hi_code, -lo_code - 1).clamp(min=0)
    b = torch.floor(torch.log2(mag.clamp(min=1))) + 1 + (lo_code < 0).float()
    b = torch.where(mag > 0, b, (lo_code < 0).float())
    return torch.where(hi_code > lo_code, b, torch.zeros_like(b))


# benchmarks switch this off (or kdhw.train.fast.ENABLED) to time the reference ops beside the one-op path
FUSED = True


def _fused() -> bool:
    """Train with the one-op quantizers below (``FUSED`` and ``kdhw.train.fast.ENABLED``; else the reference)."""
    from . import fast

    return FUSED and fast.ENABLED


# ---------------------------------------------------------------- one-op quantizers (the fused training path)
#
# Each returns the value of the reference formula (``_exact_plus``: q0 plus terms that are exactly zero,
# which for finite values is q0 + 0.0: x - x is +0.0, c * 0.0 is +-0.0, and adding either to q0 + 0.0, never
# -0.0, leaves it unchanged) and writes its backward out: the gradient each leaf gets from autograd's graph
# of the reference, the same products and reductions (``sum_to_size``: what the autograd engine does to a
# broadcast gradient), so a training run is bit-identical either way (tests/train/test_resource.py).
# Why: the reference builds 6-10 autograd nodes per quantizer out of ``_exact_plus`` terms, and on the tiny
# students kdhw trains, those nodes and ops, not arithmetic, were most of a step.

class _WeightQ(torch.autograd.Function):
    """q = (q0 + (w - w)) + c (f - f), c = -ln2 (q0 - w), f = clamp(frac): d/dw = 1, d/dfrac = c inside the
    clamp (summed to frac's shape: one f per weight or per channel)."""

    @staticmethod
    def forward(ctx, w, frac, q0, err):  # type: ignore[override]
        ctx.save_for_backward(frac, err)
        return q0 + 0.0

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        frac, err = ctx.saved_tensors
        gf = g * (-LN2 * err)
        if gf.shape != frac.shape:
            gf = gf.sum_to_size(frac.shape)
        return g, torch.where((frac >= F_MIN).logical_and_(frac <= F_MAX), gf, 0.0), None, None


class _ReLUQ(torch.autograd.Function):
    """FineReLU: (q0 + (r - r) inside) + c (f - f), r = relu(x), c = -ln2 (q0 - r): d/dx = inside through
    the ReLU (``leak`` x it where x <= 0, or 0 without a leak), d/dfrac = sum(c g) inside the clamp."""

    @staticmethod
    def forward(ctx, x, frac, s, top, leak):  # type: ignore[override]
        r = torch.relu(x)
        q0 = torch.clamp(torch.round(r * s), 0, top) / s
        ctx.save_for_backward(x, frac, r, q0)
        ctx.leak, ctx.lim = leak, top / s
        return q0 + 0.0

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, frac, r, q0 = ctx.saved_tensors
        inside = (r <= ctx.lim).float()
        c = -LN2 * (q0 - r)
        gr = g * inside
        gx = torch.where(x > 0, gr, ctx.leak * gr) if ctx.leak > 0 else torch.where(x > 0, gr, 0.0)
        gf = (g * c).sum_to_size(frac.shape)
        return gx, torch.where((frac >= A_MIN).logical_and_(frac <= A_MAX), gf, 0.0), None, None, None


class _OutQ(torch.autograd.Function):
    """FineOutput: q0 + (x - x) inside, q0 = clamp(round(x s), -lim, lim - 1) / s; d/dx = inside (x s within
    the clamp)."""

    @staticmethod
    def forward(ctx, x, s, lim):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.s, ctx.lim = s, lim
        return torch.clamp(torch.round(x * s), -lim, lim - 1) / s + 0.0

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        xs = x * ctx.s
        inside = ((xs >= -ctx.lim) & (xs <= ctx.lim - 1)).float()
        return g * inside, None, None


# ---------------------------------------------------------------- layers

class InputQuant(nn.Module):
    """The config's input format, fixed: round half to even and clamp, as brevitas' const-scale quantizer."""

    def __init__(self, fmt: IOFormat) -> None:
        super().__init__()
        self.fmt = fmt
        self.lo = -(2 ** (fmt.bits - 1)) if fmt.signed else 0
        self.hi = 2 ** (fmt.bits - 1) - 1 if fmt.signed else 2 ** fmt.bits - 1

    def frac(self) -> float:
        return -math.log2(self.fmt.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fmt.scale
        return torch.clamp(torch.round(x / s), self.lo, self.hi) * s


class FineLinear(nn.Module):
    """Dense or convolution whose weights each sit on their own learned grid 2^-f (or one f per channel)."""

    is_linear = True  # distill.embedding_layer: the penultimate representation feeds the last of these

    def __init__(self, ref: nn.Module, kind: str, bias_bits: int | None, granularity: str, f_init: float) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if ref.bias is not None else None
        self.bias_bits = bias_bits
        self.padding = ref.padding if kind != "dense" else 0
        shape = tuple(self.weight.shape) if granularity == "weight" else (self.weight.shape[0],) + (1,) * (
            self.weight.dim() - 1)
        self.frac = nn.Parameter(torch.full(shape, float(f_init)))

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights on their grids, with gradients; integer codes; rounded fractional bits per weight)."""
        if not _fused():
            return self.quantized_reference()
        with torch.no_grad():
            f = self.frac.clamp(F_MIN, F_MAX)
            fr = torch.round(f).expand_as(self.weight)
            s = torch.exp2(fr)
            codes = torch.clamp(torch.round(self.weight * s), -CODE_MAX, CODE_MAX)
            q0 = codes / s
            err = q0 - self.weight
        return _WeightQ.apply(self.weight, self.frac, q0, err), codes, fr

    def quantized_reference(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``quantized`` as autograd ops (the reference the one-op path reproduces)."""
        f = self.frac.clamp(F_MIN, F_MAX)
        fr = torch.round(f).detach().expand_as(self.weight)
        s = torch.exp2(fr)
        codes = torch.clamp(torch.round(self.weight.detach() * s), -CODE_MAX, CODE_MAX)
        q0 = codes / s
        err = (q0 - self.weight).detach()
        q = _exact_plus(q0, self.weight - self.weight.detach(), -LN2 * err * (f - f.detach()))
        return q, codes, fr

    def weight_bits(self, codes: torch.Tensor) -> torch.Tensor:
        """Bits of each weight's code, with d/df = 1 on every non-zero weight (the cost gradient)."""
        f = self.frac.clamp(F_MIN, F_MAX)
        return _exact_plus(_code_bits(codes), (f - f.detach()) * (codes != 0).float())

    def fold_frac(self, codes: torch.Tensor, fr: torch.Tensor) -> int:
        """The per-tensor fractional bits the folded quantizer uses: the finest grid any live weight needs."""
        live = codes != 0
        if not _fused():
            return int((fr[live] if live.any() else fr).max().item())
        top = float(torch.where(live, fr, -math.inf).max())  # the same maximum, one read instead of two
        return int(top if top != -math.inf else fr.max().item())

    def quantized_bias(self, in_frac: float, w_frac: int) -> torch.Tensor | None:
        """brevitas IntBias: scale = input scale x weight scale, ``bias_bits`` signed, round half to even."""
        if self.bias is None:
            return None
        s = 2.0 ** (in_frac + w_frac)
        lim = 2 ** (int(self.bias_bits) - 1)
        q0 = torch.clamp(torch.round(self.bias.detach() * s), -lim, lim - 1) / s
        return _exact_plus(q0, self.bias - self.bias.detach())

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "dense":
            return F.linear(x, w, b)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, w, b, padding=self.padding)


class FineReLU(nn.Module):
    """ReLU quantized per tensor: learned fractional bits, integer bits from a decaying running max."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.frac = nn.Parameter(torch.tensor(float(bits - 1)))
        self.register_buffer("int_bits", torch.tensor(1.0))
        self.register_buffer("vmax", torch.tensor(0.0))
        self.relu_leak = 0.0  # backward leak below zero (kdhw.train.student.relu_grad_leak), set per training run

    def grid(self) -> tuple[torch.Tensor, int, int]:
        """(continuous f for gradients, rounded fractional bits, total bits)."""
        f = self.frac.clamp(A_MIN, A_MAX)
        fr = int(torch.round(f).item())
        ib = int(self.int_bits.item())
        if ib + fr < 2:  # never one bit: brevitas exports a 1-bit activation as BipolarQuant ({-1, +1}), not Quant
            fr = 2 - ib
        return f, fr, ib + fr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m = x.detach().max().clamp(min=2.0 ** -8)
                self.vmax.copy_(torch.maximum(m, 0.98 * self.vmax))
                self.int_bits.fill_(float(min(max(math.ceil(math.log2(float(self.vmax))), -4), 12)))
        if _fused():
            _, fr, bits = self.last_grid = self.grid()
            s = 2.0 ** fr
            leak = float(self.relu_leak) if self.training else 0.0
            return _ReLUQ.apply(x, self.frac, s, 2 ** bits - 1, leak)
        f, fr, bits = self.grid()
        s = 2.0 ** fr
        r = relu_grad_leak(x, self.relu_leak) if self.training else F.relu(x)
        q0 = torch.clamp(torch.round(r.detach() * s), 0, 2 ** bits - 1) / s
        inside = (r.detach() <= (2 ** bits - 1) / s).float()
        return _exact_plus(q0, (r - r.detach()) * inside, -LN2 * (q0 - r).detach() * (f - f.detach()))


class FineOutput(nn.Module):
    """The config's output width, signed; fractional bits follow the logits' running max (no clipping)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("int_bits", torch.tensor(3.0))
        self.register_buffer("vmax", torch.tensor(0.0))

    def frac(self) -> int:
        return self.bits - 1 - int(self.int_bits.item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m = x.detach().abs().max().clamp(min=2.0 ** -8)
                self.vmax.copy_(torch.maximum(m, 0.98 * self.vmax))
                self.int_bits.fill_(float(min(max(math.ceil(math.log2(float(self.vmax) * 1.0001)), -8),
                                              self.bits + 8)))
        s = 2.0 ** self.frac()
        lim = 2 ** (self.bits - 1)
        if _fused():
            return _OutQ.apply(x, s, lim)
        q0 = torch.clamp(torch.round(x.detach() * s), -lim, lim - 1) / s
        inside = ((x.detach() * s >= -lim) & (x.detach() * s <= lim - 1)).float()
        return _exact_plus(q0, (x - x.detach()) * inside)


# ---------------------------------------------------------------- the network

class FineNet(nn.Module):
    """A student whose forward pass is its fixed-point arithmetic; owns its resource term and beta schedule.

    Built from a kdhw student spec (same layer names as the brevitas student ``fold`` produces) plus
    ``spec["resource"]``: ``beta``, ``epochs`` (for the ramp), ``ramp`` (fraction of the epochs), ``granularity``
    (``weight`` or ``channel``), optional ``target_ebops``.  ``kdhw.train.distill.train_arm`` adds
    ``resource_loss()`` to every batch's loss and calls ``set_epoch(ep)`` before each epoch.
    """

    def __init__(self, spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, src: str = "student") -> None:
        super().__init__()
        res = dict(spec.get("resource") or {})
        extra = set(res) - set(RESOURCE_KEYS)
        if extra:
            raise InputError(f"{src}: unknown key student.resource.{sorted(extra)[0]}; allowed: {', '.join(RESOURCE_KEYS)}")
        gran = res.get("granularity", "weight")
        if gran not in ("weight", "channel"):
            raise InputError(f"{src}: resource granularity = {gran!r}; choose weight or channel")
        base = {k: v for k, v in spec.items() if k != "resource"}
        ref = build_student(base, input_shape, n_classes, src)  # validates the spec, gives names and init
        self.spec, self.input_shape, self.n_classes = base, tuple(input_shape), n_classes
        self.input_format = ref.input_format
        self.names = list(ref.names)
        layers: list[nn.Module] = []
        for name, m in zip(ref.names, ref.layers):
            kind = "dense" if name.startswith("dense") else name.rstrip("0123456789")
            if name == "input_quant":
                layers.append(InputQuant(ref.input_format))
            elif name == "output_quant":
                layers.append(FineOutput(ref.bits["output_quant"]["act_bits"]))
            elif kind in ("dense", "conv1d", "conv2d"):
                b = ref.bits[name]
                w = m.weight.detach()
                f0 = b["weight_bits"] - 1 - math.ceil(math.log2(float(w.abs().max()) + 1e-12))
                layers.append(FineLinear(m, kind, b.get("bias_bits"), gran, f0))
            elif kind == "relu":
                layers.append(FineReLU(ref.bits[name]["act_bits"]))
            else:  # maxpool, flatten: no arithmetic to quantize
                layers.append(copy.deepcopy(m))
        self.layers = nn.ModuleList(layers)
        self.beta_target = float(res.get("beta", 0.0))
        self.target_ebops = res.get("target_ebops")
        self.epochs = int(res.get("epochs", 1))
        self.ramp = float(res.get("ramp", 0.3))
        self.beta = self.beta_target
        self.select_from = int(round(self.ramp * self.epochs)) if self.beta_target > 0 else 0
        self.last_ebops = float("nan")

    # -- forward ---------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, return_features: bool = False) -> Any:
        feats: dict[str, torch.Tensor] = {}
        frac = 0.0
        fused = _fused()
        # a training step's loss adds resource_loss() right after this forward, with the same weights: it reads
        # the codes and grids computed here instead of computing them again (same values)
        cache: list[Any] | None = [] if fused and self.training and torch.is_grad_enabled() else None
        self._step_cache = cache
        for name, layer in zip(self.names, self.layers):
            if isinstance(layer, InputQuant):
                x, frac = layer(x), layer.frac()
            elif isinstance(layer, FineLinear):
                w, codes, fr = layer.quantized()
                wf = layer.fold_frac(codes, fr)
                b = layer.quantized_bias(frac, wf)
                x = layer.apply(x, w, b)
                if cache is not None:
                    cache.append((w.detach(), codes, fr, wf, None if b is None else b.detach()))
                frac = frac + wf
            elif isinstance(layer, FineReLU):
                x = layer(x)
                frac = float(layer.last_grid[1] if fused else layer.grid()[1])
                if cache is not None:
                    cache.append(layer.last_grid[1:])
            elif isinstance(layer, FineOutput):
                x = layer(x)
                frac = float(layer.frac())
            else:
                x = layer(x)
            if return_features:
                feats[name] = x
        return (x, feats) if return_features else x

    # -- cost ------------------------------------------------------------------------------------------

    def ebops(self, step_cache: list[Any] | None = None) -> torch.Tensor:
        """Sum over live weights of (input element bits) x (weight code bits), differentiable in the f's.

        Input bits per element come from interval bounds (the worst-case ranges da4ml sizes adders with):
        an element that is constant, or read by no live weight, costs nothing.  ``step_cache``: the codes,
        grids and quantized tensors the training forward just computed with the same weights.
        """
        fmt = self.input_format
        shape = (1, *self.input_shape)
        q_in = self.layers[0]
        lo = torch.full(shape, float(q_in.lo) * fmt.scale)
        hi = torch.full(shape, float(q_in.hi) * fmt.scale)
        bits = torch.full(shape, float(fmt.bits))
        frac = q_in.frac()
        total = torch.zeros(())
        cache = iter(step_cache) if step_cache is not None else None
        # nothing after the last weighted layer adds to the cost: the fused path stops there (same total)
        last = max(i for i, m in enumerate(self.layers) if isinstance(m, FineLinear)) if _fused() else -1
        for i, layer in enumerate(self.layers[1:], 1):
            if isinstance(layer, FineLinear):
                if cache is not None:  # the forward's values (same weights): only the cost's own ops are new
                    wd, codes, fr, wf, b = next(cache)
                else:
                    w, codes, fr = layer.quantized()
                    wd = w.detach()
                    wf = layer.fold_frac(codes, fr)
                    b = layer.quantized_bias(frac, wf)
                    b = None if b is None else b.detach()
                wb = layer.weight_bits(codes)
                if layer.kind == "dense":
                    total = total + (bits.reshape(1, -1) * wb).sum()
                else:
                    total = total + layer.apply(bits, wb, None).sum()
                if i == last:
                    break
                wp, wn = wd.clamp(min=0), wd.clamp(max=0)
                lo, hi = (layer.apply(lo, wp, b) + layer.apply(hi, wn, None),
                          layer.apply(hi, wp, b) + layer.apply(lo, wn, None))
                frac = frac + wf
                s = 2.0 ** frac
                bits = _bits_of_range(torch.floor(lo * s), torch.ceil(hi * s))
            elif isinstance(layer, FineReLU):
                if cache is not None:
                    fr, nbits = next(cache)
                    f = layer.frac.clamp(A_MIN, A_MAX)
                else:
                    f, fr, nbits = layer.grid()
                s = 2.0 ** fr
                top = 2 ** nbits - 1
                clo = torch.clamp(torch.round(F.relu(lo) * s), 0, top)
                chi = torch.clamp(torch.round(F.relu(hi) * s), 0, top)
                lo, hi, frac = clo / s, chi / s, float(fr)
                b0 = _bits_of_range(clo, chi)
                bits = _exact_plus(b0, (f - f.detach()) * (b0 > 0).float())
            elif isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
                lo, hi, bits = layer(lo), layer(hi), layer(bits)
            elif isinstance(layer, nn.Flatten):
                lo, hi, bits = layer(lo), layer(hi), layer(bits)
        return total

    def resource_loss(self) -> torch.Tensor:
        cache, self._step_cache = getattr(self, "_step_cache", None), None
        e = self.ebops(cache)
        self.last_ebops = float(e.detach())
        return self.beta * e if self.beta > 0 else e * 0.0

    def set_epoch(self, ep: int) -> None:
        """Beta for epoch ``ep``: log-linear ramp from 1 % to 100 % of the target, or steered to target_ebops."""
        if self.target_ebops is not None and ep > 0 and math.isfinite(self.last_ebops):
            ratio = self.last_ebops / float(self.target_ebops)
            self.beta = min(max(self.beta * (1.25 if ratio > 1 else 0.8), 1e-9), 1.0)
            return
        n = max(self.select_from, 1)
        self.beta = self.beta_target * (10.0 ** (-2.0 * (1.0 - ep / n)) if ep < self.select_from else 1.0)

    # -- what the hardware will read ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """EBOPs, live/pruned weights per layer and the input elements any live weight reads."""
        rows, live_total, n_total = [], 0, 0
        first = None
        with torch.no_grad():
            for name, layer in zip(self.names, self.layers):
                if isinstance(layer, FineLinear):
                    _, codes, fr = layer.quantized()
                    live = int((codes != 0).sum())
                    live_total, n_total = live_total + live, n_total + codes.numel()
                    bits = _code_bits(codes)
                    rows.append({"layer": name, "weights": int(codes.numel()), "live": live,
                                 "mean_bits_live": float(bits[codes != 0].mean()) if live else 0.0,
                                 "frac_bits": layer.fold_frac(codes, fr)})
                    if first is None:
                        first = (layer, codes)
            read = None
            if first is not None:
                layer, codes = first
                x = torch.ones((1, *self.input_shape), requires_grad=True)
                with torch.enable_grad():
                    inp = x.reshape(1, -1) if layer.kind == "dense" else x
                    layer.apply(inp, (codes != 0).float(), None).sum().backward()
                read = int((x.grad != 0).sum())
            e = float(self.ebops())
        return {"ebops": e, "weights": n_total, "live_weights": live_total, "layers": rows,
                "inputs": int(np.prod(self.input_shape)), "inputs_read": read}


def build_trainable(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int,
                    src: str = "student") -> nn.Module:
    """The model ``train_arm`` trains: a FineNet when the spec asks for resource-aware training."""
    if spec.get("resource") is not None:
        return FineNet(spec, input_shape, n_classes, src)
    return build_student(spec, input_shape, n_classes, src)


# ---------------------------------------------------------------- fold into a brevitas student

def folded_spec(model: FineNet) -> dict[str, Any]:
    """The kdhw student spec of the folded network: per tensor the finest live grid and enough bits."""
    spec = copy.deepcopy(model.spec)
    layer_specs = [dict(l) for l in spec["layers"]]
    by_name: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for l in layer_specs:
        counts[l["type"]] = counts.get(l["type"], 0) + 1
        by_name[f"{l['type']}{counts[l['type']]}"] = l
    with torch.no_grad():
        for name, layer in zip(model.names, model.layers):
            if isinstance(layer, FineLinear):
                _, codes, fr = layer.quantized()
                ff = layer.fold_frac(codes, fr)
                folded = codes * torch.exp2(ff - fr)
                mag = int(folded.abs().max().item())
                by_name[name].update(weight_bits=max(2, mag.bit_length() + 1), weight_frac_bits=ff)
            elif isinstance(layer, FineReLU):
                _, fr, nbits = layer.grid()
                by_name[name].update(bits=nbits, frac_bits=fr)
            elif isinstance(layer, FineOutput):
                spec["output"] = {**(spec.get("output") or {}), "bits": layer.bits, "frac_bits": layer.frac()}
    spec["layers"] = layer_specs
    return spec


def fold(model: FineNet, check_x: np.ndarray | None = None) -> tuple[StudentNet, dict[str, Any]]:
    """The brevitas student carrying exactly the trained model's values; (student, its spec).

    With ``check_x`` the two forward passes are compared on those rows with exact equality; a difference is a
    bug in kdhw (raised as RuntimeError), never silently exported.
    """
    model = model.eval()
    spec = folded_spec(model)
    student = build_student(spec, model.input_shape, model.n_classes, "folded student")
    frac = model.layers[0].frac()
    mods = dict(zip(student.names, student.layers))
    with torch.no_grad():
        for name, layer in zip(model.names, model.layers):
            if isinstance(layer, FineLinear):
                q, codes, fr = layer.quantized()
                wf = layer.fold_frac(codes, fr)
                mods[name].weight.copy_(q)
                if layer.bias is not None:
                    mods[name].bias.copy_(layer.quantized_bias(frac, wf))
                frac = frac + wf
            elif isinstance(layer, FineReLU):
                frac = float(layer.grid()[1])
    student.eval()
    if check_x is not None:
        xt = torch.from_numpy(np.ascontiguousarray(check_x, dtype=np.float32))
        with torch.no_grad():
            a, b = model(xt), student(xt)
        if not torch.equal(a, b):
            bad = int((a != b).any(dim=1).sum())
            raise RuntimeError(f"internal error: the folded brevitas student differs from the trained model on "
                               f"{bad} of {len(xt)} rows")
    return student, spec


def resource_spec(spec: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The spec ``distill()`` trains for a config's student section: with a ``resource`` entry, its beta ramp
    spans the arm's ``epochs`` unless the entry says otherwise; without one, the spec unchanged."""
    if spec.get("resource") is None:
        return spec
    return {**spec, "resource": {"epochs": int(epochs), **spec["resource"]}}


def fold_arms(arms: dict[str, Any], check_x: np.ndarray) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every resource-aware arm of a ``distill()`` result as its folded brevitas student (exactness checked on
    ``check_x``); (arms, the folded spec of each arm).  Arms that are already brevitas students pass through.

    Each arm learned its own precisions, so each has its own spec: a checkpoint saved with another arm's
    spec would rebuild different quantizers.  The arm's ``info["resource"]`` records what the hardware will
    read (EBOPs, live weights, inputs read) before folding.
    """
    import dataclasses

    out, specs = {}, {}
    for k, a in arms.items():
        if not isinstance(a.model, FineNet):
            out[k], specs[k] = a, None
            continue
        stats = a.model.stats()
        student, spec = fold(a.model, check_x=check_x)
        out[k] = dataclasses.replace(a, model=student, info={**a.info, "resource": {
            "beta": a.model.beta_target, "ebops": stats["ebops"], "weights": stats["weights"],
            "live_weights": stats["live_weights"], "inputs": stats["inputs"], "inputs_read": stats["inputs_read"]}})
        specs[k] = spec
    return out, specs


__all__ = ["FineNet", "build_trainable", "fold", "fold_arms", "folded_spec", "resource_spec"]
