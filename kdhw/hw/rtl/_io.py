"""Float <-> port-word helpers and a bit-exact emulator of a generated RTL directory.

Everything here reads only ``rtl.json`` and ``model/pipeline.json`` from the RTL directory, so a
directory copied to another machine can still be driven and checked without the QONNX file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.errors import InputError, ToolMissing

from ._build import io_formats, load_meta
from ._formats import codes_from_values, pack_words, quantize_codes, unpack_words


def _rows(meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Accept (N, *input_shape) or (N, n_inputs); one clear line for anything else."""
    x = np.asarray(x)
    shape = tuple(meta.get("input_shape", [meta["n_inputs"]]))
    n = int(meta["n_inputs"])
    if x.ndim >= 2 and (tuple(x.shape[1:]) == shape or (x.ndim == 2 and x.shape[1] == n)):
        if not np.issubdtype(x.dtype, np.number):
            raise InputError(f"inputs must be numeric, got dtype {x.dtype}")
        return x.reshape(len(x), n)
    raise InputError(f"inputs have shape {x.shape}; the RTL expects (N, {', '.join(map(str, shape))}) or (N, {n})")


def input_codes(rtl: str | Path | dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Float inputs -> (N, n_inputs) integer codes, rounded and saturated like the QONNX input Quant."""
    meta = load_meta(rtl)
    fin, _ = io_formats(meta)
    try:
        return quantize_codes(_rows(meta, x), fin, meta["input_format"].get("rounding", "ROUND"))
    except ValueError as e:
        raise InputError(str(e)) from None


def pack_inputs(rtl: str | Path | dict[str, Any], x: np.ndarray) -> list[int]:
    """Float inputs -> one ``model_inp`` value per row (Python ints; element j at bits [j*W, j*W+W-1])."""
    meta = load_meta(rtl)
    return pack_words(input_codes(meta, x), io_formats(meta)[0])


def output_codes(rtl: str | Path | dict[str, Any], y: np.ndarray) -> np.ndarray:
    """Dequantized outputs (e.g. the QONNX reference) -> integer codes; off-grid values are refused."""
    meta = load_meta(rtl)
    _, fout = io_formats(meta)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if y.shape[1] != int(meta["n_outputs"]):
        raise InputError(f"expected outputs have {y.shape[1]} values per row; the RTL has {meta['n_outputs']}")
    try:
        return codes_from_values(y, fout, "expected")
    except ValueError as e:
        raise InputError(str(e)) from None


def pack_outputs(rtl: str | Path | dict[str, Any], y: np.ndarray) -> list[int]:
    """Dequantized outputs -> the ``model_out`` values the hardware must produce, one per row."""
    meta = load_meta(rtl)
    return pack_words(output_codes(meta, y), io_formats(meta)[1])


def unpack_outputs(rtl: str | Path | dict[str, Any], words: list[int] | np.ndarray) -> np.ndarray:
    """``model_out`` values -> (N, n_outputs) dequantized floats, comparable with ``kdhw.hw.export.reference``."""
    meta = load_meta(rtl)
    _, fout = io_formats(meta)
    codes = unpack_words(list(words), int(meta["n_outputs"]), fout)
    return codes.astype(np.float64) * fout.scale


def emulate(rtl_dir: str | Path, x: np.ndarray, backend: str = "interp") -> np.ndarray:
    """Run the generated design on float inputs; returns dequantized outputs shaped like ``reference``.

    ``interp`` runs da4ml's C++ interpreter on the saved pipeline stage by stage (the same operation list
    the Verilog was printed from; ~1 us per row).  ``verilator`` compiles the Verilog core with da4ml's
    Verilator binder in a scratch copy (15-30 s to build) - slower, but it executes the HDL text itself.
    A stream-mode design is emulated unit by unit from ``model/stream.json`` and its units' pipelines
    (``_stream_emu``); the result is the logits its last datapath computes, in every output form.
    """
    from da4ml.types import Pipeline

    rtl_dir = Path(rtl_dir)
    meta = load_meta(rtl_dir)
    fin, fout = io_formats(meta)
    if meta.get("mode") == "stream":
        # the logits the core computes (in class-only mode they are not on a port, but they are what its
        # argmax reads); every unit's datapath runs in da4ml's interpreter
        if backend != "interp":
            raise InputError(f"backend = {backend!r}: a stream design is emulated with the interpreter only "
                             "(simulate its Verilog with kdhw.verify.sim.runner.simulate_rtl)")
        from ._stream_io import emulate_stream_codes

        return emulate_stream_codes(rtl_dir, input_codes(meta, x)).astype(np.float64) * fout.scale
    vals = input_codes(meta, x).astype(np.float64) * fin.scale
    pipe_file = rtl_dir / "model" / "pipeline.json"
    if not pipe_file.is_file():
        raise InputError(f"{rtl_dir}: model/pipeline.json is missing; regenerate the RTL directory")
    pipe = Pipeline.load(str(pipe_file))
    if backend == "interp":
        y = vals
        for stage in pipe.solutions:
            y = np.asarray(stage.predict(np.ascontiguousarray(y)), dtype=np.float64).reshape(len(vals), -1)
    elif backend == "verilator":
        y = _verilator_predict(rtl_dir, meta, pipe, vals)
    else:
        raise InputError(f"backend = {backend!r}; allowed: interp, verilator")
    # Through the codes: a value off the output grid would be an emulator bug, and it must not pass silently.
    return codes_from_values(y, fout, "emulated output").astype(np.float64) * fout.scale


def _verilator_predict(rtl_dir: Path, meta: dict[str, Any], pipe: Any, vals: np.ndarray) -> np.ndarray:
    import os

    from da4ml.codegen import VerilogModel

    if shutil.which("make") is None or shutil.which("g++") is None:
        raise ToolMissing("the Verilator emulator needs make and g++: apt-get install make g++")
    from kdhw.util.runtime import verilator_env

    env = verilator_env()
    with tempfile.TemporaryDirectory(prefix="kdhw-vemu-") as td:
        work = Path(td) / "rtl"
        shutil.copytree(rtl_dir, work)
        model = VerilogModel(pipe, meta["core"], work, latency_cutoff=float(meta.get("latency_cutoff", -1)))
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            model._compile(openmp=False, nproc=2)  # no write(): compile the Verilog that is in the directory
            return np.asarray(model.predict(np.ascontiguousarray(vals)), dtype=np.float64).reshape(len(vals), -1)
        except RuntimeError as e:
            raise InputError(f"Verilator build of {rtl_dir} failed: {e}") from None
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

