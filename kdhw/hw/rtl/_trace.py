"""Walk a cleaned QONNX graph node by node into da4ml's symbolic fixed-point arrays.

da4ml has no ONNX front end; it traces numpy-style operations on ``FixedVariableArray`` objects and turns
the trace into multiplier-free adder graphs.  Every QONNX op is therefore re-expressed here with exactly the
integer semantics the QONNX reference executes, so that the generated Verilog is bit-exact with it:

* ``Quant`` on an activation: power-of-two scale, zero-point 0, QONNX rounding (ROUND = half to even) and
  clamping to the (possibly narrow) code range.  da4ml only offers truncation and round-half-up, so
  half-to-even is built from truncation plus the bit that decides ties.
* ``Quant`` on a constant (weights, biases): folded with qonnx' own ``int_quant`` so the constants are the
  very numbers the reference multiplies by.
* ``MatMul``/``Gemm``/``Conv`` with constant weights: constant-matrix products (im2col for convolutions).
* ``MaxPool``: balanced trees of comparators; ``Flatten``/``Reshape``/``Transpose``: index permutations only.

The graph input's own ``Quant`` is not built in hardware: floats cannot reach the fabric, so its integer
codes are the RTL input (see ``_formats.quantize_codes``), which keeps every later rounding identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx

from kdhw.errors import InputError

from ._formats import ROUNDING_MODES, FixedFormat, po2_exponent, quant_limits, round_codes

SUPPORTED_OPS = (
    "Quant", "MatMul", "Gemm", "Add", "Sub", "Mul", "Relu", "Conv", "MaxPool", "Flatten", "Reshape",
    "Transpose", "Identity",
)

Value = Any  # np.ndarray (constant) or da4ml FixedVariableArray (run-time)


@dataclass
class Traced:
    """Result of the walk: flat symbolic inputs/outputs plus the port formats they are packed with."""

    inputs: list[Any]
    outputs: list[Any]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_format: FixedFormat
    input_rounding: str
    output_format: FixedFormat


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def graph_io(mw: Any) -> tuple[str, str]:
    """The names of a QONNX graph's one run-time input and one output (initializers are not inputs)."""
    g = mw.graph
    inits = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in inits]
    if len(graph_inputs) != 1 or len(g.output) != 1:
        raise InputError("the RTL converter needs a graph with exactly one input and one output")
    return graph_inputs[0].name, g.output[0].name


def _is_sym(v: Value) -> bool:
    return not isinstance(v, np.ndarray)


class _Walker:
    def __init__(self, mw: Any, latency_cutoff: float, solver_options: dict[str, Any] | None) -> None:
        from da4ml.trace import HWConfig

        self.mw = mw
        self.hwconf = HWConfig(1, -1, float(latency_cutoff))
        self.solver_options = dict(solver_options or {})
        self.values: dict[str, Value] = {}
        for init in mw.graph.initializer:
            self.values[init.name] = onnx.numpy_helper.to_array(init)
        self.ops: dict[str, Callable[[onnx.NodeProto, list[Value], dict[str, Any]], Value]] = {
            "Quant": self._quant, "MatMul": self._matmul, "Gemm": self._gemm, "Add": self._add, "Sub": self._sub,
            "Mul": self._mul, "Relu": self._relu, "Conv": self._conv, "MaxPool": self._maxpool,
            "Flatten": self._flatten, "Reshape": self._reshape, "Transpose": self._transpose,
            "Identity": lambda n, a, at: a[0],
        }

    # -- helpers -----------------------------------------------------------------------------------------

    def _where(self, node: onnx.NodeProto) -> str:
        return f"node '{node.name or node.output[0]}' ({node.op_type})"

    def _fva(self, vars_: np.ndarray) -> Any:
        from da4ml.trace import FixedVariableArray

        return FixedVariableArray(np.asarray(vars_, dtype=object), self.solver_options, hwconf=self.hwconf)

    def _const(self, node: onnx.NodeProto, v: Value, what: str) -> np.ndarray:
        if _is_sym(v):
            raise InputError(
                f"{self._where(node)}: {what} must be a constant (an initializer, possibly through Quant); "
                "a run-time tensor there would need a multiplier the RTL converter does not build"
            )
        return np.asarray(v)

    def _matrix(self, node: onnx.NodeProto, m: np.ndarray) -> np.ndarray:
        """Constant matrices go to da4ml's solver as float32: refuse any value that would round there."""
        m64 = np.asarray(m, dtype=np.float64)
        if not np.array_equal(m64.astype(np.float32).astype(np.float64), m64):
            raise InputError(f"{self._where(node)}: a weight is not exactly representable in float32")
        return m64

    # -- ops ---------------------------------------------------------------------------------------------

    def _quant(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        scale = self._const(node, args[1], "the scale")
        zeropt = self._const(node, args[2], "the zero-point")
        bits = self._const(node, args[3], "the bit width")
        signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
        mode = str(at.get("rounding_mode", "ROUND")).upper()
        if not _is_sym(x):
            from qonnx.custom_op.general.intquant import int_quant

            return np.asarray(int_quant(x, scale, zeropt, bits, signed, narrow, mode))
        if mode not in ROUNDING_MODES:
            raise InputError(f"{self._where(node)}: rounding_mode {mode} is not supported; supported: "
                             f"{', '.join(ROUNDING_MODES)}")
        if np.any(zeropt != 0):
            raise InputError(f"{self._where(node)}: non-zero zero-point; the RTL converter supports zero-point 0")
        shape = x.shape
        scale_b = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape)
        bits_b = np.broadcast_to(np.asarray(bits, dtype=np.float64), shape)
        out = np.empty(shape, dtype=object)
        cache: dict[tuple[float, float], tuple[int, int, int]] = {}
        for idx, v in np.ndenumerate(x._vars):
            key = (float(scale_b[idx]), float(bits_b[idx]))
            if key not in cache:
                s, b = key
                e = po2_exponent(s)
                if e is None:
                    raise InputError(f"{self._where(node)}: scale {s:.6g} is not a power of two; the RTL needs "
                                     "power-of-two scales (brevitas *FixedPoint quantizers)")
                if b != int(b) or b < 1 or (b == 1 and signed):
                    raise InputError(f"{self._where(node)}: bit width {b:g} is not supported (need an integer, "
                                     "and at least 2 bits when signed)")
                lo, hi = quant_limits(int(b), signed, narrow)
                cache[key] = (e, lo, hi)
            e, lo, hi = cache[key]
            out[idx] = _quantize_var(v, e, lo, hi, mode)
        return self._fva(out)

    def _one_constant(self, node: onnx.NodeProto, args: list[Value], why: str) -> bool:
        """True when both operands are constants (fold them); refuse two run-time tensors."""
        a, b = args
        if _is_sym(a) and _is_sym(b):
            raise InputError(f"{self._where(node)}: {why}")
        return not _is_sym(a) and not _is_sym(b)

    def _matmul(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        a, b = args
        if self._one_constant(node, args, "both operands are run-time tensors; the RTL converter needs one "
                                          "constant (weight) operand"):
            return np.matmul(a, b)
        if _is_sym(a):
            if b.ndim != 2:
                raise InputError(f"{self._where(node)}: constant operand must be a 2-D matrix, got {b.shape}")
            return a @ self._matrix(node, b)
        if a.ndim != 2:
            raise InputError(f"{self._where(node)}: constant operand must be a 2-D matrix, got {a.shape}")
        return self._matrix(node, a) @ b

    def _gemm(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        if at.get("transA", 0):
            a = a.T
        b = self._const(node, b, "operand B (the weights)")
        if at.get("transB", 0):
            b = b.T
        if not _is_sym(a):
            raise InputError(f"{self._where(node)}: operand A must be the run-time tensor")
        y = a @ self._matrix(node, np.asarray(b, dtype=np.float64) * alpha)
        if c is not None:
            y = y + np.asarray(self._const(node, c, "operand C (the bias)"), dtype=np.float64) * beta
        return y

    def _add(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        a, b = args
        if _is_sym(a):
            return a + (b if _is_sym(b) else np.asarray(b, dtype=np.float64))
        if _is_sym(b):
            return b + np.asarray(a, dtype=np.float64)
        return a + b

    def _sub(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        a, b = args
        if _is_sym(b):
            nb = -b
            return self._add(node, [a, nb], at)
        return self._add(node, [a, -np.asarray(b, dtype=np.float64)], at)

    def _mul(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        a, b = args
        if self._one_constant(node, args, "multiplies two run-time tensors; the RTL converter supports "
                                          "multiplication by constants only"):
            return a * b
        x, c = (a, b) if _is_sym(a) else (b, a)
        c = np.asarray(c, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, c.shape)
        xv = np.broadcast_to(x._vars, shape)
        cv = np.broadcast_to(c, shape)
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            out[idx] = xv[idx] * float(cv[idx])
        return self._fva(out)

    def _relu(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        if not _is_sym(x):
            return np.maximum(x, 0)
        return x.relu()

    def _flatten(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        axis = int(at.get("axis", 1))
        axis = axis + len(x.shape) if axis < 0 else axis
        return x.reshape((math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))

    def _reshape(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        target = [int(s) for s in self._const(node, args[1], "the target shape").ravel()]
        if not at.get("allowzero", 0):
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        return x.reshape(tuple(target))

    def _transpose(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        perm = at.get("perm")
        return x.transpose(tuple(perm) if perm is not None else None)

    def _spatial(self, node: onnx.NodeProto, at: dict[str, Any], size: tuple[int, ...], kernel: tuple[int, ...],
                 pool: bool) -> tuple[list[int], list[int], list[int], list[int], tuple[int, ...]]:
        """ONNX pads/strides/dilations/auto_pad -> (begin pads, strides, dilations, out size)."""
        nd = len(size)
        strides = list(at.get("strides", [1] * nd))
        dil = list(at.get("dilations", [1] * nd))
        pads = list(at.get("pads", [0] * 2 * nd))
        auto = str(at.get("auto_pad", "NOTSET"))
        ceil_mode = bool(at.get("ceil_mode", 0)) if pool else False
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 2 * nd
            for d in range(nd):
                out = -(-size[d] // strides[d])
                total = max(0, (out - 1) * strides[d] + dil[d] * (kernel[d] - 1) + 1 - size[d])
                small, big = total // 2, total - total // 2
                pads[d], pads[d + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * 2 * nd
        elif auto != "NOTSET":
            raise InputError(f"{self._where(node)}: auto_pad {auto} is not supported")
        out = []
        for d in range(nd):
            span = size[d] + pads[d] + pads[d + nd] - dil[d] * (kernel[d] - 1) - 1
            n = (-(-span // strides[d]) if ceil_mode else span // strides[d]) + 1
            if ceil_mode and (n - 1) * strides[d] >= size[d] + pads[d]:
                n -= 1  # ONNX: a window may not start inside the right padding
            if n < 1:
                raise InputError(f"{self._where(node)}: kernel {kernel} does not fit the input {size}")
            out.append(n)
        return pads[:nd], strides, dil, pads[nd:], tuple(out)

    def _conv(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        if not _is_sym(x):
            raise InputError(f"{self._where(node)}: convolution of a constant input is not supported")
        w = self._matrix(node, self._const(node, args[1], "the weight tensor"))
        bias = args[2] if len(args) > 2 and args[2] is not None else None
        if x.shape[0] != 1:
            raise InputError(f"{self._where(node)}: batch dimension must be 1 in the QONNX graph, got {x.shape[0]}")
        n_ch, size = x.shape[1], tuple(x.shape[2:])
        n_f, kernel = w.shape[0], tuple(w.shape[2:])
        group = int(at.get("group", 1))
        if n_ch % group or n_f % group or w.shape[1] != n_ch // group:
            raise InputError(f"{self._where(node)}: weight shape {w.shape} does not match {n_ch} channels in "
                             f"{group} groups")
        pb, strides, dil, _, out_size = self._spatial(node, at, size, kernel, pool=False)
        xv = x._vars[0]
        fg, cg = n_f // group, n_ch // group
        out = np.empty((n_f, *out_size), dtype=object)
        taps = [(c, k) for c in range(cg) for k in np.ndindex(*kernel)]
        for g in range(group):
            wg = w[g * fg:(g + 1) * fg].reshape(fg, -1).T  # rows ordered (channel, kernel...) like the taps
            for pos in np.ndindex(*out_size):
                rows, vars_ = [], []
                for r, (c, k) in enumerate(taps):
                    coord = tuple(pos[d] * strides[d] - pb[d] + k[d] * dil[d] for d in range(len(size)))
                    if all(0 <= coord[d] < size[d] for d in range(len(size))):
                        rows.append(r)
                        vars_.append(xv[(g * cg + c, *coord)])
                if rows:
                    y = self._fva(np.array(vars_, dtype=object)) @ wg[rows]
                    out[(slice(g * fg, (g + 1) * fg), *pos)] = y._vars
                else:
                    out[(slice(g * fg, (g + 1) * fg), *pos)] = 0.0
        y = self._fva(out[None])
        if bias is not None:
            b = np.asarray(self._const(node, bias, "the bias"), dtype=np.float64)
            y = y + b.reshape((1, n_f) + (1,) * len(size))
        return y

    def _maxpool(self, node: onnx.NodeProto, args: list[Value], at: dict[str, Any]) -> Value:
        x = args[0]
        if not _is_sym(x):
            raise InputError(f"{self._where(node)}: max-pooling a constant is not supported")
        if len(node.output) > 1 and node.output[1]:
            raise InputError(f"{self._where(node)}: the Indices output of MaxPool is not supported")
        kernel = tuple(int(k) for k in at["kernel_shape"])
        size = tuple(x.shape[2:])
        pb, strides, dil, _, out_size = self._spatial(node, at, size, kernel, pool=True)
        out = np.empty((x.shape[0], x.shape[1], *out_size), dtype=object)
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                for pos in np.ndindex(*out_size):
                    window = []
                    for k in np.ndindex(*kernel):
                        coord = tuple(pos[d] * strides[d] - pb[d] + k[d] * dil[d] for d in range(len(size)))
                        if all(0 <= coord[d] < size[d] for d in range(len(size))):
                            window.append(x._vars[(n, c, *coord)])
                    out[(n, c, *pos)] = _max_tree(window)
        return self._fva(out)

    # -- the walk ----------------------------------------------------------------------------------------

    def run(self) -> Traced:
        from da4ml.trace import FixedVariableArray

        in_name, out_name = graph_io(self.mw)
        shape = tuple(int(d) for d in self.mw.get_tensor_shape(in_name))
        if not shape or shape[0] != 1:
            raise InputError(f"graph input {in_name} must have batch dimension 1, got shape {shape}")
        in_quant, in_fmt, in_mode = self._input_quant(in_name)
        k, f = int(in_fmt.signed), in_fmt.frac_bits
        i = in_fmt.bits - k - f
        x = FixedVariableArray.from_kif(np.full(shape, k), np.full(shape, i), np.full(shape, f), hwconf=self.hwconf,
                                        solver_options=self.solver_options)
        self.values[in_quant.output[0]] = x
        for node in self.mw.graph.node:
            if node is in_quant:
                continue
            if node.op_type not in self.ops:
                raise InputError(
                    f"node '{node.name or node.output[0]}' has op {node.op_type}, which the RTL converter does not "
                    f"support; supported: {', '.join(SUPPORTED_OPS)}"
                )
            args = []
            for name in node.input:
                if not name:
                    args.append(None)
                    continue
                if name not in self.values:
                    raise InputError(f"{self._where(node)}: input tensor {name} is not produced by any node")
                args.append(self.values[name])
            res = self.ops[node.op_type](node, args, _attrs(node))
            self.values[node.output[0]] = res
        y = self.values.get(out_name)
        if y is None or not _is_sym(y):
            raise InputError(f"graph output {out_name} does not depend on the input")
        out_shape = tuple(y.shape[1:]) if y.shape and y.shape[0] == 1 else tuple(y.shape)
        outs = list(y._vars.ravel())
        return Traced(
            inputs=list(x._vars.ravel()),
            outputs=outs,
            input_shape=tuple(shape[1:]),
            output_shape=out_shape,
            input_format=in_fmt,
            input_rounding=in_mode,
            output_format=self._output_format(out_name, outs),
        )

    def _input_quant(self, in_name: str) -> tuple[onnx.NodeProto, FixedFormat, str]:
        cons = [n for n in self.mw.graph.node if in_name in n.input]
        if len(cons) != 1 or cons[0].op_type != "Quant" or cons[0].input[0] != in_name:
            raise InputError("the graph input must feed exactly one Quant node (the input quantizer); the RTL "
                             "input port carries that quantizer's integer codes")
        q = cons[0]
        fmt, mode = self._quant_format(q)
        if fmt is None:
            raise InputError(f"{self._where(q)}: the input quantizer needs one constant power-of-two scale, "
                             "zero-point 0 and an integer bit width")
        return q, fmt, mode

    def _quant_format(self, q: onnx.NodeProto) -> tuple[FixedFormat | None, str]:
        at = _attrs(q)
        mode = str(at.get("rounding_mode", "ROUND")).upper()
        vals = [self.values.get(n) for n in q.input[1:4]]
        if any(v is None or _is_sym(v) or np.asarray(v).size != 1 for v in vals):
            return None, mode
        s, zp, b = (float(np.asarray(v).ravel()[0]) for v in vals)
        e = po2_exponent(s)
        signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
        if e is None or zp != 0 or b != int(b) or b < 1 or (b == 1 and signed) or mode not in ROUNDING_MODES:
            return None, mode
        lo, hi = quant_limits(int(b), signed, narrow)
        return FixedFormat(int(b), -e, signed, lo, hi), mode

    def _output_format(self, out_name: str, outs: list[Any]) -> FixedFormat:
        """The Quant's own format when a per-tensor Quant produces the output, else the narrowest common one."""
        prod = next((n for n in self.mw.graph.node if out_name in n.output), None)
        if prod is not None and prod.op_type == "Quant":
            fmt, _ = self._quant_format(prod)
            if fmt is not None:
                return fmt
        from da4ml.types import minimal_kif

        kifs = [minimal_kif(v.qint) for v in outs]
        k = any(p.keep_negative for p in kifs)
        f = max(p.fractional for p in kifs)
        i = max(p.integers for p in kifs)
        bits = max(int(k) + i + f, 1)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if k else (0, 2**bits - 1)
        return FixedFormat(bits, f, k, lo, hi)


def _max_tree(vs: list[Any]) -> Any:
    """Balanced comparator tree: depth log2(window) instead of a chain."""
    if not vs:
        raise InputError("a MaxPool window lies entirely in the padding")
    while len(vs) > 1:
        nxt = [vs[j].max_of(vs[j + 1]) if hasattr(vs[j], "max_of") else vs[j + 1].max_of(vs[j])
               for j in range(0, len(vs) - 1, 2)]
        if len(vs) % 2:
            nxt.append(vs[-1])
        vs = nxt
    return vs[0]


def _quantize_var(v: Any, e: int, lo: int, hi: int, mode: str) -> Any:
    """One element of a QONNX Quant: codes = clamp(round(v / 2**e), lo, hi); returns codes * 2**e.

    Rounding is done on the exact fixed-point value (clamping first, as qonnx does, gives the same result
    because the limits are integers).  Round-half-to-even at target LSB weight 2**e on a value whose own
    LSB weight is ``eps`` is ``floor(v + 2**e/2 - eps + eps * bit_e(v))``: the extra ``eps`` is added only
    when the kept LSB is odd, which turns exact ties upward for odd and downward for even codes.
    """
    from da4ml.trace import FixedVariable

    step = 2.0**e
    if v.low == v.high:  # a constant (e.g. a conv output fed only by padding): fold it like qonnx would
        c = float(np.clip(round_codes(np.array(float(v.low) / step), mode), lo, hi))
        return FixedVariable.from_const(c * step, hwconf=v.hwconf)
    eps = float(v.step)
    if step > eps:
        if mode == "FLOOR":
            t = v
        elif mode == "CEIL":
            t = v + (step - eps)
        else:  # ROUND / HALF_EVEN
            bit = v.quantize(0, e + 1, -e)  # 0 or 2**e: the LSB that is kept
            t = v + bit * (eps / step)
            if step / 2 - eps:
                t = t + (step / 2 - eps)
        k, i, _ = t.kif
        v = t.quantize(k, i, -e)  # floor onto the grid; wide enough that nothing wraps
    if float(v.low) < lo * step:
        v = v.max_of(lo * step)
    if float(v.high) > hi * step:
        v = v.min_of(hi * step)
    return v


def trace_qonnx(mw: Any, latency_cutoff: float, solver_options: dict[str, Any] | None = None) -> Traced:
    """Trace a cleaned QONNX ModelWrapper into da4ml variables (see the module docstring)."""
    return _Walker(mw, latency_cutoff, solver_options).run()
