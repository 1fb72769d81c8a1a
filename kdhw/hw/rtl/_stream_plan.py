"""Stream mode, step 1: cut the QONNX chain into hardware units and trace each unit's arithmetic with da4ml.

A stream design moves one *position* per beat (all channels of one sample or pixel; for vector inputs a
configurable number of elements) through a chain of units:

* ``window``: a Conv or MaxPool layer and the elementwise ops after it (bias, ReLU, requantization).  A
  line buffer (a shift register of input positions) holds the last rows; one da4ml datapath computes
  ``parallelism`` output positions from their windows per emission.  The datapath is traced from the
  QONNX node itself applied to a symbolic window (``_trace``'s op semantics, so the rounding is the
  reference's), and zero padding is a multiplexer in front of it (for max-pooling, the lane's minimum).
* ``mac``: a dense layer folded over its input: MAC lanes multiply incoming elements by weights read from
  a constant ROM and accumulate; at the end of the frame a small da4ml datapath adds the bias and
  requantizes the accumulator.
* ``collect``: a dense layer unrolled: the flattened vector is collected, then one da4ml datapath.
* ``fmac`` (``rtl.fold``): a dense layer folded over outputs and inputs alike: ``PE`` outputs x ``SIMD``
  input elements per cycle, the weights in a memory with a registered read (block RAM), registered
  multiplier operands (DSP blocks); the same exact integer sums as ``mac``.  Bias, ReLU and requantization
  run one group of PE outputs per cycle through a da4ml datapath traced on symbolic (accumulator, bias)
  values (``_serial_requant``; the accumulators then sit in block RAM too), or, where the tail has other
  per-output constants, through ``mac``'s datapath over all outputs.

Every unit's output lanes keep the narrowest fixed-point format da4ml derived for them, and the next
unit's datapath is traced on exactly those formats, so integer arithmetic is exact end to end.  The plan
(tables of window taps, ROM contents, lane formats) is plain JSON: the Verilog generator, the timing model
and the emulator all read the same plan.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from kdhw.errors import InputError

from ._formats import FixedFormat
from ._trace import _attrs, _is_sym, _Walker, graph_io

ELEMENTWISE = ("Quant", "Relu", "Add", "Sub", "Mul", "Identity")
SHAPE_OPS = ("Flatten", "Reshape", "Transpose", "Identity")
DENSE_MODES = ("auto", "folded", "unrolled")
OUTPUT_MODES = ("logits", "class", "both")
Kif = tuple[int, int, int]
# rtl.fold, line_buffer auto: a window's row delays go to block RAM from this many bits (a quarter of an iCE40
# EBR); below it a shift register of flip-flops is smaller than the memory's addressing
LINE_BUFFER_BRAM_BITS = 1024
# rtl.fold, memory auto: an fmac's weight table goes to a LUT ROM up to this many bits, to block RAM above it
ROM_LUT_BITS = 512


def kif_width(k: Kif) -> int:
    return max(int(k[0]) + int(k[1]) + int(k[2]), 0)


def fmac_operand_bits(u: Unit) -> tuple[int, int]:
    """(input operand bits, weight bits) of the multipliers of a ``mac`` or ``fmac`` unit."""
    s = u.spec
    in_k = u.in_lanes
    fx = s["fx"]
    xw = max([kif_width(k) + fx - int(k[2]) + (0 if k[0] else 1) for k in in_k if kif_width(k) > 0] + [2])
    wmax = max([abs(int(v)) for row in s["wcodes"] for v in row] + [1])
    return xw, wmax.bit_length() + 1


def kif_range(k: Kif) -> tuple[int, int]:
    """Integer-code range of a (k, i, f) lane: codes are value * 2**f."""
    w = kif_width(k)
    if w == 0:
        return 0, 0
    if k[0]:
        return -(1 << (w - 1)), (1 << (w - 1)) - 1
    return 0, (1 << w) - 1


@dataclass
class Datapath:
    """One da4ml pipeline: which unit signal feeds each input, and what each output is."""

    pipe: Any
    inputs: list[Any]  # unit-specific key per pipeline input, in pipeline order
    outputs: list[Any]  # unit-specific key per pipeline output
    in_widths: list[int] = field(default_factory=list)  # core port width per input (0: no logic reads it)
    out_kifs: list[Kif] = field(default_factory=list)

    def finish(self, what: str, in_kifs: list[Kif]) -> None:
        from da4ml.types import minimal_kif

        self.in_widths = []
        for j, (q, want) in enumerate(zip(self.pipe.inp_qint, in_kifs)):
            k = tuple(int(v) for v in minimal_kif(q))
            w = kif_width(k)
            if w and (bool(k[0]), k[1], k[2]) != (bool(want[0]), int(want[1]), int(want[2])):
                raise RuntimeError(f"internal error: {what} input {j} has format {k}, expected {want}")
            self.in_widths.append(w)
        self.out_kifs = [tuple(int(v) for v in minimal_kif(q)) for q in self.pipe.out_qint]
        if not any(self.in_widths):
            raise InputError(f"{what}: no output depends on the unit's input (all weights reading it are 0); "
                             "nothing to build")

    @property
    def stages(self) -> int:
        return len(self.pipe.solutions)


@dataclass
class Unit:
    """One hardware unit of the chain; ``spec`` is the JSON the generator, timing model and emulator read."""

    name: str
    kind: str  # window | mac | collect
    nodes: list[str]
    spec: dict[str, Any]
    dp: Datapath
    in_lanes: list[Kif]
    out_lanes: list[Kif]
    beats_in: int
    beats_out: int


@dataclass
class StreamPlan:
    units: list[Unit]
    input_format: FixedFormat
    input_rounding: str
    input_shape: tuple[int, ...]
    in_lanes: int  # elements per input beat
    vector_input: bool  # beats carry in_lanes elements of the flattened input (else: one position each)
    beats_in: int
    in_elements_of_beat: list[list[int]]  # per input beat: flattened input index per lane (-1: unused)
    output_format: FixedFormat
    output_order: list[int]  # graph output element n -> lane of the last unit's beat
    output_kifs: list[Kif]  # core format of each graph output element
    n_outputs: int
    output_shape: tuple[int, ...]
    output_vars: list[Any] = field(default_factory=list, repr=False)


def _kif_of_format(fmt: FixedFormat) -> Kif:
    return (int(fmt.signed), fmt.int_bits, fmt.frac_bits)


def _var(kif: Kif, hw: Any) -> Any:
    """A run-time lane value of format ``kif`` (a width-0 lane is the constant 0)."""
    from da4ml.trace import FixedVariable

    if kif_width(kif) == 0:
        return FixedVariable.from_const(0.0, hwconf=hw)
    return FixedVariable.from_kif(bool(kif[0]), int(kif[1]), int(kif[2]), hwconf=hw)


def _quiet_pipeline(comb: Any, cutoff: float) -> Any:
    from da4ml.trace import to_pipeline

    with contextlib.redirect_stdout(io.StringIO()):
        return to_pipeline(comb, cutoff, verbose=False)


class _Planner:
    def __init__(self, mw: Any, cutoff: float, parallelism: int, in_elements: int | None, dense: str,
                 fold: dict[str, Any] | None = None, budget: dict[int, int] | None = None,
                 window_cost: dict[int, float] | None = None) -> None:
        self.mw = mw
        self.fold = fold
        self.cutoff = cutoff
        self.P = parallelism
        self.in_elements = in_elements
        self.dense = dense
        self.w = _Walker(mw, cutoff, {"hard_dc": 2})
        self.hw = self.w.hwconf
        self.units: list[Unit] = []
        self.layer = -1  # index of the layer (Conv, MaxPool or dense head) being built
        self.layer_names: list[str] = []
        self.budget = dict(budget or {})  # layer -> cycles per frame its fold must meet (rtl.fold.target_ii)
        self.folded: set[int] = set()  # layers that became an fmac (their choice is in the unit's spec)
        self.window_cost = dict(window_cost or {})  # target_ii: layer -> da4ml cost of the conv's window unit

    # -- graph preparation --------------------------------------------------------------------------------

    def _fold_constants(self) -> list[onnx.NodeProto]:
        """Evaluate every node whose inputs are all constants (weight and bias quantizers); the rest must form
        one chain from the input quantizer to the graph output."""
        runtime = []
        for node in self.mw.graph.node:
            ins = [i for i in node.input if i]
            if ins and all(i in self.w.values and not _is_sym(self.w.values[i]) for i in ins):
                if node.op_type not in self.w.ops:
                    raise InputError(f"node '{node.name or node.output[0]}' has op {node.op_type}, which the RTL "
                                     "converter does not support")
                args = [self.w.values[i] if i else None for i in node.input]
                self.w.values[node.output[0]] = self.w.ops[node.op_type](node, args, _attrs(node))
            else:
                runtime.append(node)
        return runtime

    def _where(self, node: onnx.NodeProto) -> str:
        return f"node '{node.name or node.output[0]}' ({node.op_type})"

    def _shape(self, tensor: str) -> tuple[int, ...]:
        s = self.mw.get_tensor_shape(tensor)
        if s is None:
            raise InputError(f"tensor {tensor} has no known shape; run the QONNX shape inference (cleanup) first")
        return tuple(int(d) for d in s)

    # -- the chain ----------------------------------------------------------------------------------------

    def run(self) -> StreamPlan:
        in_name, out_name = graph_io(self.mw)
        in_quant, in_fmt, in_mode = self.w._input_quant(in_name)
        runtime = [n for n in self._fold_constants() if n is not in_quant]
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in runtime:
            for i in n.input:
                if i:
                    consumers.setdefault(i, []).append(n)

        cur = in_quant.output[0]
        shape = self._shape(cur)
        if not shape or shape[0] != 1:
            raise InputError(f"graph input {in_name} must have batch dimension 1, got shape {shape}")
        in_kif = _kif_of_format(in_fmt)
        n_in = math.prod(shape[1:])
        # An MLP (its first layer is dense, even on an image it flattens first) takes in_elements elements of
        # the flattened input per beat; a model that starts with a Conv or MaxPool takes one position per beat.
        self.vector_input = len(shape) == 2 or self._first_op(consumers, cur) in ("MatMul", "Gemm")
        if self.vector_input:
            e = self.in_elements or 1
            if not 1 <= e <= n_in:
                raise InputError(f"rtl.in_elements = {e} must be in [1, {n_in}] (the model has {n_in} inputs)")
            nb = -(-n_in // e)
            ids = np.arange(n_in).reshape(shape)
            lanes = [in_kif] * e
            beats = [[b * e + j if b * e + j < n_in else -1 for j in range(e)] for b in range(nb)]
            spatial = None
        elif len(shape) in (3, 4):
            c = shape[1]
            if self.in_elements not in (None, c):
                raise InputError(f"rtl.in_elements = {self.in_elements}: a model whose first layer is a Conv or "
                                 f"MaxPool streams one position ({c} channel(s)) per beat; leave in_elements unset")
            e, nb = c, math.prod(shape[2:])
            ids = _spatial_ids(shape)
            lanes = [in_kif] * c
            # input beat = one position, all channels; channels-first flattened index of (c, pos) = c*nb + pos
            beats = [[ch * nb + pos for ch in range(c)] for pos in range(nb)]
            spatial = tuple(shape[2:])
        else:
            raise InputError(f"graph input {in_name} has shape {shape}; stream mode supports (1, N), (1, C, L) and "
                             "(1, C, H, W)")
        self.stream = {"lanes": lanes, "beats": nb, "spatial": spatial, "ids": ids}
        self.in_info = (in_fmt, in_mode, tuple(shape[1:]), e, nb, beats)

        unit_nodes: list[onnx.NodeProto] | None = None
        while cur != out_name:
            cons = consumers.get(cur, [])
            if len(cons) != 1:
                raise InputError(f"tensor {cur} feeds {len(cons)} nodes; stream mode needs a plain chain of layers "
                                 "(no branches or skip connections)")
            node = cons[0]
            op = node.op_type
            if op in ("Conv", "MaxPool", "MatMul", "Gemm"):
                if unit_nodes:
                    self._build_unit(unit_nodes)
                unit_nodes = [node]
            elif op in SHAPE_OPS and op != "Identity":
                if unit_nodes:  # the layer before is complete: its output stream is what gets reshaped
                    self._build_unit(unit_nodes)
                    unit_nodes = None
                self._reshape_ids(node)
            elif op in ELEMENTWISE:
                if op == "Identity":
                    pass
                elif unit_nodes is None:
                    raise InputError(f"{self._where(node)}: stream mode fuses elementwise ops into the Conv, MaxPool "
                                     "or dense layer right before them; here there is none (first op, or after "
                                     "Flatten/Reshape/Transpose)")
                else:
                    unit_nodes.append(node)
            else:
                raise InputError(f"{self._where(node)}: op {op} is not supported in stream mode")
            if len(node.output) != 1 and any(node.output[1:]):
                raise InputError(f"{self._where(node)}: nodes with several outputs are not supported")
            cur = node.output[0]
        if unit_nodes:
            self._build_unit(unit_nodes)
        if not self.units:
            raise InputError("stream mode needs at least one Conv, MaxPool or dense layer")
        self._check_layer_keys()
        if self.stream["spatial"] is not None or self.stream["beats"] != 1:
            raise InputError("stream mode needs a model that ends in a dense layer (its output is a vector)")
        ids = np.asarray(self.stream["ids"])
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise InputError(f"graph output {out_name} has shape {ids.shape}; stream mode needs (1, N)")
        order = [int(i) for i in ids.ravel()]
        last = self.units[-1]
        outs = [self.last_vars[i] for i in order]
        out_fmt = self.w._output_format(out_name, outs)
        kifs = [last.out_lanes[i] for i in order]
        in_fmt, in_mode, in_shape, e, nb, beats = self.in_info
        return StreamPlan(
            units=self.units, input_format=in_fmt, input_rounding=in_mode, input_shape=in_shape, in_lanes=e,
            vector_input=self.vector_input, beats_in=nb, in_elements_of_beat=beats, output_format=out_fmt, output_order=order, output_kifs=kifs,
            n_outputs=len(order), output_shape=tuple(ids.shape[1:]), output_vars=outs,
        )

    def _first_op(self, consumers: dict[str, list[onnx.NodeProto]], cur: str) -> str | None:
        """Op type of the first node after ``cur`` that is not a Flatten/Reshape/Transpose/Identity."""
        while len(consumers.get(cur, [])) == 1:
            node = consumers[cur][0]
            if node.op_type not in SHAPE_OPS:
                return node.op_type
            cur = node.output[0]
        return None

    def _ids_canonical(self) -> bool:
        ids = np.asarray(self.stream["ids"])
        if self.stream["spatial"] is not None:
            return ids.shape == (1, len(self.stream["lanes"]), *self.stream["spatial"]) and np.array_equal(
                ids, _spatial_ids(ids.shape))
        return ids.ndim == 2 and np.array_equal(ids.ravel(), np.arange(ids.size))

    def _reshape_ids(self, node: onnx.NodeProto) -> None:
        """Flatten/Reshape/Transpose move no data in hardware: they only change which (beat, lane) each element of
        the next layer's input comes from, tracked on an array of element ids."""
        args = [self.stream["ids"]] + [self.w.values.get(i) for i in node.input[1:]]
        res = np.asarray(self.w.ops[node.op_type](node, args, _attrs(node)))
        self.stream = {**self.stream, "ids": res}
        if self.stream["spatial"] is not None and res.ndim == 2:
            self.stream["spatial"] = None  # flattened: the next layer sees a vector
        elif self.stream["spatial"] is not None and not self._ids_canonical():
            raise InputError(f"{self._where(node)}: a permuted feature map (e.g. channels-last) cannot feed a "
                             "stream-mode layer; only flattening before a dense layer is supported")

    # -- units --------------------------------------------------------------------------------------------

    def _build_unit(self, nodes: list[onnx.NodeProto]) -> None:
        head = nodes[0]
        idx = len(self.units)
        name = f"u{idx}"
        self.layer += 1
        self.layer_names.append(head.name or head.output[0])
        if head.op_type in ("Conv", "MaxPool"):
            if self.stream["spatial"] is None:
                raise InputError(f"{self._where(head)}: needs a feature map (C, L) or (C, H, W), but its input is a "
                                 "flattened vector")
            if not self._ids_canonical():
                raise InputError(f"{self._where(head)}: its input is a permuted feature map; not supported")
            foldable = head.op_type == "Conv" and self.fold is not None and int(_attrs(head).get("group", 1)) == 1
            # target_ii: even fully parallel, the fmac is too slow (budget 0), or it costs more than the window
            unfold = foldable and (self.budget.get(self.layer) == 0 or self._window_is_cheaper(head))
            if foldable and not unfold:
                taps = self._check_out(self._window(name, nodes, gather=True))
                self.units.append(taps)
                unit = self._fold(self._conv_mac(f"u{idx + 1}", nodes, taps), nodes)
                # one window waiting beside the one being multiplied keeps a fast fmac busy; a slow one, one
                taps.spec["depth_out"] = 1 if unit.spec["K"] >= 4 else 2
                taps.spec["layer"] = self.layer
                self.units.append(self._check_out(unit))
                return
            unit = self._window(name, nodes)
            if unfold:
                why = ("the folded conv cannot reach it" if self.budget.get(self.layer) == 0 else
                       "its multipliers would cost more than the window's constant-weight datapath")
                unit.spec["chosen_by"] = f"target_ii {self.fold.get('target_ii')}: kept in its window unit ({why})"
        else:
            if self.stream["spatial"] is not None:
                raise InputError(f"{self._where(head)}: a dense layer needs a flattened (1, N) input in stream mode")
            nb = self.stream["beats"]
            fold = self.fold is not None and self.budget.get(self.layer) != 0  # 0: target_ii keeps it unfolded
            folded = fold or self.dense == "folded" or (self.dense == "auto" and nb > 1)
            unit = self._mac(name, nodes) if folded else self._collect(name, nodes)
            if fold:
                unit = self._fold(unit, nodes)
            elif self.fold is not None:
                unit.spec["chosen_by"] = (f"target_ii {self.fold.get('target_ii')}: kept in its {unit.kind} unit "
                                          "(the folded layer cannot reach it)")
        unit.spec.setdefault("layer", self.layer)
        self.units.append(self._check_out(unit))

    def _tails(self, nodes: list[onnx.NodeProto], y: Any, full_shape: tuple[int, ...] | None) -> Any:
        """Apply the elementwise ops after a head to ``y``; per-channel constants of a feature map are reduced
        to one position (they must not vary over positions)."""
        for node in nodes:
            args: list[Any] = []
            runtime = 0
            for name in node.input:
                if not name:
                    args.append(None)
                    continue
                v = self.w.values.get(name)
                if v is None or _is_sym(v):  # the chain tensor: never stored, it is symbolic here
                    args.append(y)
                    runtime += 1
                    continue
                if full_shape is not None:
                    v = _per_channel(node, np.asarray(v), full_shape, self._where(node))
                args.append(v)
            if runtime != 1:
                raise InputError(f"{self._where(node)}: needs exactly one run-time operand in stream mode")
            y = self.w.ops[node.op_type](node, args, _attrs(node))
            if not _is_sym(y):
                raise InputError(f"{self._where(node)}: output no longer depends on the input")
        return y

    def _window(self, name: str, nodes: list[onnx.NodeProto], gather: bool = False) -> Unit:
        """A Conv or MaxPool layer as a ``window`` unit; ``gather``: the window's taps themselves are the
        output (one position per beat, tap-major: lane ``t * C + c``), for an ``fmac`` after it."""
        from da4ml.trace import FixedVariableArray

        head = nodes[0]
        at = _attrs(head)
        lanes = self.stream["lanes"]
        spatial = tuple(self.stream["spatial"])
        nd = len(spatial)
        c_in = len(lanes)
        conv = head.op_type == "Conv"
        if conv:
            wts = self.w.values.get(head.input[1])
            if wts is None or _is_sym(wts):
                raise InputError(f"{self._where(head)}: the weights must be a constant")
            kernel = tuple(int(k) for k in np.asarray(wts).shape[2:])
        else:
            if len(head.output) > 1 and head.output[1]:
                raise InputError(f"{self._where(head)}: the Indices output of MaxPool is not supported")
            kernel = tuple(int(k) for k in at["kernel_shape"])
        pb, strides, dil, _, out_size = self.w._spatial(head, at, spatial, kernel, pool=not conv)
        # 1D layers are 2D layers of height 1: one code path for both
        H, W = (1, spatial[0]) if nd == 1 else spatial
        Ho, Wo = (1, out_size[0]) if nd == 1 else out_size
        ky_n, kx_n = (1, kernel[0]) if nd == 1 else kernel
        sy, sx = (1, strides[0]) if nd == 1 else strides
        dy, dx = (1, dil[0]) if nd == 1 else dil
        py, px = (0, pb[0]) if nd == 1 else pb
        P = 1 if gather else max(1, min(self.P, Wo))
        gx_n = -(-Wo // P)
        taps = [(ky, kx) for ky in range(ky_n) for kx in range(kx_n)]

        # Raster position r*W + c of the input.  A group (P neighbouring output positions of one row) is emitted
        # when its last input tap has arrived; its taps then sit at fixed offsets behind the newest input.  Rows
        # below the image (bottom padding) are fed as virtual zero beats after the frame's last real input, so
        # every row's taps keep the same row offsets; taps outside the image are multiplexed to the pad value.
        ry0 = (ky_n - 1) * dy - py
        if ry0 < 0:
            raise InputError(f"{self._where(head)}: the first output row reads only padding; not supported in stream "
                             "mode")
        rows = [{"mask": [int(0 <= gy * sy - py + ky * dy < H) for ky in range(ky_n)]} for gy in range(Ho)]
        row_off = [(ky_n - 1 - ky) * dy for ky in range(ky_n)]
        cols = []
        for gx in range(gx_n):
            nval = min(P, Wo - gx * P)
            cs = [[(gx * P + p) * sx - px + kx * dx for kx in range(kx_n)] for p in range(P)]
            if any(not any(0 <= c < W for c in cs[p]) for p in range(nval)):
                raise InputError(f"{self._where(head)}: a window lies entirely in the padding; not supported in stream "
                                 "mode")
            cx = max(c for p in range(nval) for c in cs[p] if 0 <= c < W)
            cols.append({"cx": cx, "nval": nval,
                         "off": [[cx - c if (p < nval and 0 <= c < W) else -1 for c in cs[p]] for p in range(P)]})
        needs = [(ry0 + gy * sy) * W + cols[gx]["cx"] + 1 for gy in range(Ho) for gx in range(gx_n)]
        if any(b < a for a, b in zip(needs, needs[1:])):
            raise RuntimeError(f"internal error: {self._where(head)}: group input needs decrease")
        n_total = max(H * W, needs[-1])
        depth = 1 + max(row_off[ky] * W + cl["off"][p][kx] for rw in rows for cl in cols for ky in range(ky_n)
                        for p in range(P) for kx in range(kx_n) if rw["mask"][ky] and cl["off"][p][kx] >= 0)
        pad_codes = [0 if conv else kif_range(k)[0] for k in lanes]

        # one symbolic window per lane, traced through the head and its elementwise tail
        inputs, keys, in_kifs, outs = [], [], [], []
        win_shape = (1, c_in, *kernel)
        at_w = {k: v for k, v in at.items() if k not in ("pads", "auto_pad", "strides", "dilations", "ceil_mode")}
        if not conv:
            at_w["strides"] = list(kernel)
        f_out = None
        for p in range(P):
            vars_ = np.empty(win_shape, dtype=object)
            for t, (ky, kx) in enumerate(taps):
                for c in range(c_in):
                    v = _var(lanes[c], self.hw)
                    idx = (0, c, kx) if nd == 1 else (0, c, ky, kx)
                    vars_[idx] = v
                    if kif_width(lanes[c]):
                        inputs.append(v)
                        keys.append([p, t, c])
                        in_kifs.append(lanes[c])
            if gather:
                f_out = len(taps) * c_in
                idx_of = [(0, c, kx) if nd == 1 else (0, c, ky, kx) for (ky, kx) in taps for c in range(c_in)]
                outs.extend(vars_[i] for i in idx_of)
                continue
            win = FixedVariableArray(vars_, self.w.solver_options, hwconf=self.hw)
            if conv:
                args = [win] + [self.w.values.get(i) if i else None for i in head.input[1:]]
                y = self.w._conv(head, args, at_w)
            else:
                y = self.w._maxpool(head, [win], at_w)
            f_out = y.shape[1]
            full = (1, f_out, *out_size)
            y = self._tails(nodes[1:], y, full)
            if tuple(y.shape) != (1, f_out, *([1] * nd)):
                raise InputError(f"{self._where(nodes[-1])}: changes the shape of the feature map; not supported")
            outs.extend(y._vars.ravel())
        dp = self._trace(inputs, outs, keys, [[p, c] for p in range(P) for c in range(f_out)])
        dp.finish(f"{name} ({self._where(head)})", in_kifs)
        if gather and [tuple(k) for k in dp.out_kifs] != [tuple(lanes[c]) for _ in taps for c in range(c_in)]:
            raise RuntimeError(f"internal error: {name}: the taps changed format in the datapath")
        out_lanes = []
        for c in range(f_out):  # the lane format must hold every parallel copy's output
            ks = [dp.out_kifs[p * f_out + c] for p in range(P)]
            out_lanes.append(_union_kif(ks))
        self.last_vars = outs[:f_out]
        spec = {
            "op": "conv" if conv else "maxpool", "H": H, "W": W, "C": c_in, "Ho": Ho, "Wo": Wo, "F": f_out,
            "kernel": [ky_n, kx_n], "stride": [sy, sx], "dilation": [dy, dx], "pad": [py, px], "P": P, "Gx": gx_n,
            "taps": [list(t) for t in taps], "ry0": ry0, "rows": rows, "row_off": row_off, "cols": cols,
            "need": needs, "n_total": n_total, "depth": depth,
            "pad_codes": pad_codes, "rank": nd, **({"gather": True} if gather else {}),
        }
        rows, wi = (depth - 1) // W, sum(kif_width(k) for k in lanes)
        lb = (self.fold or {}).get("line_buffer", "auto")
        if self.fold is not None and rows >= 1 and W >= 2 and (
                lb == "bram" or (lb == "auto" and rows * W * wi >= LINE_BUFFER_BRAM_BITS)):
            spec["line_buffer"] = "bram"  # row delays in block RAM (``_stream_hdl._bram_line_buffer``)
        self.stream = {"lanes": out_lanes, "beats": Ho * Wo, "spatial": tuple(out_size),
                       "ids": _spatial_ids((1, f_out, *out_size))}
        return Unit(name, "window", [n.name or n.output[0] for n in nodes], spec, dp, list(lanes), out_lanes,
                    H * W, Ho * Wo)

    def _dense_weights(self, head: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray | None]:
        """(N x O weights, bias or None) of a MatMul/Gemm whose first operand is the run-time vector."""
        at = _attrs(head)
        if head.op_type == "MatMul":
            if head.input[0] in self.w.values and not _is_sym(self.w.values[head.input[0]]):
                raise InputError(f"{self._where(head)}: the constant must be the second operand in stream mode")
            w = self.w.values.get(head.input[1])
            bias = None
        else:
            if at.get("transA", 0):
                raise InputError(f"{self._where(head)}: transA is not supported in stream mode")
            w = self.w.values.get(head.input[1])
            if w is not None and at.get("transB", 0):
                w = np.asarray(w).T
            if w is not None:
                w = np.asarray(w, dtype=np.float64) * float(at.get("alpha", 1.0))
            c = self.w.values.get(head.input[2]) if len(head.input) > 2 and head.input[2] else None
            bias = None if c is None else np.asarray(c, dtype=np.float64) * float(at.get("beta", 1.0))
        if w is None or _is_sym(w) or np.asarray(w).ndim != 2:
            raise InputError(f"{self._where(head)}: the weights must be a constant 2-D matrix")
        w = self.w._matrix(head, np.asarray(w, dtype=np.float64))
        return w, bias

    def _vector_elements(self, head: onnx.NodeProto, n: int) -> list[tuple[int, int]]:
        """(beat, lane) of each element of the dense layer's input vector."""
        ids = np.asarray(self.stream["ids"])
        if ids.shape != (1, n):
            raise InputError(f"{self._where(head)}: input has shape {ids.shape}, the weights expect (1, {n})")
        j = len(self.stream["lanes"])
        return [divmod(int(i), j) for i in ids.ravel()]

    def _mac(self, name: str, nodes: list[onnx.NodeProto]) -> Unit:
        head = nodes[0]
        w, bias = self._dense_weights(head)
        elems = self._vector_elements(head, w.shape[0])
        unit = self._mac_unit(name, nodes, w, bias, elems, self.stream["beats"], None)
        self.stream = {"lanes": unit.out_lanes, "beats": 1, "spatial": None,
                       "ids": np.arange(len(unit.out_lanes)).reshape(1, -1)}
        return unit

    def _conv_mac(self, name: str, nodes: list[onnx.NodeProto], taps: Unit) -> Unit:
        """A Conv layer after its ``gather`` window unit: a dense layer applied to each window (one beat of
        ``taps x C`` lanes, tap-major), ``windows`` times per frame; its output stream is the conv's."""
        head = nodes[0]
        wts = np.asarray(self.w.values[head.input[1]], dtype=np.float64)  # (F, C, *kernel)
        f_out, c_in = wts.shape[:2]
        cols = [wts[:, c, kx] if wts.ndim == 3 else wts[:, c, ky, kx] for ky, kx in taps.spec["taps"]
                for c in range(c_in)]
        w = np.stack(cols)  # (taps * C, F)
        b = self.w.values.get(head.input[2]) if len(head.input) > 2 and head.input[2] else None
        bias = None if b is None else np.asarray(b, dtype=np.float64).ravel()
        s = taps.spec
        out_size = (s["Wo"],) if s["rank"] == 1 else (s["Ho"], s["Wo"])
        unit = self._mac_unit(name, nodes, w, bias, [(0, j) for j in range(len(w))], 1, out_size)
        windows = s["Ho"] * s["Wo"]
        unit.spec["windows"] = windows
        unit.beats_in = unit.beats_out = windows
        return unit

    def _mac_unit(self, name: str, nodes: list[onnx.NodeProto], w: np.ndarray, bias: np.ndarray | None,
                  elems: list[tuple[int, int]], nb: int, out_size: tuple[int, ...] | None) -> Unit:
        """The exact folded MAC of weights ``w`` (N x O) on the current stream (element e at (beat, lane)
        ``elems[e]``); ``out_size``: a conv's output map (per-channel constants of its tail reduce to one
        position), else a dense layer."""
        from da4ml.trace import FixedVariable, FixedVariableArray

        head = nodes[0]
        n, o = w.shape
        lanes = self.stream["lanes"]
        jn = len(lanes)
        P = max(1, min(self.P, jn))
        q_n = -(-jn // P)
        fw = _frac_bits(w, f"{self._where(head)} weights")
        wcodes = np.rint(w * 2.0**fw).astype(np.int64)
        live = [kif_width(k) > 0 for k in lanes]
        fx = max((int(k[2]) for k, lv in zip(lanes, live) if lv), default=0)
        elem_of = [[-1] * jn for _ in range(nb)]
        for e, (b, j) in enumerate(elems):
            elem_of[b][j] = e
        # exact accumulator bounds, in units of 2**-(fx + fw)
        lo = np.zeros(o, dtype=object)
        hi = np.zeros(o, dtype=object)
        for e, (_, j) in enumerate(elems):
            if not live[j]:
                continue
            clo, chi = kif_range(lanes[j])
            sh = fx - int(lanes[j][2])
            clo, chi = clo << sh, chi << sh
            for oo in range(o):
                a, b2 = int(wcodes[e, oo]) * clo, int(wcodes[e, oo]) * chi
                lo[oo] += min(a, b2)
                hi[oo] += max(a, b2)
        step = 2.0 ** -(fx + fw)
        accs, inputs, keys, in_kifs = [], [], [], []
        for oo in range(o):
            if lo[oo] == hi[oo]:
                accs.append(FixedVariable.from_const(float(lo[oo]) * step, hwconf=self.hw))
                continue
            v = FixedVariable(float(lo[oo]) * step, float(hi[oo]) * step, step, hwconf=self.hw)
            accs.append(v)
            inputs.append(v)
            keys.append(oo)
            in_kifs.append(tuple(int(x) for x in v.kif))
        shape = (1, o) if out_size is None else (1, o, *[1] * len(out_size))
        y = FixedVariableArray(np.array(accs, dtype=object).reshape(shape), self.w.solver_options, hwconf=self.hw)
        if bias is not None:
            y = y + (bias.reshape(shape) if bias.size == o else bias.reshape(1))
        y = self._tails(nodes[1:], y, None if out_size is None else (1, o, *out_size))
        if tuple(y.shape) != shape:
            raise InputError(f"{self._where(nodes[-1])}: changes the shape of the layer's output; not supported")
        outs = list(y._vars.ravel())
        dp = self._trace(inputs, outs, keys, list(range(len(outs))))
        dp.finish(f"{name} ({self._where(head)})", in_kifs)
        acc_bits = [max(int(lo[oo]).bit_length(), int(hi[oo]).bit_length()) + 1 for oo in range(o)]
        if max(acc_bits) > 62:
            raise InputError(f"{self._where(head)}: the accumulator needs {max(acc_bits)} bits; stream mode supports "
                             "up to 62")
        self.last_vars = outs
        spec = {
            "N": n, "O": o, "J": jn, "NB": nb, "P": P, "Q": q_n, "fx": fx, "fw": fw,
            "elem_of": elem_of, "wcodes": wcodes.tolist(), "acc_lo": [int(v) for v in lo],
            "acc_hi": [int(v) for v in hi], "acc_bits": acc_bits,
        }
        self._mac_bias = bias
        self._mac_out_size = out_size
        return Unit(name, "mac", [nd.name or nd.output[0] for nd in nodes], spec, dp, list(lanes), list(dp.out_kifs),
                    nb, 1)

    def _window_is_cheaper(self, head: onnx.NodeProto) -> bool:
        """Under ``target_ii`` (no override for this layer): would the conv's fmac, with the PE x SIMD that
        meets the budget, cost more than its window unit?  Both in LUTs: each multiplier about its operand bits
        multiplied (built from logic where the part has no DSP to spare), the window its da4ml datapath's
        cost (``window_cost``, from the unfolded plan)."""
        cost = self.window_cost.get(self.layer)
        if cost is None or self.fold.get("target_ii") is None or self._layer_override(head) is not None:
            return False
        wts = np.asarray(self.w.values[head.input[1]], dtype=np.float64)
        codes = np.rint(wts * 2.0 ** _frac_bits(wts, self._where(head)))
        ww = int(np.max(np.abs(codes), initial=1)).bit_length() + 1
        lanes = self.stream["lanes"]
        xw = max(kif_width(k) for k in lanes) + 1
        J, O = int(np.prod(wts.shape[2:])) * len(lanes), int(wts.shape[0])
        windows = math.prod(self._shape(head.output[0])[2:])
        pe, simd, _ = self._fold_shape(head, J, O, 1, windows)
        return pe * simd * xw * ww > cost

    def _layer_override(self, head: onnx.NodeProto) -> tuple[Any, dict[str, Any]] | None:
        """(key, {pe, simd}) of ``rtl.fold.layers`` naming the current layer by index or node name."""
        for k, v in (self.fold.get("layers") or {}).items():
            if str(k) in (str(self.layer), head.name or head.output[0]):
                return k, v
        return None

    def _check_layer_keys(self) -> None:
        if self.fold is None:
            return
        known = {str(i) for i in range(len(self.layer_names))} | set(self.layer_names)
        bad = [k for k in (self.fold.get("layers") or {}) if str(k) not in known]
        if bad:
            have = ", ".join(f"{i} {n}" for i, n in enumerate(self.layer_names))
            raise InputError(f"rtl.fold.layers: no layer {bad[0]!r}; the layers are (index name): {have}")
        hit = {str(k) for k in (self.fold.get("layers") or {})}
        for i, n in enumerate(self.layer_names):
            if i not in self.folded and (str(i) in hit or n in hit):
                raise InputError(f"rtl.fold.layers: layer {i} ({n}) has no multiply-accumulate to fold (a MaxPool "
                                 "or a grouped Conv); remove its entry")

    def _fold_shape(self, head: onnx.NodeProto, J: int, O: int, nb: int, windows: int) -> tuple[int, int, str]:
        """(PE, SIMD, why) of the current layer: its ``layers`` override, else the fewest multipliers whose
        cycles meet the layer's budget (``target_ii``), else ``rtl.fold``'s pe and simd.  A window (a dense
        layer's frame) takes ``nb * ceil(J / SIMD) * ceil(O / PE)`` steps plus the read-out of its ``ceil(O /
        PE)`` groups and about 4 cycles of pipeline (the cycle model then checks the plan)."""
        over = self._layer_override(head)
        if over is not None:
            k, v = over
            return (max(1, min(int(v.get("pe", 1)), O)), max(1, min(int(v.get("simd", 1)), J)),
                    f"rtl.fold.layers[{k!r}]")
        target = self.budget.get(self.layer, self.fold.get("target_ii"))
        if target is None:
            return (max(1, min(int(self.fold.get("pe", 1)), O)), max(1, min(int(self.fold.get("simd", 1)), J)),
                    "rtl.fold")
        best = None
        for pe in range(1, min(O, 64) + 1):
            for simd in range(1, min(J, 64) + 1):
                g = -(-O // pe)
                cycles = windows * (nb * -(-J // simd) * g + g + 4)
                key = (False, pe * simd, cycles) if cycles <= target else (True, cycles, pe * simd)
                if best is None or key < best[0]:
                    best = (key, pe, simd)
        assert best is not None
        return best[1], best[2], f"target_ii {target}"

    def _fold(self, unit: Unit, nodes: list[onnx.NodeProto]) -> Unit:
        """A ``mac`` unit as an ``fmac``: PE outputs x SIMD input elements per step, weights in a memory.  The
        arithmetic (weights, exact accumulator bounds, datapath) is the ``mac`` unit's."""
        s = unit.spec
        J, O, NB = s["J"], s["O"], s["NB"]
        pe, simd, why = self._fold_shape(nodes[0], J, O, NB, int(s.get("windows") or 1))
        self.folded.add(self.layer)
        C, G = -(-J // simd), -(-O // pe)
        s.update(PE=pe, SIMD=simd, C=C, G=G, K=C * G, steps=NB * C * G, layer=self.layer, chosen_by=why,
                 requant="parallel",
                 hold=bool(self.units))  # after another unit: read its held beat instead of copying it
        unit.kind = "fmac"
        s["memory"] = self._memory(s["steps"] * pe * simd * fmac_operand_bits(unit)[1])
        if self.fold.get("requant", "serial") == "serial":
            self._serial_requant(unit, nodes)
        self._stream_after(unit)
        return unit

    def _memory(self, bits: int) -> str:
        """``rtl.fold.memory`` for one weight table: ``auto`` puts a table of up to ``ROM_LUT_BITS`` in a LUT ROM,
        where it costs a few dozen LUTs at most, instead of spending a whole block RAM on it."""
        memory = str(self.fold.get("memory") or "auto")
        if memory == "auto":
            return "lut" if bits <= ROM_LUT_BITS else "bram"
        return memory

    def _stream_after(self, unit: Unit) -> None:
        """The stream a MAC unit sends on: a conv's feature map (one position per beat) or a dense vector."""
        o, size = len(unit.out_lanes), self._mac_out_size
        if size is None:
            self.stream = {"lanes": unit.out_lanes, "beats": 1, "spatial": None, "ids": np.arange(o).reshape(1, -1)}
        else:
            self.stream = {"lanes": unit.out_lanes, "beats": math.prod(size), "spatial": tuple(size),
                           "ids": _spatial_ids((1, o, *size))}

    def _serial_requant(self, unit: Unit, nodes: list[onnx.NodeProto]) -> None:
        """Requantize one group of PE outputs per cycle when the outputs differ only in their bias: one da4ml
        datapath of PE lanes, each ``tails(acc + bias)`` on symbolic accumulator and bias values (the union of
        every output's range), the bias read from a table.  da4ml computes each op exactly on its value, so
        every output gets what its own constant-bias datapath computes.  Otherwise (a per-channel constant in
        the tail, constant accumulators) the unit keeps the datapath over all outputs."""
        from da4ml.trace import FixedVariable, FixedVariableArray

        s = unit.spec
        O, PE = s["O"], s["PE"]
        bias, size = self._mac_bias, self._mac_out_size
        shape = (1, 1) if size is None else (1, 1, *[1] * len(size))
        lo, hi = min(min(s["acc_lo"]), 0), max(max(s["acc_hi"]), 0)
        if lo == hi:
            return
        bcodes, fb = None, 0
        if bias is not None:
            b = np.asarray(bias, dtype=np.float64).ravel()
            if b.size == 1:
                b = np.full(O, b[0])
            if b.size != O:
                return
            fb = _frac_bits(b, f"{self._where(nodes[0])} bias")
            bcodes = [int(v) for v in np.rint(b * 2.0**fb)]
        step = 2.0 ** -(s["fx"] + s["fw"])
        inputs, keys, in_kifs, outs = [], [], [], []
        for pe in range(PE):
            acc = FixedVariable(float(lo) * step, float(hi) * step, step, hwconf=self.hw)
            inputs.append(acc)
            keys.append(["acc", pe])
            in_kifs.append(tuple(int(x) for x in acc.kif))
            y = acc
            if bcodes is not None:
                blo, bhi = min(min(bcodes), 0), max(max(bcodes), 0)
                if blo != bhi:
                    bv = FixedVariable(blo * 2.0**-fb, bhi * 2.0**-fb, 2.0**-fb, hwconf=self.hw)
                    inputs.append(bv)
                    keys.append(["bias", pe])
                    in_kifs.append(tuple(int(x) for x in bv.kif))
                    y = acc + bv
            arr = FixedVariableArray(np.array([y], dtype=object).reshape(shape), self.w.solver_options, hwconf=self.hw)
            try:
                arr = self._tails(nodes[1:], arr, None if size is None else (1, O, *size))
            except InputError:
                return
            if tuple(arr.shape) != shape:
                return  # a per-output constant in the tail: not one function of (acc, bias)
            outs.append(arr._vars.ravel()[0])
        dp = self._trace(inputs, outs, keys, list(range(PE)))
        dp.finish(f"{unit.name} ({self._where(nodes[0])}) serial requantization", in_kifs)
        lane = _union_kif(dp.out_kifs)
        if not kif_width(lane):
            return
        unit.dp = dp
        unit.out_lanes = [lane] * O
        s.update(requant="serial", rq_bias=bcodes, rq_fb=fb, rq_acc=[int(lo), int(hi)])
        self.last_vars = [outs[0]] * O

    def _collect(self, name: str, nodes: list[onnx.NodeProto]) -> Unit:
        from da4ml.trace import FixedVariableArray

        head = nodes[0]
        w, _ = self._dense_weights(head)
        n = w.shape[0]
        elems = self._vector_elements(head, n)
        lanes = self.stream["lanes"]
        nb, jn = self.stream["beats"], len(lanes)
        vars_, inputs, keys, in_kifs = [], [], [], []
        for e, (b, j) in enumerate(elems):
            v = _var(lanes[j], self.hw)
            vars_.append(v)
            if kif_width(lanes[j]):
                inputs.append(v)
                keys.append([b, j])
                in_kifs.append(lanes[j])
        x = FixedVariableArray(np.array(vars_, dtype=object).reshape(1, n), self.w.solver_options, hwconf=self.hw)
        args = [x] + [self.w.values.get(i) if i else None for i in head.input[1:]]
        y = self.w.ops[head.op_type](head, args, _attrs(head))
        y = self._tails(nodes[1:], y, None)
        outs = list(y._vars.ravel())
        dp = self._trace(inputs, outs, keys, list(range(len(outs))))
        dp.finish(f"{name} ({self._where(head)})", in_kifs)
        self.last_vars = outs
        spec = {"N": n, "O": len(outs), "J": jn, "NB": nb}
        out_lanes = list(dp.out_kifs)
        self.stream = {"lanes": out_lanes, "beats": 1, "spatial": None, "ids": np.arange(len(outs)).reshape(1, -1)}
        return Unit(name, "collect", [nd.name or nd.output[0] for nd in nodes], spec, dp, list(lanes), out_lanes,
                    nb, 1)

    def _check_out(self, unit: Unit) -> Unit:
        if not sum(kif_width(k) for k in unit.out_lanes):
            raise InputError(f"{unit.name} ({', '.join(unit.nodes)}): every output is the constant 0; nothing to "
                             "stream")
        return unit

    def _trace(self, inputs: list[Any], outs: list[Any], in_keys: list[Any], out_keys: list[Any]) -> Datapath:
        from da4ml.trace import comb_trace

        comb = comb_trace(inputs, outs, keep_dead_inputs=True)
        try:
            pipe = _quiet_pipeline(comb, self.cutoff)
        except AssertionError as e:
            if "latency cutoff" in str(e):
                raise InputError(f"latency_cutoff = {self.cutoff:g} is smaller than the delay of one adder in this "
                                 "design; use a larger value") from None
            raise
        return Datapath(pipe, in_keys, out_keys)


def _spatial_ids(shape: tuple[int, ...]) -> np.ndarray:
    """Element ids of a feature map (1, C, *S) as the stream carries it: beat = raster position, lane = channel."""
    c, sp = shape[1], tuple(shape[2:])
    npos = math.prod(sp)
    ids = np.arange(npos)[None, :] * c + np.arange(c)[:, None]
    return ids.reshape(1, c, *sp)


def _per_channel(node: onnx.NodeProto, v: np.ndarray, full: tuple[int, ...], where: str) -> np.ndarray:
    if v.size == 1:
        return v
    try:
        b = np.broadcast_to(v, full)
    except ValueError:
        raise InputError(f"{where}: constant of shape {v.shape} does not broadcast to the feature map {full}") from None
    sl = b[(slice(None), slice(None)) + tuple(slice(0, 1) for _ in full[2:])]
    if not np.array_equal(np.broadcast_to(sl, full), b):
        raise InputError(f"{where}: a constant that varies over positions is not supported in stream mode")
    return np.array(sl)


def _union_kif(ks: list[Kif]) -> Kif:
    live = [k for k in ks if kif_width(k)]
    if not live:
        return (0, 0, 0)
    k = max(int(x[0]) for x in live)
    f = max(int(x[2]) for x in live)
    # integer bits (sign excluded) wide enough for every format once signed
    i = max(int(x[1]) for x in live)
    return (k, i, f)


def _frac_bits(w: np.ndarray, what: str) -> int:
    for f in range(0, 48):
        s = w * 2.0**f
        if np.array_equal(s, np.rint(s)):
            return f
    raise InputError(f"{what}: not on a power-of-two grid of at most 48 fraction bits")


def plan_stream(mw: Any, latency_cutoff: float, parallelism: int = 1, in_elements: int | None = None,
                dense: str = "auto", fold: dict[str, Any] | None = None,
                budget: dict[int, int] | None = None, window_cost: dict[int, float] | None = None) -> StreamPlan:
    """Cut a cleaned QONNX ModelWrapper into stream units and trace their datapaths (see the module docstring).
    ``fold`` (``rtl.fold``): every dense and (ungrouped) conv layer becomes an ``fmac`` unit; ``budget``: cycles
    per frame per layer index, tighter than ``target_ii`` where the cycle model found the first plan short (0:
    keep the conv in its window unit); ``window_cost``: layer -> da4ml cost of a conv's window unit, against
    which ``target_ii`` weighs folding it."""
    if dense not in DENSE_MODES:
        raise InputError(f"rtl.dense = {dense!r}; allowed: {', '.join(DENSE_MODES)}")
    return _Planner(mw, latency_cutoff, parallelism, in_elements, dense, fold, budget, window_cost).run()


def plan_json(plan: StreamPlan) -> dict[str, Any]:
    """The plan as the JSON saved in ``model/stream.json`` (read by the emulator)."""
    def kifs(ks: list[Kif]) -> list[list[int]]:
        return [[int(k[0]), int(k[1]), int(k[2])] for k in ks]

    return {
        "version": 1,
        "input": {"format": plan.input_format.to_json(), "rounding": plan.input_rounding,
                  "shape": list(plan.input_shape), "lanes": plan.in_lanes, "beats": plan.beats_in,
                  "vector": plan.vector_input,
                  "elements_of_beat": plan.in_elements_of_beat},
        "units": [{
            "name": u.name, "kind": u.kind, "nodes": u.nodes, "spec": u.spec, "in_lanes": kifs(u.in_lanes),
            "out_lanes": kifs(u.out_lanes), "beats_in": u.beats_in, "beats_out": u.beats_out,
            "dp": {"file": f"model/{u.name}.json", "inputs": u.dp.inputs, "outputs": u.dp.outputs,
                   "in_widths": u.dp.in_widths, "out_kifs": kifs(u.dp.out_kifs), "stages": u.dp.stages},
        } for u in plan.units],
        "output": {"format": plan.output_format.to_json(), "order": plan.output_order,
                   "kifs": kifs(plan.output_kifs), "n": plan.n_outputs, "shape": list(plan.output_shape)},
    }
