"""Fast training of brevitas students: a fused fake-quant forward that computes the same numbers.

Why: brevitas builds every quantizer out of a dozen small modules (proxies, scaling, restrict, clamp,
QuantTensor wrappers), and on the tiny students kdhw trains that Python overhead, not arithmetic, was most of
a training step: 70-80 % of a function-matching step went to the student's forward and backward, most of it
inside brevitas (benchmarks/results/train_profile.md).  ``FusedForward`` computes what the brevitas student
computes with plain torch ops, reading the brevitas student's own parameters and updating its own quantizer
state, so the optimizer, the checkpoints and the exported network are the brevitas student's, unchanged and
bit-exact in hardware as before.  ``kdhw.train.distill.train_arm`` attaches it for training and detaches it
afterwards (export and everything downstream run brevitas' own forward).

What it reproduces, read from the built modules (a quantizer it does not recognise refuses the fused path
and the student keeps brevitas' forward; so do quantizers switched off by a float warm-up, and export):

* input and constant-scale quantizers: round half to even, clamp to the integer range, times the scale
  taken from the brevitas module itself;
* weights (``Int8WeightPerTensorFixedPoint``): scale 2^ceil(log2 max|w|) / 2^(bits-1), narrow range,
  straight-through round and clamp, and the gradient brevitas sends through the scale into the weights of
  largest magnitude; or a constant scale (``weight_frac_bits``);
* integer bias: scale = input scale x weight scale, round, clamp (no gradient where clamped), the gradient
  into both scales;
* ReLU and output quantizers (``*ActPerTensorFixedPoint``): the statistics phase (a batch percentile as
  the scale, the running average, for ``collect_stats_steps`` training steps), its initialisation of the
  learned log2 scale, then 2^ceil(value) / 2^bits with the value's gradient, round, clamp; the ReLU's
  backward leak (``student.relu_grad_leak``) folded in.

Training steps after the statistics phase run the whole student as one autograd op (``_Net``) with its
backward written out; the statistics phase, feature taps and evaluation run layer by layer (the ops below).
Each gradient is a sum of terms added in the order brevitas' autograd graph adds them, so gradients and
whole training runs are bit-identical to brevitas' on the same machine (tests/train/test_fast_forward.py:
values with torch.equal, gradients with a tight allclose, trajectories with torch.equal).

Also here, for the rest of a function-matching step: ``exact_max_pool`` and ``bare_forward`` (the online
teacher's max pools and layer calls, same values), ``spare_core`` (may batches be made on a second core),
and ``ENABLED``, which benchmarks/train_speed.py switches off to time today's path beside this one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import brevitas.nn as qnn
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from brevitas.core.function_wrapper.clamp import TensorClamp
from brevitas.core.function_wrapper.misc import Identity
from brevitas.core.function_wrapper.ops_ste import CeilSte, RoundSte, ScalarSignedClampMinSte, TensorClampSte
from brevitas.core.function_wrapper.shape import OverTensorView
from brevitas.core.restrict_val import PowerOfTwoRestrictValue
from brevitas.core.scaling.runtime import StatsFromParameterScaling
from brevitas.core.scaling.standalone import ConstScaling, ParameterFromRuntimeStatsScaling
from brevitas.core.stats.stats_op import AbsMax, AbsPercentile
from brevitas.core.utils import inplace_momentum_update, inplace_tensor_mul
from brevitas.core.zero_point import ZeroZeroPoint

from .student import relu_grad_leak

LN2 = math.log(2.0)


class Refused(Exception):
    """The student holds a quantizer the fused forward does not reproduce (it keeps brevitas' forward)."""


# ---------------------------------------------------------------- the fused ops
#
# Each op's backward computes what brevitas' autograd graph computes, in the same arithmetic and, where a
# gradient is a sum of several terms, in the order that graph accumulates them (float addition is not
# associative): the gradients are then bit-identical to brevitas', and so is a whole training run on one
# machine (tests/train/test_fast_forward.py checks both).

def _po2_scale(v: torch.Tensor, mv: float, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(2^ceil(v), max(2^ceil(v), mv) / thr): brevitas' power-of-two restriction, clamp and threshold."""
    p = torch.pow(2.0, torch.ceil(v))
    return p, p.clamp_min(mv) / thr


class _WeightBias(torch.autograd.Function):
    """A weighted layer's quantized weight and bias (None without one).

    Weight (``Int8WeightPerTensorFixedPoint``): m = max|w| (at least ``mv``), s = max(2^ceil(log2 m), mv)
    / thr, q = clamp(round(w/s)) * s, straight through round and clamp; its gradient also flows through s
    (product and quotient rule, 2^x, ceil straight through, log2) into the weights of largest magnitude,
    shared evenly among ties, with their sign.  ``s_const`` replaces the statistics with a constant scale.
    Bias (``IntBias``): scale s * ``s_in`` (the input's scale), round, clamp (no gradient where clamped),
    the gradient into both scales.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, b: torch.Tensor | None, s_in: torch.Tensor | None,
                st: _Weighted) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx.set_materialize_grads(False)
        ctx.st = st
        if st.const is None:
            a = w.abs()
            m = a.max()
            mc = m.clamp_min(st.mv)
            p, s = _po2_scale(torch.log2(mc), st.mv, st.thr)
        else:
            a = m = mc = p = None
            s = st.const
        yi = torch.round(w / s).clamp_(st.lo, st.hi)
        qw = yi * s
        qb = sb = bc = out_b = None
        if b is not None:
            sb = (s * s_in).reshape(-1)
            bi = torch.round(b / sb)
            bc = bi.clamp(*st.bias)
            out_b = bc != bi
            qb = bc * sb
        ctx.save_for_backward(w, a, m, mc, p, s, yi, b, s_in, sb, bc, out_b)
        return qw, qb

    @staticmethod
    def backward(ctx: Any, g_qw: torch.Tensor, g_qb: torch.Tensor | None) -> tuple[Any, ...]:
        w, a, m, mc, p, s, yi, b, s_in, sb, bc, out_b = ctx.saved_tensors
        st = ctx.st
        g_b = g_sin = g_sw_b = None
        if b is not None and g_qb is not None:
            gbi = (g_qb * sb).masked_fill_(out_b, 0.0)
            g_b = gbi / sb
            if ctx.needs_input_grad[2] or st.const is None:
                g_sb = (g_qb * bc).sum() + (-gbi * ((b / sb) / sb)).sum()
                g_sw_b = g_sb * s_in
                g_sin = (g_sb * s).reshape(s_in.shape) if ctx.needs_input_grad[2] else None
        if st.const is not None:
            return g_qw, g_b, g_sin, None
        # the scale's gradient in the order brevitas' graph accumulates it: product rule, bias, quotient rule
        g_s = (g_qw * yi).sum()
        if g_sw_b is not None:
            g_s = g_s + g_sw_b.reshape(())
        g_s = g_s + (-(g_qw * s) * ((w / s) / s)).sum()
        g_m = ((g_s / st.thr) * (p * LN2)) / (mc * LN2)
        hit = a == m
        g_w = g_qw + torch.where(hit, torch.sign(w) * (g_m / hit.sum()), 0.0)
        return g_w, g_b, g_sin, None


class _ActQuant(torch.autograd.Function):
    """A ReLU or output quantizer after its statistics phase: returns (y, scale).

    s = max(2^ceil(v), mv) / thr from the learned log2 value v; y = clamp(round(r/s)) * s with r = relu(x)
    (``leak`` not None) or x, no gradient where clamped (brevitas' TensorClamp); the ReLU's backward passes
    ``leak`` x the gradient where x <= 0 (``student.relu_grad_leak``).  The scale's gradient adds the next
    layer's bias term (arriving through the returned scale) first, then the product and quotient rule terms,
    as brevitas' graph does.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, v: torch.Tensor, st: _Act, leak: float | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        p, s = _po2_scale(v, st.mv, st.thr_r)
        r = torch.relu(x) if leak is not None else x
        yi = torch.round(r / s)
        yc = yi.clamp(st.lo, st.hi)
        out = yc != yi
        ctx.save_for_backward(x, r, p, s, yc, out)
        ctx.leak, ctx.thr = leak, st.thr_r
        return yc * s, s

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, g_s_out: torch.Tensor | None) -> tuple[Any, ...]:
        x, r, p, s, yc, out = ctx.saved_tensors
        gi = (g * s).masked_fill_(out, 0.0)
        g_s = (g * yc).sum()
        if g_s_out is not None:
            g_s = g_s_out + g_s
        g_s = g_s + (-gi * ((r / s) / s)).sum()
        g_v = (g_s / ctx.thr) * (p * LN2)
        g_x = gi / s
        if ctx.leak is not None:
            g_x = torch.where(x > 0, g_x, ctx.leak * g_x)
        return g_x, g_v, None, None


class _ClampQuant(torch.autograd.Function):
    """y = clamp(round(r/s)) * s for a scale computed elsewhere (brevitas' statistics phase), as
    ``_ActQuant``; the scale comes in twice (``s`` and ``s2``, the same tensor) so that autograd adds the
    product rule's and the quotient rule's terms to it one after the other, as brevitas' graph does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, s: torch.Tensor, s2: torch.Tensor, lo: float, hi: float
                ) -> torch.Tensor:
        yi = torch.round(x / s)
        yc = yi.clamp(lo, hi)
        out = yc != yi
        ctx.save_for_backward(x, s, yc, out)
        return yc * s

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, s, yc, out = ctx.saved_tensors
        gi = (g * s).masked_fill_(out, 0.0)
        ga = gb = None
        if ctx.needs_input_grad[1]:
            ga = (g * yc).sum().reshape(s.shape)
            gb = (-gi * ((x / s) / s)).sum().reshape(s.shape)
        return gi / s, ga, gb, None, None


_f32 = np.float32
_LN2_32 = _f32(LN2)


class _Net(torch.autograd.Function):
    """The whole student in one autograd op (training steps after the statistics phase).

    Why: on these tiny students the autograd nodes and the small ops, not the arithmetic, were most of a
    step.  The forward is the arithmetic of the ops above; the backward is written out layer by layer with
    the calls autograd makes (``addmm``'s and ``convolution_backward``'s gradients, max pool routing to the
    first maximum of its window) and the quantizers' terms summed in brevitas' order.  Every scale is a power
    of two here, and scalar quantities (scales, the terms of a scale's gradient) are carried as float32 on
    the host (numpy float32: IEEE single precision, correctly rounded like torch's CPU float32 ops), which
    replaces dozens of one-element tensor ops per step with the same numbers.
    """

    @staticmethod
    def forward(ctx: Any, ff: FusedForward, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        recs: list[tuple[Any, ...]] = []
        h, scale, learned, first = x, 0.0, False, True
        for kind, st in ff.steps:
            if kind == "act":
                leak = float(st.leak_mod.relu_leak) if st.leak_mod is not None else None
                r = torch.relu(h) if leak is not None else h
                if st.const is not None:
                    p, s = None, st.const_f
                else:
                    # torch.pow(2, ceil(v)).clamp_min(mv) / thr, exactly: integer powers of two
                    p = 2.0 ** math.ceil(float(st.impl.value))
                    s = max(p, st.mv32) / st.thr_r
                yf = r / s
                yi = torch.round(yf)
                yc = yi.clamp(st.lo, st.hi)
                if not first:
                    recs.append(("act", st, h, yf, p, s, yc, yc != yi, leak))
                h, scale, learned, first = yc * s, s, p is not None, False
            elif kind == "weighted":
                layer = st.layer
                w, b = layer.weight, layer.bias
                hit = None
                if st.const is None:
                    a = w.abs()
                    m = a.max()
                    # log2 as torch computes it in float32 (its rounding decides ceil near powers of two)
                    c = float(torch.ceil(torch.log2(m.clamp_min(st.mv))))
                    mc = max(float(m), st.mv32)
                    p = 2.0 ** c
                    s = max(p, st.mv32) / st.thr
                    hit = a == m
                    n_hit = int(hit.sum())
                    if n_hit == 1:
                        i = int(a.view(-1).argmax())
                        hit = (i, float(torch.sign(w.view(-1)[i])))
                else:
                    mc = p = None
                    s = st.const_f
                wf = w / s
                yi = torch.round(wf).clamp_(st.lo, st.hi)
                qw = yi * s
                qb = sb = bc = out_b = bf = None
                if b is not None:
                    sb = s * scale
                    bf = b / sb
                    bi = torch.round(bf)
                    bc = bi.clamp(*st.bias)
                    out_b = bc != bi
                    qb = bc * sb
                recs.append(("weighted", st, h, qw, w, wf, hit, mc, p, s, yi, b, scale, learned, sb, bc, out_b, bf))
                if st.kind == "dense":
                    h = F.linear(h, qw, qb)
                else:
                    conv = F.conv1d if st.kind == "conv1d" else F.conv2d
                    h = conv(h, qw, qb, layer.stride, layer.padding, layer.dilation, layer.groups)
            elif kind == "pool":
                k = st[1]
                nd = len(k)
                shape = h.shape
                hc = h[(..., *(slice(0, (n // kk) * kk) for n, kk in zip(shape[-nd:], k)))]
                parts = [hc[(..., *(slice(o, None, kk) for o, kk in zip(offs, k)))]
                         for offs in itertools.product(*(range(kk) for kk in k))]
                best, arg = parts[0], None
                for j, part in enumerate(parts[1:], 1):
                    upd = part > best  # torch's max pool keeps the first maximum of a window
                    best = torch.where(upd, part, best)
                    if len(parts) == 2:
                        arg = upd
                    else:
                        arg = torch.zeros(best.shape, dtype=torch.uint8) if arg is None else arg
                        arg.masked_fill_(upd, j)
                recs.append(("pool", k, shape, arg, len(parts)))
                h = best
            else:
                recs.append(("flatten", h.shape))
                h = h.flatten(*st)
        ctx.recs = recs
        return h

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        grads: list[torch.Tensor | None] = []
        g_scale: float | None = None  # the next weighted layer's bias term for the scale feeding it
        recs = ctx.recs
        for i in range(len(recs) - 1, -1, -1):
            rec = recs[i]
            kind = rec[0]
            if kind == "act":
                _, st, x, yf, p, s, yc, out, leak = rec
                gi = (g * s).masked_fill_(out, 0.0)
                if p is not None:
                    g_s = _f32((g * yc).sum())
                    if g_scale is not None:
                        g_s = _f32(g_scale) + g_s
                    g_s = g_s - _f32((gi * (yf / s)).sum())
                    g_v = (g_s / _f32(st.thr_r)) * (_f32(p) * _LN2_32)
                    grads.append(torch.tensor(float(g_v)).reshape(st.impl.value.shape))
                g = gi / s
                if leak is not None:
                    g = torch.where(x > 0, g, leak * g)
                g_scale = None
            elif kind == "weighted":
                _, st, h, qw, w, wf, hit, mc, p, s, yi, b, s_in, learned, sb, bc, out_b, bf = rec
                layer = st.layer
                need_h = any(r[0] == "act" or r[0] == "weighted" for r in recs[:i])
                g_h = g_qb = None
                if st.kind == "dense":
                    g_qw = g.t().mm(h)
                    if b is not None:
                        g_qb = g.sum(0)
                    if need_h:
                        g_h = g.mm(qw)
                else:
                    g_h, g_qw, g_qb = torch.ops.aten.convolution_backward(
                        g, h, qw, [qw.shape[0]] if b is not None else None, list(layer.stride), list(layer.padding),
                        list(layer.dilation), False, [0] * len(layer.stride), layer.groups,
                        [need_h, True, b is not None])
                g_sw_b = None
                g_scale = None
                if b is not None:
                    gbi = (g_qb * sb).masked_fill_(out_b, 0.0)
                    g_b = gbi / sb
                    if learned or st.const is None:
                        g_sb = _f32((g_qb * bc).sum()) - _f32((gbi * (bf / sb)).sum())
                        g_sw_b = g_sb * _f32(s_in)
                        if learned:
                            g_scale = float(g_sb * _f32(s))
                if st.const is not None:
                    g_w = g_qw
                else:
                    g_s = _f32((g_qw * yi).sum())
                    if g_sw_b is not None:
                        g_s = g_s + g_sw_b
                    g_s = g_s - _f32(((g_qw * s) * (wf / s)).sum())
                    g_m = ((g_s / _f32(st.thr)) * (_f32(p) * _LN2_32)) / (_f32(mc) * _LN2_32)
                    if isinstance(hit, tuple):  # one weight of largest magnitude: add its term in place
                        j, sgn = hit
                        g_w = g_qw.contiguous()
                        flat = g_w.view(-1)
                        flat[j] = float(_f32(float(flat[j])) + _f32(sgn) * g_m)
                    else:
                        g_w = g_qw + torch.where(hit, torch.sign(w) * float(g_m / _f32(int(hit.sum()))), 0.0)
                if b is not None:
                    grads.append(g_b)
                grads.append(g_w)
                g = g_h
            elif kind == "pool":
                _, k, shape, arg, n = rec
                nd = len(k)
                g_in = g.new_zeros(shape)
                gc = g_in[(..., *(slice(0, (m // kk) * kk) for m, kk in zip(shape[-nd:], k)))]
                for j, offs in enumerate(itertools.product(*(range(kk) for kk in k))):
                    pick = (~arg if j == 0 else arg) if n == 2 else (arg == j)
                    gc[(..., *(slice(o, None, kk) for o, kk in zip(offs, k)))].add_(g * pick)
                g = g_in
            else:
                g = g.reshape(rec[1])
            if g is None:
                break
        grads.reverse()
        return (None, None, *grads)


# ---------------------------------------------------------------- reading the brevitas modules

def _is(m: Any, cls: type) -> bool:
    return type(m) is cls


def _po2_ceil(restrict: Any) -> bool:
    return _is(restrict, PowerOfTwoRestrictValue) and _is(restrict.float_to_int_impl, CeilSte)


def _clamp_min(m: Any) -> float | None:
    """min_val of a ScalarSignedClampMinSte, None for an Identity; refuses anything else."""
    if _is(m, ScalarSignedClampMinSte):
        return float(m.min_val)
    if _is(m, Identity):
        return None
    raise Refused(f"clamp {type(m).__name__}")


def _int_range(tq: Any, ste_clamp: bool) -> tuple[float, float, torch.Tensor]:
    iq = tq.int_quant
    if not _is(iq.float_to_int_impl, RoundSte):
        raise Refused("rounding is not round-half-even")
    if not _is(iq.tensor_clamp_impl, TensorClampSte if ste_clamp else TensorClamp):
        raise Refused(f"clamp {type(iq.tensor_clamp_impl).__name__}")
    if not _is(iq.input_view_impl, Identity) or iq.delay_wrapper.delay_impl.__class__.__name__ != "_NoDelay":
        raise Refused("input view or quantization delay")
    bw = tq.msb_clamp_bit_width_impl()
    return float(iq.min_int(bw)), float(iq.max_int(bw)), bw


def _const_scale(si: Any, thr: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return si(torch.empty(1), thr).detach().clone()


@dataclass
class _Act:
    """A runtime quantizer: the input's, a ReLU's or the output's."""

    proxy: Any
    lo: float
    hi: float
    thr: torch.Tensor  # brevitas' integer threshold (2^bits for unsigned, 2^(bits-1) signed)
    const: torch.Tensor | None  # constant scale, or None: learned (ParameterFromRuntimeStatsScaling)
    impl: Any = None
    thr_r: float = 1.0  # the threshold after brevitas' power-of-two restriction
    mv: float = 0.0
    leak_mod: Any = None  # the LeakyGradReLU of a QuantReLU (None: identity activation)
    q: float = 100.0  # the statistics' percentile

    def __post_init__(self) -> None:
        self.const_f = float(self.const) if self.const is not None else None
        self.mv32 = float(np.float32(self.mv))  # what clamp_min(mv) compares float32 values with


@dataclass
class _Weighted:
    layer: Any
    kind: str  # dense | conv1d | conv2d
    lo: float
    hi: float
    thr: float
    mv: float
    const: torch.Tensor | None
    bias: tuple[float, float] | None

    def __post_init__(self) -> None:
        self.const_f = float(self.const) if self.const is not None else None
        self.mv32 = float(np.float32(self.mv))


def _act(layer: Any) -> _Act:
    proxy = layer.act_quant
    fp = proxy.fused_activation_quant_proxy
    if fp is None:
        raise Refused("activation without quantizer")
    tq = fp.tensor_quant
    if type(tq).__name__ != "RescalingIntQuant" or not _is(tq.zero_point_impl, ZeroZeroPoint):
        raise Refused(f"activation quantizer {type(tq).__name__}")
    act = fp.activation_impl
    leak_mod = None
    if isinstance(layer, qnn.QuantReLU):
        if not hasattr(act, "relu_leak"):
            raise Refused("QuantReLU without kdhw's LeakyGradReLU")
        leak_mod = act
    elif not (_is(act, Identity) or _is(act, nn.Identity)):
        raise Refused(f"activation {type(act).__name__}")
    lo, hi, bw = _int_range(tq, ste_clamp=False)
    thr = tq.int_scaling_impl(bw).detach()
    si = tq.scaling_impl
    if _is(si, ConstScaling):
        return _Act(proxy, lo, hi, thr, _const_scale(si, thr), leak_mod=leak_mod)
    if not _is(si, ParameterFromRuntimeStatsScaling):
        raise Refused(f"activation scaling {type(si).__name__}")
    if not (_po2_ceil(si.restrict_scaling.restrict_value_impl) and _po2_ceil(si.restrict_threshold.restrict_value_impl)
            and _is(si.restrict_scale_threshold.restrict_value_impl, Identity) and not si.local_loss_mode
            and _is(si.stats.stats_impl, AbsPercentile) and tuple(si.value.shape) == ()):
        raise Refused("activation scaling other than a learned power-of-two scale")
    with torch.no_grad():
        thr_r = float(si.restrict_threshold(si.restrict_threshold_pre(thr)))
    mv = _clamp_min(si.clamp_scaling.clamp_min_ste)
    if mv is None or si.stats.stats_impl.stats_reduce_dim is not None or not _is(si.stats_input_view_shape_impl,
                                                                                 OverTensorView):
        raise Refused("activation statistics other than a per-tensor percentile with a minimum scale")
    return _Act(proxy, lo, hi, thr, None, si, thr_r, mv, leak_mod, float(si.stats.stats_impl.q))


def _weighted(layer: Any) -> _Weighted:
    if isinstance(layer, qnn.QuantLinear):
        kind = "dense"
    elif isinstance(layer, (qnn.QuantConv1d, qnn.QuantConv2d)):
        kind = "conv1d" if isinstance(layer, qnn.QuantConv1d) else "conv2d"
        if layer.padding_mode != "zeros" or getattr(layer, "is_same_padded_strided", False):
            raise Refused("convolution padding")
    else:
        raise Refused(f"layer {type(layer).__name__}")
    if layer.input_quant.is_quant_enabled or layer.output_quant.is_quant_enabled:
        raise Refused("quantized input or output inside a weighted layer")
    tq = layer.weight_quant.tensor_quant
    if type(tq).__name__ != "RescalingIntQuant" or not _is(tq.zero_point_impl, ZeroZeroPoint):
        raise Refused(f"weight quantizer {type(tq).__name__}")
    lo, hi, bw = _int_range(tq, ste_clamp=True)
    thr_t = tq.int_scaling_impl(bw).detach()
    si = tq.scaling_impl
    const, thr, mv = None, 1.0, 0.0
    if _is(si, ConstScaling):
        const = _const_scale(si, thr_t)
    elif _is(si, StatsFromParameterScaling):
        ss, ps = si.stats_scaling_impl, si.parameter_list_stats
        if not (_is(ps.stats.stats_impl, AbsMax) and ps.stats.stats_impl.stats_reduce_dim is None
                and ps.extra_tracked_params_list is None and _is(ss.affine_rescaling, Identity)
                and _po2_ceil(ss.restrict_clamp_scaling.restrict_value_impl)
                and _po2_ceil(ss.restrict_clamp_threshold.restrict_value_impl)
                and _is(ss.restrict_clamp_scale_threshold.restrict_value_impl, Identity)
                and _is(ss.restrict_clamp_scale_threshold.clamp_ste, Identity)
                and _is(ss.restrict_clamp_threshold.clamp_ste, Identity)):
            raise Refused("weight scaling other than max-statistics power of two")
        mv1, mv2 = _clamp_min(ss.clamp_scaling.clamp_min_ste), _clamp_min(ss.restrict_clamp_scaling.clamp_ste)
        if mv1 != mv2:
            raise Refused("weight scale clamps differ")
        mv = 0.0 if mv1 is None else mv1
        with torch.no_grad():
            thr = float(ss.restrict_clamp_threshold(ss.restrict_threshold_pre(thr_t)))
    else:
        raise Refused(f"weight scaling {type(si).__name__}")
    bias = None
    if layer.bias is not None:
        bq = layer.bias_quant
        btq = bq.tensor_quant
        if not bq.is_quant_enabled or type(btq).__name__ != "PrescaledRestrictIntQuant" or not bq.requires_input_scale:
            raise Refused("bias not quantized with the accumulator's scale")
        blo, bhi, _ = _int_range(btq, ste_clamp=False)
        if float(btq.zero_point()) != 0.0:
            raise Refused("bias zero point")
        bias = (blo, bhi)
    return _Weighted(layer, kind, lo, hi, thr, mv, const, bias)


# ---------------------------------------------------------------- the forward

class FusedForward:
    """The fused forward of one StudentNet (``build``); ``StudentNet.forward`` calls it while attached.

    It holds constants (scales of constant quantizers, integer ranges) and references to the student's own
    modules, whose parameters and quantizer state it reads at each call; a deep copy of the student copies it
    along with them (the same memo), so the copy's fused forward reads the copy.
    """

    def __init__(self, steps: list[tuple[str, Any]], modules: list[nn.Module]) -> None:
        self.steps = steps
        self.proxies = [p for kind, st in steps for p in _proxies(kind, st)]
        self.modules = modules
        self.learned = [st.impl for kind, st in steps if kind == "act" and st.const is None]
        self.tiling = all(st[1] is not None for kind, st in steps if kind == "pool")

    def set_mode(self, training: bool) -> None:
        """``model.train(training)`` without its recursive walk (about 1 ms on a brevitas student, called
        twice an epoch): the same flag on the same modules, none of which overrides ``train``."""
        for m in self.modules:
            object.__setattr__(m, "training", training)

    @classmethod
    def build(cls, model: nn.Module) -> FusedForward:
        """Read every layer of a kdhw ``StudentNet``; raises ``Refused`` for anything it cannot reproduce."""
        steps: list[tuple[str, Any]] = []
        for m in model.layers:
            if isinstance(m, (qnn.QuantIdentity, qnn.QuantReLU)):
                if m.input_quant.is_quant_enabled:
                    raise Refused("quantized input of an activation")
                steps.append(("act", _act(m)))
            elif isinstance(m, (qnn.QuantLinear, qnn.QuantConv1d, qnn.QuantConv2d)):
                steps.append(("weighted", _weighted(m)))
            elif type(m) in (nn.MaxPool1d, nn.MaxPool2d):
                if m.return_indices:
                    raise Refused("max pool with indices")
                steps.append(("pool", (m, _tiling(m))))
            elif type(m) is nn.Flatten:
                steps.append(("flatten", (m.start_dim, m.end_dim)))
            else:
                raise Refused(f"layer {type(m).__name__}")
        if not steps or steps[0][0] != "act" or steps[0][1].const is None or steps[0][1].leak_mod is not None:
            raise Refused("the first layer is not a constant-scale input quantizer")
        modules = list(model.modules())
        if any(type(m).train is not nn.Module.train for m in modules):
            raise Refused("a module with its own train()")
        return cls(steps, modules)

    def whole(self) -> bool:
        """May the next training step run as one ``_Net`` op?  Not before every learned scale exists (the
        statistics phase runs layer by layer, on brevitas' own rules), nor with a pool that does not tile."""
        if not self.tiling:
            return False
        for impl in self.learned:
            if impl.counter < impl.collect_stats_steps:
                return False
        for impl in self.learned:
            if impl.counter == impl.collect_stats_steps:
                impl.init_scale()  # brevitas' last statistics step: their average becomes the learned log2 scale
        return True

    def params(self) -> list[torch.Tensor]:
        """The tensors ``_Net`` differentiates, in step order: weight and bias, learned log2 scales."""
        out: list[torch.Tensor] = []
        for kind, st in self.steps:
            if kind == "weighted":
                out.append(st.layer.weight)
                if st.layer.bias is not None:
                    out.append(st.layer.bias)
            elif kind == "act" and st.const is None:
                out.append(st.impl.value)
        return out

    def usable(self) -> bool:
        """False while brevitas would not quantize as built (float warm-up switched quantizers off, export)."""
        return all(p.is_quant_enabled and not p.export_mode for p in self.proxies)

    def __call__(self, model: nn.Module, x: torch.Tensor, return_features: bool = False) -> Any:
        training = model.training
        if training and not return_features and torch.is_grad_enabled() and self.whole():
            return _Net.apply(self, x, *self.params())
        feats: dict[str, torch.Tensor] = {}
        scale: torch.Tensor | None = None
        for name, (kind, st) in zip(model.names, self.steps):
            if kind == "weighted":
                x = _weighted_forward(st, x, scale)
            elif kind == "act":
                x, scale = _act_forward(st, x, training)
            elif kind == "pool":
                x = st[0](x)
            else:
                x = x.flatten(*st)
            if return_features:
                feats[name] = x
        return (x, feats) if return_features else x


def _tiling(m: nn.Module) -> tuple[int, ...] | None:
    """A max pool's kernel when its windows tile the input (kernel = stride, no padding or dilation)."""
    nd = 1 if type(m) is nn.MaxPool1d else 2

    def pair(v: Any) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd

    k = pair(m.kernel_size)
    if (m.ceil_mode or k != pair(m.stride if m.stride is not None else m.kernel_size) or any(pair(m.padding))
            or any(d != 1 for d in pair(m.dilation))):
        return None
    return k


def _proxies(kind: str, st: Any) -> list[Any]:
    if kind == "act":
        return [st.proxy]
    if kind == "weighted":
        return [st.layer.weight_quant] + ([st.layer.bias_quant] if st.bias is not None else [])
    return []


def _act_forward(st: _Act, x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad = torch.is_grad_enabled()
    leak: float | None = None
    if st.leak_mod is not None:
        leak = float(st.leak_mod.relu_leak) if st.leak_mod.training else 0.0
    if st.const is not None:
        s = st.const
    elif training and st.impl.counter >= st.impl.collect_stats_steps:
        impl = st.impl
        if impl.counter == impl.collect_stats_steps:
            impl.init_scale()  # brevitas' last statistics step: their average becomes the learned log2 scale
        if grad:
            return _ActQuant.apply(x, impl.value, st, leak)
        s = _po2_scale(impl.value, st.mv, st.thr_r)[1]
    elif training:
        if leak is not None:
            x = relu_grad_leak(x, leak) if grad else torch.relu(x)
            leak = None
        s = _stats_scale(st, x)
    else:
        s = _eval_scale(st)
    if leak is not None:
        x = relu_grad_leak(x, leak) if grad else torch.relu(x)
    if grad and (x.requires_grad or s.requires_grad):
        return _ClampQuant.apply(x, s, s, st.lo, st.hi), s
    return torch.round(x / s).clamp_(st.lo, st.hi) * s, s


def _stats_scale(st: _Act, x: torch.Tensor) -> torch.Tensor:
    """brevitas' ParameterFromRuntimeStatsScaling in its statistics phase (training_forward, counter <
    collect_stats_steps): the batch's percentile of |x| as the scale, with its gradient into x; the running
    average kept in ``buffer``; the learned value gets a zero gradient."""
    impl = st.impl
    flat = x.reshape(-1).abs().view(-1)
    stats = torch.kthvalue(flat, math.floor(.01 * st.q * flat.numel() + 0.5))[0]  # brevitas' AbsPercentile
    stats = stats + 0. * impl.value
    clamped = stats.clamp_min(st.mv).detach() + (stats - stats.detach())  # ScalarSignedClampMinSte on stats >= 0
    new_counter = impl.counter + 1
    if impl.counter == 0:
        inplace_tensor_mul(impl.buffer, clamped.detach())
    else:
        inplace_momentum_update(impl.buffer, clamped.detach(), impl.momentum, impl.counter, new_counter)
    impl.counter = new_counter
    return clamped / st.thr


def _eval_scale(st: _Act) -> torch.Tensor:
    """brevitas' ParameterFromRuntimeStatsScaling in evaluation: from the statistics' average before the
    learned value exists, from the learned value after."""
    impl = st.impl
    v = torch.log2(impl.buffer) if impl.counter <= impl.collect_stats_steps else impl.value
    return (torch.pow(2.0, torch.ceil(v)) / st.thr_r).clamp_min(st.mv)


def _weighted_forward(st: _Weighted, x: torch.Tensor, in_scale: torch.Tensor | None) -> torch.Tensor:
    layer = st.layer
    qw, qb = _WeightBias.apply(layer.weight, layer.bias, in_scale if layer.bias is not None else None, st)
    if st.kind == "dense":
        return F.linear(x, qw, qb)
    conv = F.conv1d if st.kind == "conv1d" else F.conv2d
    return conv(x, qw, qb, layer.stride, layer.padding, layer.dilation, layer.groups)


# benchmarks/train_speed.py switches this off to time today's path (brevitas forward, per-tensor Adam, batches
# made in the step) beside the new one
ENABLED = True


def spare_core() -> bool:
    """May training put a worker thread on a second core (``distill.Batches`` makes batches ahead)?"""
    import os

    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # pragma: no cover - not Linux
        return (os.cpu_count() or 1) >= 2


def exact_max_pool(m: nn.Module) -> Any:
    """For a max pool whose windows tile the input (kernel = stride, no padding or dilation), the same
    values as the elementwise maximum of its strided slices, which torch computes several times faster on
    small maps; None for any other module (or with ``ENABLED`` off).  Values only: use it without gradients
    (max pool and maximum split ties differently)."""
    if not ENABLED or type(m) not in (nn.MaxPool1d, nn.MaxPool2d) or m.return_indices:
        return None
    k = _tiling(m)
    if k is None:
        return None

    def pool(x: torch.Tensor) -> torch.Tensor:
        x = x[(..., *(slice(0, (n // kk) * kk) for n, kk in zip(x.shape[-len(k):], k)))]
        out = None
        for offs in itertools.product(*(range(kk) for kk in k)):
            part = x[(..., *(slice(o, None, kk) for o, kk in zip(offs, k)))]
            out = part if out is None else torch.maximum(out, part)
        return out

    return pool


def bare_forward(m: nn.Module) -> Any:
    """``m.forward`` when calling it is what calling ``m`` does (no hooks registered): it skips
    ``nn.Module.__call__``'s bookkeeping, a few microseconds per layer per batch; else ``m``."""
    from torch.nn.modules import module as _module

    if not ENABLED or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks \
            or _module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks:
        return m
    return m.forward


def attach(model: nn.Module) -> FusedForward | None:
    """Give a brevitas ``StudentNet`` the fused forward (its ``forward`` then uses it while ``usable``);
    returns it, or None when the student holds a quantizer it does not reproduce (or ``ENABLED`` is off)."""
    if not ENABLED or not hasattr(model, "fused"):
        return None
    try:
        fused = FusedForward.build(model)
    except Refused:
        return None
    model.fused = fused
    return fused


def detach(model: nn.Module) -> None:
    """Back to brevitas' own forward (what export and everything after training use)."""
    if hasattr(model, "fused"):
        model.fused = None


__all__ = ["FusedForward", "Refused", "attach", "detach"]
