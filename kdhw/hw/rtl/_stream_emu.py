"""Bit-exact functional emulator of a stream design, from the files ``kdhw rtl`` saved beside the Verilog.

It reads only ``model/stream.json`` (the plan: window tap tables, ROM contents, lane formats) and each
unit's da4ml pipeline (``model/<unit>.json``), and computes every frame the way the hardware does: windows
are gathered through the line-buffer offset tables the Verilog was generated from, every datapath runs in
da4ml's interpreter, folded dense layers accumulate the ROM's integer weights exactly.  So ``kdhw verify``
can check every row in a fraction of a second, and the simulator then checks the Verilog text itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.errors import InputError

STREAM_FILE = "model/stream.json"


def _run(pipe: Any, x: np.ndarray) -> np.ndarray:
    y = np.ascontiguousarray(x, dtype=np.float64)
    n = len(y)
    for stage in pipe.solutions:
        y = np.asarray(stage.predict(np.ascontiguousarray(y)), dtype=np.float64).reshape(n, -1)
    return y


def _lane_scale(kifs: list[list[int]]) -> np.ndarray:
    return np.array([2.0 ** -int(k[2]) for k in kifs])


def _window(u: dict[str, Any], pipe: Any, vals: np.ndarray) -> np.ndarray:
    s = u["spec"]
    n = len(vals)
    W, Wo, P, gx_n, F = s["W"], s["Wo"], s["P"], s["Gx"], s["F"]
    taps = s["taps"]
    in_lanes = u["in_lanes"]
    pad_vals = np.array([c * 2.0 ** -int(k[2]) for c, k in zip(s["pad_codes"], in_lanes)])
    keys = u["dp"]["inputs"]
    groups = [(gy, gx) for gy in range(s["Ho"]) for gx in range(gx_n)]
    pos = np.full((len(groups), len(keys)), -1, dtype=np.int64)
    chan = np.zeros(len(keys), dtype=np.int64)
    for g, (gy, gx) in enumerate(groups):
        row, col = s["rows"][gy], s["cols"][gx]
        need = (s["ry0"] + gy * s["stride"][0]) * W + col["cx"] + 1
        if need != s["need"][g]:
            raise RuntimeError(f"internal error: group {g} needs {need} inputs, the plan says {s['need'][g]}")
        for i, (p, t, c) in enumerate(keys):
            ky, kx = taps[t]
            co = col["off"][p][kx]
            chan[i] = c
            if row["mask"][ky] and co >= 0:
                off = s["row_off"][ky] * W + co
                if off >= s["depth"]:
                    raise RuntimeError(f"internal error: tap offset {off} beyond the line buffer ({s['depth']})")
                pos[g, i] = need - 1 - off
    x = vals[:, np.clip(pos, 0, None), chan[None, :]]  # (n, groups, inputs)
    x = np.where(pos[None] >= 0, x, pad_vals[chan][None, None, :])
    y = _run(pipe, x.reshape(n * len(groups), len(keys))).reshape(n, len(groups), P, F)
    out = np.zeros((n, s["Ho"] * Wo, F))
    for g, (gy, gx) in enumerate(groups):
        nval = s["cols"][gx]["nval"]
        base = gy * Wo + gx * P
        out[:, base:base + nval, :] = y[:, g, :nval, :]
    return out


def _mac(u: dict[str, Any], pipe: Any, vals: np.ndarray) -> np.ndarray:
    s = u["spec"]
    if s.get("windows"):  # a folded conv: every beat (one window) is a vector of its own
        n, b = vals.shape[:2]
        one = {**u, "spec": {**s, "windows": None}}
        return _mac(one, pipe, vals.reshape(n * b, 1, -1)).reshape(n, b, -1)
    n = len(vals)
    fx = s["fx"]
    codes = np.rint(vals * 2.0**fx)
    if not np.array_equal(codes, vals * 2.0**fx):
        raise RuntimeError("internal error: a MAC input is not on the accumulator's grid")
    codes = codes.astype(np.int64).reshape(n, -1)
    wc = np.asarray(s["wcodes"], dtype=np.int64)
    wfull = np.zeros((s["NB"] * s["J"], s["O"]), dtype=np.int64)
    for b, row in enumerate(s["elem_of"]):
        for j, e in enumerate(row):
            if e >= 0:
                wfull[b * s["J"] + j] = wc[e]
    acc = codes @ wfull
    lo, hi = np.asarray(s["acc_lo"], dtype=np.int64), np.asarray(s["acc_hi"], dtype=np.int64)
    if np.any(acc < lo) or np.any(acc > hi):
        raise RuntimeError("internal error: an accumulator left its computed bounds")
    if s.get("requant") == "serial":  # fmac: one group of PE outputs per pass through a PE-lane datapath
        return _serial(s, u["dp"]["inputs"], pipe, acc)
    x = acc[:, u["dp"]["inputs"]].astype(np.float64) * 2.0 ** -(fx + s["fw"])
    return _run(pipe, x).reshape(n, 1, -1)


def _serial(s: dict[str, Any], keys: list[Any], pipe: Any, acc: np.ndarray) -> np.ndarray:
    n, O, PE, G = len(acc), s["O"], s["PE"], s["G"]
    accp = np.zeros((n, G * PE), dtype=np.int64)
    accp[:, :O] = acc
    bias = np.zeros(G * PE, dtype=np.int64)
    if s.get("rq_bias") is not None:
        bias[:O] = np.asarray(s["rq_bias"], dtype=np.int64)
    cols = []
    for what, pe in keys:
        if what == "acc":
            cols.append(accp.reshape(n, G, PE)[:, :, pe].astype(np.float64) * 2.0 ** -(s["fx"] + s["fw"]))
        else:
            cols.append(np.broadcast_to(bias.reshape(G, PE)[:, pe] * 2.0 ** -s["rq_fb"], (n, G)))
    y = _run(pipe, np.stack(cols, axis=-1).reshape(n * G, len(keys))).reshape(n, G * PE)
    return y[:, :O].reshape(n, 1, O)


def _collect(u: dict[str, Any], pipe: Any, vals: np.ndarray) -> np.ndarray:
    keys = u["dp"]["inputs"]
    b = np.array([k[0] for k in keys], dtype=np.int64)
    j = np.array([k[1] for k in keys], dtype=np.int64)
    return _run(pipe, vals[:, b, j]).reshape(len(vals), 1, -1)


def emulate_codes(desc: dict[str, Any], pipes: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    """Input codes (N, n_inputs) -> core output values (N, n_outputs) in graph output order."""
    inp = desc["input"]
    codes = np.asarray(codes, dtype=np.int64)
    scale = 2.0 ** -int(inp["format"]["frac_bits"])
    idx = np.asarray(inp["elements_of_beat"], dtype=np.int64)  # (beats, lanes)
    vals = np.where(idx[None] >= 0, codes[:, np.clip(idx, 0, None)], 0).astype(np.float64) * scale
    for u in desc["units"]:
        pipe = pipes[u["name"]]
        if u["kind"] == "window":
            vals = _window(u, pipe, vals)
        elif u["kind"] in ("mac", "fmac"):  # fmac: the same exact sums, other timing
            vals = _mac(u, pipe, vals)
        elif u["kind"] == "collect":
            vals = _collect(u, pipe, vals)
        else:
            raise InputError(f"{STREAM_FILE}: unknown unit kind {u['kind']!r}; regenerate the RTL directory")
    return vals[:, 0, desc["output"]["order"]]


def load_stream(rtl_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stream.json, unit name -> da4ml Pipeline) of a stream-mode RTL directory."""
    from da4ml.types import Pipeline

    rtl_dir = Path(rtl_dir)
    p = rtl_dir / STREAM_FILE
    if not p.is_file():
        raise InputError(f"{rtl_dir}: {STREAM_FILE} is missing; regenerate the RTL directory")
    try:
        desc = json.loads(p.read_text())
    except ValueError:
        raise InputError(f"{p}: not valid JSON; regenerate the RTL directory") from None
    pipes = {}
    for u in desc["units"]:
        f = rtl_dir / u["dp"]["file"]
        if not f.is_file():
            raise InputError(f"{rtl_dir}: {u['dp']['file']} is missing; regenerate the RTL directory")
        pipes[u["name"]] = Pipeline.load(str(f))
    return desc, pipes


def argmax_lowest(codes: np.ndarray) -> np.ndarray:
    """Class index per row; ties go to the lowest index (numpy's argmax rule, and the hardware's)."""
    return np.argmax(np.asarray(codes), axis=1).astype(np.int64)
