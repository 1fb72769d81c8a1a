"""Fixed-point formats of the RTL ports and the float <-> integer-code conversions around them.

The hardware never sees floats: the graph's input quantizer runs in software (here, with the exact QONNX
``Quant`` semantics) and the Verilog receives its integer codes.  Keeping this conversion in one place is
what lets the emulator, the cocotb testbench and ``kdhw verify`` agree bit for bit with the QONNX reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ROUNDING_MODES = ("ROUND", "HALF_EVEN", "FLOOR", "CEIL")


@dataclass(frozen=True)
class FixedFormat:
    """Two's complement (``signed``) or unsigned fixed point: ``bits`` wide, ``frac_bits`` below the point.

    ``int_bits`` excludes the sign bit (the convention of ``kdhw.train.student.IOFormat``); ``lo``/``hi`` are the
    integer-code limits (a narrow quantizer never produces the most negative code, so the limits are kept
    apart from the container width).
    """

    bits: int
    frac_bits: int
    signed: bool
    lo: int
    hi: int

    @property
    def int_bits(self) -> int:
        return self.bits - self.frac_bits - int(self.signed)

    @property
    def scale(self) -> float:
        return 2.0 ** -self.frac_bits

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(int_bits=self.int_bits, scale=self.scale)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FixedFormat:
        return cls(int(d["bits"]), int(d["frac_bits"]), bool(d["signed"]), int(d["lo"]), int(d["hi"]))


def quant_limits(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Integer-code range of a QONNX ``Quant`` (the same formulas as qonnx' ``min_int``/``max_int``)."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def round_codes(y: np.ndarray, mode: str) -> np.ndarray:
    """QONNX rounding of ``x / scale``; ROUND is numpy's round-half-to-even, like qonnx' ``np.round``."""
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(y)
    if mode == "FLOOR":
        return np.floor(y)
    if mode == "CEIL":
        return np.ceil(y)
    raise ValueError(f"rounding mode {mode} is not supported; supported: {', '.join(ROUNDING_MODES)}")


def quantize_codes(x: np.ndarray, fmt: FixedFormat, rounding: str = "ROUND") -> np.ndarray:
    """Float inputs -> integer codes exactly as the QONNX input ``Quant`` computes them.

    The reference feeds float32 to the graph, so the inputs are rounded to float32 first; dividing by a
    power-of-two scale is then exact in float64 and the clamp/round order matches qonnx' ``int_quant``.
    """
    y = np.asarray(x, dtype=np.float32).astype(np.float64) * 2.0**fmt.frac_bits
    if not np.all(np.isfinite(y)):
        raise ValueError("inputs contain NaN or infinity; the fixed-point input quantizer has no code for them")
    y = np.clip(y, fmt.lo, fmt.hi)
    return round_codes(y, rounding).astype(np.int64)


def codes_from_values(y: np.ndarray, fmt: FixedFormat, what: str = "values") -> np.ndarray:
    """Dequantized values (e.g. the QONNX reference outputs) -> integer codes; refuses off-grid values.

    An expected value that is not on the output grid means the expectation is not from this design, and
    silently rounding it would hide exactly the kind of mismatch the check exists for.
    """
    c = np.asarray(y, dtype=np.float64) * 2.0**fmt.frac_bits
    r = np.round(c)
    bad = (r != c) | (r < fmt.lo) | (r > fmt.hi)
    if np.any(bad):
        i = np.argwhere(bad)[0]
        raise ValueError(
            f"{what}[{', '.join(map(str, i))}] = {np.asarray(y)[tuple(i)]!r} is not a code of the output format "
            f"({'s' if fmt.signed else 'u'}{fmt.bits}, {fmt.frac_bits} fraction bits, codes {fmt.lo}..{fmt.hi})"
        )
    return r.astype(np.int64)


def pack_words(codes: np.ndarray, fmt: FixedFormat) -> list[int]:
    """Rows of integer codes -> one port value per row: element j in bits [j*W, j*W+W-1], LSB first."""
    codes = np.asarray(codes, dtype=np.int64)
    w = fmt.bits
    mask = (1 << w) - 1
    words = []
    for row in codes.reshape(len(codes), -1):
        v = 0
        for j, c in enumerate(row.tolist()):
            v |= (int(c) & mask) << (j * w)
        words.append(v)
    return words


def unpack_words(words: list[int] | np.ndarray, n: int, fmt: FixedFormat) -> np.ndarray:
    """Port values -> (rows, n) integer codes (sign-extended when the format is signed)."""
    w = fmt.bits
    mask = (1 << w) - 1
    out = np.empty((len(words), n), dtype=np.int64)
    for r, word in enumerate(words):
        word = int(word)
        for j in range(n):
            c = (word >> (j * w)) & mask
            if fmt.signed and c >> (w - 1):
                c -= 1 << w
            out[r, j] = c
    return out


def po2_exponent(scale: float) -> int | None:
    """log2(scale) when ``scale`` is an exact power of two, else None."""
    if not (scale > 0 and math.isfinite(scale)):
        return None
    m, e = math.frexp(scale)
    return e - 1 if m == 0.5 else None


def edge_vectors(meta: dict[str, Any], n: int, seed: int) -> np.ndarray:
    """``n`` float input rows for a generated design (``rtl.json`` meta): off-grid values over the input
    format's range and 25 % past both ends, a quarter of them exact ties halfway between two codes.  Why: a
    regression test on such rows exercises every rounding and saturation decision of the input quantizer,
    which rows from a data set rarely do."""
    rng = np.random.default_rng(seed)
    fmt = FixedFormat.from_json(meta["input_format"])
    lo, hi = fmt.lo * fmt.scale, fmt.hi * fmt.scale
    x = rng.uniform(lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo), size=(n, *meta["input_shape"]))
    ties = (rng.integers(fmt.lo, fmt.hi, size=x.shape) + 0.5) * fmt.scale
    return np.where(rng.random(x.shape) < 0.25, ties, x).astype(np.float32)
