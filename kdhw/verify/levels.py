"""Bit-exact verification of every level present against the QONNX integer reference.

Levels: ``brevitas`` (the trained student, when ``student.pt`` is present), ``csim`` (hls4ml C-sim built
from the project's headers: what synthesis builds), ``weights`` (the ``.h`` and ``.txt`` weight copies
agree), ``rtl`` (generated Verilog, when an RTL dir is present).  Equality is exact (``==`` on the
dequantized values, every row).  On a mismatch the first diverging hls4ml layer is found by comparing the
traced C-sim layer outputs with the QONNX graph's intermediate tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdhw.errors import InputError
from kdhw.hw.export import load_qonnx, reference
from kdhw.hw.hls import HLS_MODEL_FILE, read_meta
from kdhw.util.atomic import write_json

from .csim import CSim, weight_file_mismatches

UNLABELLED = -1  # label of a verification row that has none (an off-grid random input)


def fidelity(ref: np.ndarray, labels: np.ndarray | None, teacher_logits: np.ndarray | None) -> dict[str, Any]:
    """Accuracy and teacher agreement of the integer reference on the labelled rows.

    ``labels``: one per row, ``UNLABELLED`` (-1) for rows without one (random inputs); ``teacher_logits``:
    the teacher's logits on the same rows (None when no teacher is at hand).  Every key is always present
    and means the same thing whichever verb wrote it; a figure that cannot be measured is None.
    """
    pred = np.asarray(ref).reshape(len(ref), -1).argmax(1)
    mask = np.zeros(len(pred), bool) if labels is None else np.asarray(labels) != UNLABELLED
    n = int(mask.sum())
    y = None if labels is None else np.asarray(labels)[mask]
    t = None if teacher_logits is None else np.asarray(teacher_logits)[mask].argmax(1)
    return {
        "fidelity_rows": n,
        "student_accuracy": float((pred[mask] == y).mean()) if n else None,
        "teacher_accuracy": float((t == y).mean()) if n and t is not None else None,
        "teacher_agreement": float((pred[mask] == t).mean()) if n and t is not None else None,
    }


def rtl_levels(rtl_dir: Path, x: np.ndarray, ref: np.ndarray, simulator: str = "icarus",
               sim_rows: int = 1000) -> dict[str, Any]:
    """The generated Verilog: da4ml's bit-exact interpreter on every row, and a real simulator (cocotb on
    Icarus or Verilator) on the first ``sim_rows`` rows, which also measures the output latency."""
    import tempfile

    from kdhw.hw.rtl import emulate
    from kdhw.verify.sim.runner import simulate_rtl

    emu = emulate(rtl_dir, x).reshape(len(x), -1)
    ok = np.all(emu == ref, axis=1)
    out: dict[str, Any] = {"rtl": {"rows": int(len(x)), "exact_rows": int(ok.sum()), "engine": "da4ml interpreter",
                                   "first_bad_row": int(np.flatnonzero(~ok)[0]) if not ok.all() else None}}
    n = min(sim_rows, len(x))
    if n:
        with tempfile.TemporaryDirectory(prefix="kdhw-rtlsim-") as td:
            r = simulate_rtl(rtl_dir, x[:n], expected=ref[:n], simulator=simulator, work_dir=td)
        out["rtl_sim"] = {
            "rows": int(r["rows"]), "exact_rows": int(r["exact_rows"] or 0), "simulator": simulator,
            "latency_reported": r["latency_reported"], "latency_measured": r["latency_measured"],
            "latency_ok": bool(r["latency_ok"]), "mismatches": r.get("mismatches", [])[:5],
        }
        if "ii_measured" in r:  # stream mode: II, and the AXI4-Stream protocol checks (stalls, reset, tlast)
            out["rtl_sim"].update(
                mode="stream", ii_reported=r["ii_reported"], ii_measured=r["ii_measured"],
                protocol_ok=bool(r["protocol_ok"]), cycles=r.get("cycles"),
                protocol={k: {kk: v for kk, v in t.items() if kk not in ("got", "expected", "frame_starts",
                                                                       "frame_starts_model", "mismatches")}
                          for k, t in r["tests"].items()})
    return out


def verify_rtl(rtl_dir: str | Path, x: np.ndarray, *, model: str | Path | None = None, simulator: str = "icarus",
               sim_rows: int = 1000, labels: np.ndarray | None = None,
               out_json: Path | None = None) -> dict[str, Any]:
    """Check an RTL directory on its own (``kdhw rtl`` output, no hls4ml project): the RTL levels against the
    QONNX reference of the model it was generated from (its copy in the directory, or ``model``)."""
    import hashlib

    from kdhw.hw.rtl import load_meta

    rtl_dir = Path(rtl_dir)
    meta = load_meta(rtl_dir)
    if model is None:
        name = meta.get("model_file")
        if not name or not (rtl_dir / name).is_file():
            raise InputError(f"{rtl_dir}: no copy of the QONNX model in the RTL directory (written by kdhw rtl since "
                             "stream mode); name it with --model")
        model = rtl_dir / name
    model = Path(model)
    mw = load_qonnx(model)
    sha = meta.get("source_sha256")
    if sha and hashlib.sha256(model.read_bytes()).hexdigest() != sha:
        raise InputError(f"{model}: not the model {rtl_dir} was generated from ({meta.get('source_model')}, "
                         "different content)")
    x = check_inputs(np.asarray(x), tuple(meta["input_shape"]))
    if labels is not None and np.shape(labels) != (len(x),):
        raise InputError(f"labels must have one entry per input row ({len(x)}), got shape {np.shape(labels)}")
    ref = reference(mw, x)
    levels = rtl_levels(rtl_dir, x, ref, simulator, sim_rows)
    result: dict[str, Any] = {"rows": len(x), "first_divergence": None, "levels": levels,
                              "bit_exact": _all_exact(levels), "rtl_mode": meta.get("mode", "parallel")}
    result.update(fidelity(ref, labels, None))
    if out_json is not None:
        write_json(out_json, result)
    return result


def _all_exact(levels: dict[str, Any]) -> bool:
    """Every row exact, the timing as reported, and (stream mode) every protocol check passed."""
    return (all(lv.get("exact_rows") == lv.get("rows") for lv in levels.values() if "rows" in lv)
            and all(lv.get("consistent", True) for lv in levels.values())
            and all(lv.get("latency_ok", True) and lv.get("protocol_ok", True) for lv in levels.values()))


def load_inputs(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Load ``X.npy`` and check it is (N, *shape) or (N, prod(shape)); one-line error otherwise."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: inputs file not found")
    try:
        x = np.load(p, allow_pickle=False)
    except Exception:
        raise InputError(f"{p}: not a .npy array file") from None
    return check_inputs(x, shape, str(p))


def check_inputs(x: np.ndarray, shape: tuple[int, ...], src: str = "inputs") -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2 or len(x) == 0:
        raise InputError(f"{src}: expected a numeric array of shape (N, {', '.join(map(str, shape))}), got {x.shape}")
    if tuple(x.shape[1:]) == tuple(shape):
        return x.astype(np.float32)
    if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
        return x.reshape(len(x), *shape).astype(np.float32)
    raise InputError(
        f"{src}: inputs have shape {tuple(x.shape[1:])} per row; the model expects {tuple(shape)} "
        f"(channels-first) or {int(np.prod(shape))} flat values"
    )


def _is_const(mw: Any, tensor: str) -> bool:
    """An initializer, or a Quant of one (how QONNX stores quantized weights and biases)."""
    if mw.get_initializer(tensor) is not None:
        return True
    prod = mw.find_producer(tensor)
    return prod is not None and prod.op_type == "Quant" and mw.get_initializer(prod.input[0]) is not None


def _chain(mw: Any, tensor: str) -> list[str]:
    """``tensor`` and the tensors it becomes through constant bias adds and quantizers.

    hls4ml folds a bias Add and the following Quant into one layer's precision, so a layer output may
    equal any of these QONNX tensors.
    """
    out = [tensor]
    seen = 0
    while seen < 4:
        cons = mw.find_consumers(out[-1]) or []
        if len(cons) != 1 or cons[0].op_type not in ("Add", "Quant", "Mul"):
            break
        node = cons[0]
        if node.op_type in ("Add", "Mul") and not any(_is_const(mw, i) for i in node.input):
            break
        out.append(node.output[0])
        seen += 1
    return out


def trace_layers(project_dir: Path, meta: dict[str, Any], csim: CSim, x: np.ndarray,
                 rows: np.ndarray) -> tuple[int, dict[str, Any] | None]:
    """Compare every traced hls4ml layer with the QONNX tensors it stands for, on ``rows``.

    Returns (rows whose every layer matched, the earliest diverging layer or None).  A layer whose output
    matches none of its candidate tensors diverges; later layers of that row are not blamed.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(project_dir / HLS_MODEL_FILE))
    in_name = mw.graph.input[0].name
    order = {l["name"]: i for i, l in enumerate(meta["layers"])}
    chains = {l["name"]: _chain(mw, l["tensor"]) for l in meta["layers"] if l["tensor"]}
    best: dict[str, Any] | None = None
    good = 0
    for r in rows:
        ctx = execute_onnx(mw, {in_name: x[r:r + 1].astype(np.float32)}, return_full_exec_context=True)
        tr = csim.trace(x[r])
        found = None
        for layer in meta["layers"]:
            got = tr.get(layer["name"])
            if got is None or layer["name"] not in chains:
                continue
            cands = [np.asarray(ctx[t]).ravel().astype(np.float64) for t in chains[layer["name"]] if t in ctx]
            cands = [c for c in cands if c.size == got.size]
            if not cands or any(np.array_equal(c, got) for c in cands):
                continue
            diff = np.abs(cands[-1] - got)
            found = {"layer": layer["name"], "class": layer["class"], "row": int(r),
                     "values_differing": int((diff > 0).sum()), "max_abs_diff": float(diff.max())}
            break
        if found is None:
            good += 1
        elif best is None or order[found["layer"]] < order[best["layer"]]:
            best = found
    return good, best


def verify_project(
    project_dir: str | Path,
    x: np.ndarray,
    *,
    student_pt: Path | None = None,
    rtl_dir: Path | None = None,
    simulator: str = "icarus",
    sim_rows: int = 1000,
    teacher_logits: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    out_json: Path | None = None,
    trace_rows: int = 32,
) -> dict[str, Any]:
    """Check every level present; returns (and writes) the verify.json dict.

    ``labels``: one per row, ``UNLABELLED`` for rows without one; ``teacher_logits``: the teacher's logits on
    the rows.  They only feed the fidelity figures (``fidelity``), never the bit-exactness verdict.
    """
    project_dir = Path(project_dir)
    meta = read_meta(project_dir)
    mw = load_qonnx(project_dir / "student.qonnx.onnx")
    x = check_inputs(np.asarray(x), tuple(meta["input_shape"]))
    if labels is not None and np.shape(labels) != (len(x),):
        raise InputError(f"labels must have one entry per input row ({len(x)}), got shape {np.shape(labels)}")
    ref = reference(mw, x)
    levels: dict[str, Any] = {}
    result: dict[str, Any] = {"rows": len(x), "first_divergence": None}

    def level(name: str, got: np.ndarray) -> np.ndarray:
        """Exact equality of every output value, every row."""
        ok = np.all(got.reshape(len(x), -1) == ref, axis=1)
        levels[name] = {"rows": int(len(x)), "exact_rows": int(ok.sum()),
                        "first_bad_row": int(np.flatnonzero(~ok)[0]) if not ok.all() else None}
        return ok

    if student_pt is not None and Path(student_pt).is_file():
        import torch

        from kdhw.train.student import load_student

        model = load_student(student_pt)
        with torch.no_grad():
            level("brevitas", model(torch.from_numpy(x)).numpy().astype(np.float64))
    bad_w = weight_file_mismatches(project_dir)
    levels["weights"] = {"h_vs_txt_mismatches": bad_w, "consistent": not bad_w}
    with CSim(project_dir, meta) as cs:
        y = cs.predict(x)
        ok = level("csim", y)
        # every layer, not only the outputs: a wrong weight can hide behind output rounding on these
        # rows and still be wrong in hardware; mismatching rows are traced first to name the layer
        rows = np.unique(np.concatenate([np.flatnonzero(~ok)[:4], np.arange(min(trace_rows, len(x)))]))
        good, result["first_divergence"] = trace_layers(project_dir, meta, cs, x, rows)
        levels["csim_layers"] = {"rows": int(len(rows)), "exact_rows": int(good),
                                 "layers": [l["name"] for l in meta["layers"]]}
    if rtl_dir is not None and (Path(rtl_dir) / "rtl.json").is_file():
        levels.update(rtl_levels(Path(rtl_dir), x, ref, simulator, sim_rows))
    result["levels"] = levels
    result["bit_exact"] = _all_exact(levels)
    result.update(fidelity(ref, labels, teacher_logits))
    if out_json is not None:
        write_json(out_json, result)
    return result
