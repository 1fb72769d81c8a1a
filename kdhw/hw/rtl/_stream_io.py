"""Stream-mode port words: input codes -> AXI4-Stream input beats, outputs -> the beats the core must send,
and the emulator entry point.  Everything here reads only ``rtl.json`` and ``model/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._formats import FixedFormat
from ._stream_emu import argmax_lowest, emulate_codes, load_stream


def stream_in_words(meta: dict[str, Any], codes: np.ndarray) -> list[int]:
    """(N, n_inputs) input codes -> N * beats_in words for s_axis_tdata, frame by frame."""
    fin = FixedFormat.from_json(meta["input_format"])
    w, mask = fin.bits, (1 << fin.bits) - 1
    beats = meta["stream"]["in_elements_of_beat"]
    words = []
    for row in np.asarray(codes, dtype=np.int64).tolist():
        for lanes in beats:
            v = 0
            for j, e in enumerate(lanes):
                if e >= 0:
                    v |= (int(row[e]) & mask) << (j * w)
            words.append(v)
    return words


def stream_out_words(meta: dict[str, Any], out_codes: np.ndarray) -> list[int]:
    """(N, n_outputs) output codes -> N * beats_out words the core sends on m_axis_tdata, frame by frame."""
    st = meta["stream"]
    fout = FixedFormat.from_json(meta["output_format"])
    w, mask = fout.bits, (1 << fout.bits) - 1
    codes = np.asarray(out_codes, dtype=np.int64)
    cls = argmax_lowest(codes)
    words = []
    for r, row in enumerate(codes.tolist()):
        if st["output"] in ("logits", "both"):
            eo = st["out_elements"]
            for b in range(st["logit_beats"]):
                v = 0
                for j, c in enumerate(row[b * eo:(b + 1) * eo]):
                    v |= (int(c) & mask) << (j * w)
                words.append(v)
        if st["output"] in ("class", "both"):
            words.append(int(cls[r]))
    return words


def unpack_stream_words(meta: dict[str, Any], words: list[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Output beats (beats_out per frame) -> (logit codes (N, n_outputs) or None, class indices or None)."""
    st = meta["stream"]
    fout = FixedFormat.from_json(meta["output_format"])
    w, mask = fout.bits, (1 << fout.bits) - 1
    nbo, n = st["beats_out"], int(meta["n_outputs"])
    rows = len(words) // nbo
    logits = np.zeros((rows, n), dtype=np.int64) if st["output"] != "class" else None
    classes = np.zeros(rows, dtype=np.int64) if st["output"] != "logits" else None
    for r in range(rows):
        beats = words[r * nbo:(r + 1) * nbo]
        if logits is not None:
            eo = st["out_elements"]
            for k in range(n):
                c = (int(beats[k // eo]) >> ((k % eo) * w)) & mask
                if fout.signed and c >> (w - 1):
                    c -= 1 << w
                logits[r, k] = c
        if classes is not None:
            classes[r] = int(beats[-1]) & ((1 << st["class_bits"]) - 1)
    return logits, classes


def emulate_stream_codes(rtl_dir: str | Path, codes: np.ndarray) -> np.ndarray:
    """Input codes -> output codes (N, n_outputs) of a stream design, bit-exact (da4ml interpreter per unit)."""
    from ._build import load_meta

    meta = load_meta(rtl_dir)
    desc, pipes = load_stream(rtl_dir)
    fout = FixedFormat.from_json(meta["output_format"])
    y = emulate_codes(desc, pipes, codes)
    kifs = desc["output"]["kifs"]
    # the output unit re-codes each logit in the uniform output format: value unchanged
    c = y * 2.0**fout.frac_bits
    r = np.rint(c)
    if not np.array_equal(r, c) or np.any(r < fout.lo) or np.any(r > fout.hi):
        raise RuntimeError(f"internal error: an emulated output is not a code of the output format ({kifs[:1]})")
    return r.astype(np.int64)
