"""The contract between the data and the student's fixed-point ports: input range in, logit range out.

The student's input quantizer is the hardware's input port: a value outside its range is clamped, silently,
by brevitas in training, by the QONNX reference, by the HLS input type and by the Verilog alike, so every
level agrees bit for bit on a wrong answer.  The only place to catch a format that does not fit the data is
where the data is loaded, before anything is trained; this module measures every split (and the transfer
set) against the format, derives a format from the training data when asked (``student.input: auto``),
and measures how often the trained student's logits saturate the output format.

Light on purpose (numpy only; torch is imported inside the one function that needs a model), so the
config can validate ``student.input`` with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

# More than this share of the values of any split clamped by the input format is refused (1 %), unless
# ``student.input.allow_clip`` raises it.
DEFAULT_ALLOW_CLIP = 0.01
# More than this share of test rows whose largest logits tie at the output format's maximum is a warning.
OUTPUT_TIE_WARN = 0.01
_INPUT_KEYS = ("bits", "int_bits", "signed", "allow_clip")
INT_BITS_MIN = -8


@dataclass(frozen=True)
class IOFormat:
    """Fixed-point format of a student port: total bits, integer bits (sign excluded), signedness."""

    bits: int
    int_bits: int
    signed: bool

    @property
    def scale(self) -> float:
        """The step between two codes."""
        return 2.0 ** (self.int_bits - self.bits + (1 if self.signed else 0))

    @property
    def lo(self) -> float:
        return -(2.0 ** self.int_bits) if self.signed else 0.0

    @property
    def hi(self) -> float:
        """The largest representable value (one step under 2^int_bits)."""
        return 2.0 ** self.int_bits - self.scale

    @property
    def hls_type(self) -> str:
        """The hls4ml precision string: RND_CONV/SAT match brevitas' round-half-even + clamp."""
        if self.signed:
            return f"fixed<{self.bits},{self.int_bits + 1},RND_CONV,SAT>"
        return f"ufixed<{self.bits},{self.int_bits},RND_CONV,SAT>"

    def spec(self) -> dict[str, Any]:
        return {"bits": self.bits, "int_bits": self.int_bits, "signed": self.signed}

    def __str__(self) -> str:
        return f"{{bits: {self.bits}, int_bits: {self.int_bits}, signed: {str(self.signed).lower()}}}"


# ---------------------------------------------------------------- the student.input key

def parse_input(value: Any, src: str) -> dict[str, Any]:
    """``student.input`` -> {bits, int_bits (int or "auto"), signed (bool or "auto"), allow_clip}.

    ``auto`` alone means 8 bits with integer bits and sign derived from the training data.  Raises an
    InputError naming the key for anything else.
    """
    if value == "auto":
        value = {"bits": 8, "int_bits": "auto", "signed": "auto"}
    if not isinstance(value, dict):
        raise InputError(f"{src}: student.input must be a mapping ({{bits, int_bits, signed}}) or auto, got {value!r}")
    extra = sorted(set(value) - set(_INPUT_KEYS))
    if extra:
        raise InputError(f"{src}: unknown key student.input.{extra[0]}; allowed: {', '.join(_INPUT_KEYS)}")
    bits = value.get("bits", 8)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise InputError(f"{src}: student.input.bits = {bits!r} must be an integer in [2, 16]")
    int_bits = value.get("int_bits", 1)
    if int_bits != "auto" and (isinstance(int_bits, bool) or not isinstance(int_bits, int)
                               or not INT_BITS_MIN <= int_bits <= bits):
        raise InputError(f"{src}: student.input.int_bits = {int_bits!r} must be an integer in "
                         f"[{INT_BITS_MIN}, {bits}] or auto")
    signed = value.get("signed", False)
    if signed != "auto" and not isinstance(signed, bool):
        raise InputError(f"{src}: student.input.signed = {signed!r} must be true, false or auto")
    allow = value.get("allow_clip", DEFAULT_ALLOW_CLIP)
    if isinstance(allow, bool) or not isinstance(allow, (int, float)) or not 0 <= allow <= 1:
        raise InputError(f"{src}: student.input.allow_clip = {allow!r} must be a share in [0, 1] "
                         f"(default {DEFAULT_ALLOW_CLIP})")
    return {"bits": bits, "int_bits": int_bits, "signed": signed, "allow_clip": float(allow)}


def input_format(spec: dict[str, Any], src: str) -> IOFormat:
    """The concrete input format of a student spec (``auto`` must have been resolved against the data)."""
    p = parse_input(spec.get("input") or {}, src)
    if p["int_bits"] == "auto" or p["signed"] == "auto":
        raise InputError(f"{src}: student.input has int_bits/signed = auto, which is resolved against the training "
                         "data when it is loaded (kdhw.load_data); load the data first or give the numbers")
    return IOFormat(p["bits"], p["int_bits"], p["signed"])


# ---------------------------------------------------------------- measuring values against a format

def measure(x: np.ndarray, fmt: IOFormat) -> dict[str, Any]:
    """Range of ``x`` against ``fmt``.

    ``clipped_share``: values whose quantization error exceeds half a step, i.e. that the clamp moved (a
    value one half step past the largest code is still only rounded).  ``headroom_bits``: top integer
    bits no value needs (the format could give them to the fraction instead); negative when values clip.
    ``top_bit_idle_share``: values whose magnitude never reaches the top integer bit.
    """
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size == 0:
        return {"values": 0, "min": None, "max": None, "clipped_share": 0.0, "clipped_low": 0, "clipped_high": 0,
                "headroom_bits": None, "top_bit_idle_share": None, "sign_unused": None}
    half = fmt.scale / 2
    low = int(np.count_nonzero(v < fmt.lo - half))
    high = int(np.count_nonzero(v > fmt.hi + half))
    need = needed_int_bits(v, fmt.bits, fmt.signed)
    mag = np.abs(v) if fmt.signed else np.clip(v, 0, None)
    return {
        "values": int(v.size), "min": float(v.min()), "max": float(v.max()),
        "clipped_share": (low + high) / v.size, "clipped_low": low, "clipped_high": high,
        "headroom_bits": None if need is None else fmt.int_bits - need,
        "top_bit_idle_share": float(np.mean(mag < 2.0 ** (fmt.int_bits - 1))),
        "sign_unused": bool(fmt.signed and v.min() >= 0),
    }


def needed_int_bits(x: np.ndarray, bits: int, signed: bool) -> int | None:
    """The fewest integer bits with which a ``bits``-wide format clamps none of ``x``; None when even
    ``int_bits = bits`` clamps some (or, unsigned, when values are negative)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    lo_v, hi_v = float(v.min()), float(v.max())
    for k in range(INT_BITS_MIN, bits + 1):
        f = IOFormat(bits, k, signed)
        if lo_v >= f.lo - f.scale / 2 and hi_v <= f.hi + f.scale / 2:
            return k
    return None


def derive_format(x: np.ndarray, bits: int, signed: Any = "auto", int_bits: Any = "auto") -> IOFormat | None:
    """The format ``student.input: auto`` picks: signed when any value is negative, and the fewest integer
    bits that clamp no value of ``x`` (the training rows), so the fraction keeps every bit it can."""
    v = np.asarray(x, dtype=np.float64).ravel()
    s = bool(v.min() < 0) if signed == "auto" else bool(signed)
    if int_bits != "auto":
        return IOFormat(bits, int(int_bits), s)
    k = needed_int_bits(v, bits, s)
    return None if k is None else IOFormat(bits, k, s)


def _fmt_num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


def _suggest(all_x: np.ndarray, fmt: IOFormat) -> str:
    """'use' a format of the same width that clamps none of the values, or what to do when none exists."""
    signed = fmt.signed or bool(all_x.min() < 0)
    k = needed_int_bits(all_x, fmt.bits, signed)
    if k is not None:
        return f"use {IOFormat(fmt.bits, k, signed)}"
    for bits in range(fmt.bits + 1, 17):
        k = needed_int_bits(all_x, bits, signed)
        if k is not None:
            return f"use {IOFormat(bits, k, signed)} (or scale the data into a smaller range)"
    return "scale the data into a range 16 bits can hold (e.g. standardize it)"


def check_input(splits: dict[str, np.ndarray], spec_input: Any, data_name: str, src: str,
                enforce: bool = True) -> tuple[IOFormat, dict]:
    """Measure every split against ``student.input`` (resolving ``auto`` from ``splits['train']`` plus the
    transfer set) and refuse a format that clamps more than ``allow_clip`` of any split's values.

    Returns the concrete format and the record written to ``data_manifest.json`` and ``report.md``;
    ``enforce=False`` records without refusing.
    """
    p = parse_input(spec_input, src)
    train = [a for k, a in splits.items() if k in ("train", "transfer") and a.size]
    x_train = np.concatenate([a.ravel() for a in train]) if train else np.zeros(1)
    auto = [k for k in ("int_bits", "signed") if p[k] == "auto"]
    if auto:
        fmt = derive_format(x_train, p["bits"], p["signed"], p["int_bits"])
        if fmt is None:
            raise InputError(f"{src}: student.input.int_bits = auto: the training inputs of {data_name} reach "
                             f"{_fmt_num(float(np.abs(x_train).max()))}, more than {p['bits']} bits can hold at "
                             f"any int_bits; {_suggest(x_train, IOFormat(p['bits'], 0, bool(x_train.min() < 0)))}")
    else:
        fmt = IOFormat(p["bits"], p["int_bits"], p["signed"])
    per = {k: measure(a, fmt) for k, a in splits.items() if a is not None}
    everything = np.concatenate([a.ravel() for a in splits.values() if a is not None and a.size])
    whole = measure(everything, fmt)
    worst = max(per, key=lambda k: per[k]["clipped_share"])
    share = per[worst]["clipped_share"]
    rec = {"format": fmt.spec(), "hls_type": fmt.hls_type, "range": [fmt.lo, fmt.hi], "step": fmt.scale,
           "allow_clip": p["allow_clip"], "auto": auto, "all": whole, "splits": per, "max_clipped_share": share}
    if enforce and share > p["allow_clip"]:
        where = "transfer set" if worst == "transfer" else f"{worst} split"
        raise InputError(
            f"{src}: student.input = {fmt}{' (auto)' if auto else ''} clips {100 * whole['clipped_share']:.1f} % of "
            f"the values of {data_name} ({where}: {100 * share:.1f} %; range {_fmt_num(whole['min'])} .. "
            f"{_fmt_num(whole['max'])}, the format holds {_fmt_num(fmt.lo)} .. {_fmt_num(fmt.hi)}); "
            f"{_suggest(everything, fmt)} or set student.input.allow_clip: {math.ceil(share * 100) / 100:g}")
    return fmt, rec


def input_notes(rec: dict[str, Any]) -> list[str]:
    """Sentences for report.md: what clips, and bits the format spends on a range the data never uses."""
    fmt = IOFormat(**rec["format"])
    out = []
    for k, m in rec["splits"].items():
        if m["values"] and m["clipped_share"] > 0:
            out.append(f"{k}: {100 * m['clipped_share']:.2f} % of the values clamped to the format's range "
                       f"(allowed: {100 * rec['allow_clip']:g} %)")
    hr = [m["headroom_bits"] for m in rec["splits"].values() if m["values"] and m["headroom_bits"] is not None]
    if hr and min(hr) >= 1:
        k = fmt.int_bits - min(hr)
        out.append(f"no value needs the top {min(hr)} integer bit(s): int_bits: {k} would keep {min(hr)} more "
                   "fraction bit(s) at the same width")
    if fmt.signed and all(m["sign_unused"] for m in rec["splits"].values() if m["values"]):
        out.append("no value is negative: signed: false would give the sign bit to the range")
    return out


# ---------------------------------------------------------------- outputs of the trained student

def output_saturation(model: Any, x: np.ndarray, batch: int = 1024) -> dict[str, Any]:
    """How often the trained student's logits hit the output format's limits, on ``x`` (the test rows).

    The student's accuracy already includes the clamp; what a user needs to know is whether decisions
    became ties: rows whose largest logit is saturated, and rows where two or more classes tie at the
    saturated maximum (the argmax then picks the lowest class index, in software and in hardware alike).
    """
    import torch

    model.eval()
    names = list(model.names)
    if not names or names[-1] != "output_quant":
        raise InputError("output_saturation needs a kdhw student (its last layer is output_quant)")
    pre, post, scales, bits = [], [], [], None
    with torch.no_grad():
        for i in range(0, len(x), batch):
            h: Any = torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))
            for layer in list(model.layers)[:-1]:
                h = layer(h)
            z = h.value if hasattr(h, "value") and not isinstance(h, torch.Tensor) else h
            q = model.layers[-1](h)
            pre.append(z.numpy())
            post.append(q.value.numpy())
            scales.append(float(q.scale.reshape(-1)[0]))
            bits = int(q.bit_width.reshape(-1)[0])
    z, q, scale = np.concatenate(pre), np.concatenate(post), scales[0]
    assert bits is not None
    fmt = IOFormat(bits, int(round(math.log2(scale))) + bits - 1, True)
    sat = (z > fmt.hi + scale / 2) | (z < fmt.lo - scale / 2)
    top = q.max(1, keepdims=True)
    top_sat = sat[np.arange(len(q)), z.argmax(1)]
    ties = (np.count_nonzero(q == top, axis=1) > 1) & top_sat
    return {"format": fmt.spec(), "range": [fmt.lo, fmt.hi], "rows": int(len(q)),
            "logit_saturated_share": float(sat.mean()), "rows_top_saturated_share": float(top_sat.mean()),
            "rows_tied_at_max_share": float(ties.mean()), "warn": bool(ties.mean() > OUTPUT_TIE_WARN)}


def output_note(sat: dict[str, Any]) -> str:
    """One sentence for report.md and the log."""
    s = (f"{100 * sat['logit_saturated_share']:.2f} % of the test logits saturate the output format "
         f"{IOFormat(**sat['format'])} (range {_fmt_num(sat['range'][0])} .. {_fmt_num(sat['range'][1])}); "
         f"{100 * sat['rows_tied_at_max_share']:.2f} % of the rows tie at the saturated maximum")
    if sat["warn"]:
        s += (f" (more than {100 * OUTPUT_TIE_WARN:g} %: those decisions go to the lowest class index; "
              "raise student.output.bits)")
    return s
