"""QONNX -> hls4ml project (Vitis, Vivado or VivadoAccelerator backend) with a compiled C-sim.

hls4ml does the conversion; kdhw adds what makes it bit-exact and checkable: the input precision is the
input quantizer's own type, precisions stay on ``auto`` with per-layer granularity, every layer is traced
(C-sim only: the trace code sits under ``#ifndef __SYNTHESIS__``), and a ``kdhw_hls.json`` records what
``kdhw verify`` needs (input layout, tensor names per layer) so the project can be verified later by itself.

``VivadoAccelerator`` (pynq-z2, zcu102) adds hls4ml's AXI4-Stream wrapper (``firmware/myproject_axi.cpp``),
its Zynq block design (``design.tcl``: PS + AXI DMA + the HLS IP, bitstream) and its PYNQ driver
(``axi_stream_driver.py``).  The wrapper's ports are float (32-bit; double when an output needs more than a
float's 24-bit mantissa), so the float -> input type conversion happens in hardware exactly as in the C-sim,
and the bridge compiles the wrapper in: ``kdhw verify`` checks the core *through* the wrapper synthesis builds.

Test vectors (``tb_data/``): ``tb_inputs`` rows are written as hls4ml's testbench reads them (one row per
line, space-separated floats, exact decimal forms) with the QONNX reference's dequantized outputs as the
expected predictions; ``run_testbench`` compiles hls4ml's own ``myproject_test.cpp`` with g++ and compares
what it wrote (``tb_data/csim_results.log``) with them, every value exactly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.errors import InputError, ToolMissing
from kdhw.util.atomic import atomic_dir, write_json, write_text

from .export import hls_input_type, input_shape, load_qonnx

PROJECT_NAME = "myproject"
META_FILE = "kdhw_hls.json"
HLS_MODEL_FILE = "kdhw_hls_input.onnx"
BACKENDS = ("Vitis", "Vivado", "VivadoAccelerator")
# boards hls4ml 1.3.0's VivadoAccelerator writes a Zynq block design and a PYNQ driver for (its
# supported_boards.json also lists Alveo cards, which take another flow: an .xclbin through v++)
ACCELERATOR_BOARDS = ("pynq-z2", "zcu102")
TB_INPUTS = "tb_data/tb_input_features.dat"
TB_EXPECTED = "tb_data/tb_output_predictions.dat"
TB_RESULTS = "tb_data/csim_results.log"
# ap_fixed's operator<< rounds to the stream's precision (6 significant digits by default): the testbench's
# results file gets enough digits for the exact value of any output up to 60 bits wide
_TB_PRECISION = 64


def _patch_hls4ml() -> None:
    """Register a 1D MaxPool/AveragePool handler that reads channels-last shapes and sets the pads.

    hls4ml 1.3.0's ONNX pooling handler reads n_in/n_filt in channels-first order and never sets
    pad_left/pad_right for 1D pooling, so every Conv1D student with pooling fails to convert.
    """
    import importlib

    onnx_to_hls = importlib.import_module("hls4ml.converters.onnx_to_hls")

    if getattr(onnx_to_hls, "_kdhw_patched", False):
        return
    orig = onnx_to_hls.layer_handlers["MaxPool"]

    def parse_pool(node: Any, input_names: Any, input_shapes: Any, graph: Any) -> dict[str, Any]:
        layer = orig(node, input_names, input_shapes, graph)
        if layer["class_name"].endswith("Pooling1D"):
            shp = input_shapes[0]  # channels-last: (N, L, C)
            layer["n_in"], layer["n_filt"] = int(shp[1]), int(shp[2])
            pads = list(layer.get("pads") or [0, 0])
            layer["pad_left"], layer["pad_right"] = int(pads[0]), int(pads[-1])
            k, s = layer["pool_width"], layer["stride_width"]
            layer["n_out"] = (layer["n_in"] + sum(pads[:2]) - k) // s + 1
        return layer

    for op in ("MaxPool", "AveragePool"):
        onnx_to_hls.layer_handlers[op] = parse_pool
    onnx_to_hls._kdhw_patched = True  # type: ignore[attr-defined]


def prepare_for_hls(mw: Any) -> Any:
    """The QONNX steps hls4ml needs: channels-last (CNNs), Gemm -> MatMul, clean-up."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    m = ModelWrapper(mw.model)
    if len(input_shape(m)) > 1:
        m = m.transform(ConvertToChannelsLastAndClean())
    m = m.transform(GemmToMatMul())
    return cleanup_model(m)


@contextlib.contextmanager
def _quiet() -> Any:
    """hls4ml prints every layer; keep the CLI's output to progress lines a person reads."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield buf
        finally:
            logging.disable(logging.NOTSET)


def build_hls_project(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    part: str,
    clock_period_ns: float,
    backend: str = "Vitis",
    io_type: str = "io_parallel",
    reuse_factor: int = 1,
    strategy: str = "Latency",
    board: str | None = None,
    compile_csim: bool = True,
    tb_inputs: np.ndarray | None = None,
    tb_source: str | None = None,
) -> dict[str, Any]:
    """Convert ``onnx_path`` into an hls4ml project at ``out_dir`` (atomic) and compile its C-sim.

    ``tb_inputs``: rows (N, *input_shape) written to ``tb_data/`` with the QONNX reference's outputs as the
    testbench's expected predictions (``tb_source`` says where they came from, for ``kdhw_hls.json``);
    None writes no vectors (hls4ml's testbench then runs on zeros and checks nothing).
    """
    import hls4ml

    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not supported; choose {', '.join(BACKENDS)}")
    if backend == "VivadoAccelerator" and board not in ACCELERATOR_BOARDS:
        raise InputError(f"board {board!r}: hls4ml's VivadoAccelerator backend supports "
                         f"{', '.join(ACCELERATOR_BOARDS)}; use --backend Vitis or Vivado for other boards")
    if io_type not in ("io_parallel", "io_stream"):
        raise InputError(f"io_type {io_type!r} is not supported; choose io_parallel or io_stream")
    if compile_csim and shutil.which("g++") is None:
        raise ToolMissing("g++ not found; the hls4ml C-sim needs it (apt-get install g++)")
    _patch_hls4ml()
    onnx_path = Path(onnx_path)
    mw = load_qonnx(onnx_path)
    in_type = hls_input_type(mw)
    shp = input_shape(mw)
    hm = prepare_for_hls(mw)
    tb = None
    if tb_inputs is not None:
        from .export import reference

        tb_x = _tb_rows(np.asarray(tb_inputs), shp)
        tb = (tb_x, reference(mw, tb_x))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, _quiet():
        cfg = hls4ml.utils.config.config_from_onnx_model(
            hm, granularity="name", backend=backend, default_reuse_factor=reuse_factor
        )
        names = list(cfg["LayerName"])
        cfg["LayerName"][names[0]]["Precision"]["result"] = in_type
        cfg["Model"]["Strategy"] = strategy
        for n in names:
            cfg["LayerName"][n]["Trace"] = True
        extra: dict[str, Any] = {}
        if backend == "VivadoAccelerator":
            extra = {"board": board, "interface": "axi_stream", "driver": "python"}
        try:
            hmodel = hls4ml.converters.convert_from_onnx_model(
                hm, output_dir=str(tmp), project_name=PROJECT_NAME, io_type=io_type, backend=backend,
                hls_config=cfg, part=part, clock_period=clock_period_ns, **extra,
            )
        except Exception as e:  # hls4ml raises bare Exceptions for unsupported graphs
            raise InputError(f"{onnx_path}: hls4ml could not convert the model: {str(e).splitlines()[0]}") from None
        hmodel.config.trace_output = True
        accel = None
        if backend == "VivadoAccelerator":
            accel = _accelerator_precision(hmodel)
        hmodel.write()
        _patch_testbench(tmp)
        if accel is not None:
            _patch_accelerator(tmp)
        if compile_csim:
            hmodel._compile()
        layers = []
        for layer in hmodel.get_layers():
            if layer.get_attr("function_cpp", None) is None:
                continue
            layers.append({
                "name": layer.name,
                "class": layer.class_name,
                "tensor": layer.outputs[0] if layer.outputs else None,
                "shape": [int(s) for s in layer.get_output_variable().shape],
                "precision": str(layer.get_output_variable().type.precision.definition_cpp()),
            })
        hm.save(str(tmp / HLS_MODEL_FILE))
        shutil.copy(onnx_path, tmp / "student.qonnx.onnx")
        tb_meta = None
        if tb is not None:
            write_tb_data(tmp, *tb)
            tb_meta = {"rows": int(len(tb[0])), "inputs": TB_INPUTS, "expected": TB_EXPECTED,
                       "expected_from": "QONNX reference (dequantized)", "source": tb_source}
        meta = {
            "project_name": PROJECT_NAME,
            "backend": backend,
            "io_type": io_type,
            "part": part,
            "board": board,
            "clock_period_ns": clock_period_ns,
            "reuse_factor": reuse_factor,
            "strategy": strategy,
            "input_shape": list(shp),
            "input_type": in_type,
            "n_inputs": int(np.prod(shp)),
            "n_outputs": int(np.prod(hmodel.get_output_variables()[0].shape)),
            "channels_last": len(shp) > 1,
            "layers": layers,
            "source_onnx": str(onnx_path),
            "tb_data": tb_meta,
        }
        if accel is not None:
            meta["accelerator"] = accel
        write_json(tmp / META_FILE, meta)
    return meta


def _tb_rows(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Testbench rows as float32 (N, *shape); (N, prod(shape)) is accepted too.  One line for anything else."""
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2 or len(x) == 0:
        raise InputError(f"testbench inputs: expected a numeric array of shape (N, {', '.join(map(str, shape))}), "
                         f"got {x.shape}")
    n = int(np.prod(shape))
    if tuple(x.shape[1:]) != tuple(shape) and not (x.ndim == 2 and x.shape[1] == n):
        raise InputError(f"testbench inputs have shape {tuple(x.shape[1:])} per row; the model expects {tuple(shape)} "
                         f"(channels-first) or {n} flat values")
    x = x.reshape(len(x), *shape).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError("testbench inputs contain NaN or infinity")
    return x


def _dat_line(row: np.ndarray) -> str:
    """One row as hls4ml's ``.dat`` files hold it (values separated and followed by a space).  ``repr`` of the
    float64 value is exact: the testbench's ``atof`` reads back the same double, and the float32 it stores is
    the float32 row itself (an input) or the exact fixed-point value (an expected output)."""
    return "".join(repr(float(v)) + " " for v in np.asarray(row, dtype=np.float64).ravel()) + "\n"


def write_tb_data(project_dir: str | Path, x: np.ndarray, expected: np.ndarray) -> None:
    """``tb_data/tb_input_features.dat`` (the rows, flattened channels-first like the graph input) and
    ``tb_data/tb_output_predictions.dat`` (``expected``: the QONNX reference's dequantized outputs)."""
    d = Path(project_dir) / "tb_data"
    d.mkdir(exist_ok=True)
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    y = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    if len(x) != len(y):
        raise InputError(f"{len(x)} testbench input rows but {len(y)} expected rows")
    write_text(Path(project_dir) / TB_INPUTS, "".join(_dat_line(r) for r in x))
    write_text(Path(project_dir) / TB_EXPECTED, "".join(_dat_line(r) for r in y))


def _patch_testbench(project: Path) -> None:
    """Give the testbench's results file enough digits for exact values (see ``_TB_PRECISION``)."""
    tb = project / f"{PROJECT_NAME}_test.cpp"
    text = tb.read_text()
    anchor = "std::ofstream fout(RESULTS_LOG);\n"
    if anchor not in text:
        raise InputError(f"{tb}: hls4ml's testbench has no `{anchor.strip()}` line; hls4ml version changed?")
    tb.write_text(text.replace(anchor, anchor + f"    fout.precision({_TB_PRECISION}); // kdhw: exact values in the "
                                                 "results file (ap_fixed prints 6 significant digits by default)\n", 1))


def _accelerator_precision(hmodel: Any) -> dict[str, Any]:
    """The AXI wrapper's port types: float in (the float -> input-type conversion is the input quantizer's,
    in hardware as in the C-sim); float out when every output value fits a float exactly, else double."""
    out_prec = hmodel.get_output_variables()[0].type.precision
    width = int(getattr(out_prec, "width", 64))
    out_t = "float" if width <= 24 else "double"
    acc = hmodel.config.config.setdefault("AcceleratorConfig", {})
    acc.setdefault("Precision", {})
    acc["Precision"].update({"Input": "float", "Output": out_t})
    acc.update({"Interface": "axi_stream", "Driver": "python"})
    return {"board": acc.get("Board"), "interface": "axi_stream", "driver": "python", "input_type": "float",
            "output_type": out_t, "block_design": "design.tcl", "pynq_driver": "axi_stream_driver.py",
            "wrapper": f"firmware/{PROJECT_NAME}_axi.cpp"}


def _patch_accelerator(project: Path) -> None:
    """Compile the AXI wrapper into the C-sim bridge (and so out of build_lib.sh's separate object), so the
    C-sim kdhw verify builds from ``firmware/myproject.cpp`` + the bridge runs the wrapper synthesis builds."""
    name = PROJECT_NAME
    bridge = project / f"{name}_bridge.cpp"
    text = bridge.read_text()
    inc = f'#include "firmware/{name}_axi.h"\n'
    if inc not in text:
        raise InputError(f"{bridge}: hls4ml's accelerator bridge does not include {name}_axi.h; "
                         "hls4ml version changed?")
    bridge.write_text(text.replace(inc, inc + f"// kdhw: the AXI wrapper is compiled into the bridge: the C-sim runs "
                                              f"the float <-> fixed conversions synthesis builds\n"
                                              f'#include "firmware/{name}_axi.cpp"\n', 1))
    lib = project / "build_lib.sh"
    lines = lib.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if "${PROJECT}_axi.cpp" not in ln]
    if len(kept) != len(lines) - 1:
        raise InputError(f"{lib}: expected one line compiling {name}_axi.cpp; hls4ml version changed?")
    lib.write_text("".join(ln.replace(" ${PROJECT}_axi.o", "") for ln in kept))


def read_meta(project_dir: str | Path) -> dict[str, Any]:
    """Load ``kdhw_hls.json`` of a project; InputError if the directory is not a kdhw HLS project."""
    import json

    p = Path(project_dir) / META_FILE
    if not p.is_file():
        raise InputError(f"{project_dir}: not a kdhw HLS project (no {META_FILE}); create one with `kdhw hls`")
    return json.loads(p.read_text())


def env_quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _read_dat(path: Path) -> list[list[float]]:
    return [[float(v) for v in ln.split()] for ln in path.read_text().splitlines() if ln.strip()]


def read_tb_results(path: str | Path, n_outputs: int) -> np.ndarray:
    """The values hls4ml's testbench wrote to its results file, one row per input row.

    Plain projects print a row of values per line; VivadoAccelerator projects print each AXI beat as
    ``{ data: V, last: L }``, so the values are taken from the ``data:`` fields, ``n_outputs`` to a row.
    """
    text = Path(path).read_text()
    if "data:" in text:
        vals = [float(v) for v in re.findall(r"data:\s*([^,\s}]+)", text)]
        if len(vals) % n_outputs:
            raise InputError(f"{path}: {len(vals)} values is not a whole number of rows of {n_outputs}")
        return np.array(vals, dtype=np.float64).reshape(-1, n_outputs)
    rows = _read_dat(Path(path))
    bad = next((i for i, r in enumerate(rows) if len(r) != n_outputs), None)
    if bad is not None:
        raise InputError(f"{path}: row {bad} has {len(rows[bad])} values, expected {n_outputs}")
    return np.array(rows, dtype=np.float64).reshape(-1, n_outputs)


def compare_tb_results(project_dir: str | Path, results: str | Path | None = None) -> dict[str, Any]:
    """Every value of the testbench's results file against ``tb_data/tb_output_predictions.dat``, exactly.

    hls4ml's testbench reads the expected predictions but never compares them (it only prints them), so a
    wrong expectation would pass it; this is the comparison.  A missing or short results file is a mismatch.
    """
    project_dir = Path(project_dir)
    meta = read_meta(project_dir)
    n_out = int(meta["n_outputs"])
    exp_p = project_dir / TB_EXPECTED
    if not exp_p.is_file():
        raise InputError(f"{project_dir}: no {TB_EXPECTED}; write test vectors with `kdhw hls --inputs X.npy` "
                         "(a run writes its verification rows)")
    exp = np.array(_read_dat(exp_p), dtype=np.float64).reshape(-1, n_out)
    got = read_tb_results(results if results is not None else project_dir / TB_RESULTS, n_out)
    n = len(exp)
    ok = np.zeros(n, dtype=bool)
    m = min(n, len(got))
    ok[:m] = np.all(got[:m] == exp[:m], axis=1)
    bad = np.flatnonzero(~ok)
    return {"rows": int(n), "result_rows": int(len(got)), "exact_rows": int(ok.sum()),
            "first_bad_row": int(bad[0]) if len(bad) else None, "ok": bool(ok.all() and len(got) == n)}


def run_testbench(project_dir: str | Path, timeout_s: float = 600.0,
                  results_to: str | Path | None = None) -> dict[str, Any]:
    """Compile hls4ml's own testbench (``myproject_test.cpp`` + the firmware, as Vivado HLS ``csim_design``
    does: weights loaded from ``firmware/weights/*.txt``) with g++ in a private copy of the project, run it on
    ``tb_data/`` and compare its results with the expected predictions (``compare_tb_results``).
    ``results_to``: where to keep the results file it wrote (the copy is deleted)."""
    import subprocess
    import tempfile
    import time
    from concurrent.futures import ThreadPoolExecutor

    if shutil.which("g++") is None:
        raise ToolMissing("g++ not found; the hls4ml testbench needs it (apt-get install g++)")
    src = Path(project_dir)
    meta = read_meta(src)
    name = meta["project_name"]
    for part in (TB_INPUTS, TB_EXPECTED):
        if not (src / part).is_file():
            raise InputError(f"{src}: no {part}; write test vectors with `kdhw hls --inputs X.npy`")
    with tempfile.TemporaryDirectory(prefix="kdhw-tb-") as t:
        work = Path(t)
        shutil.copytree(src / "firmware", work / "firmware", ignore=shutil.ignore_patterns("*.so"))
        shutil.copytree(src / "tb_data", work / "tb_data")
        (work / TB_RESULTS).unlink(missing_ok=True)
        shutil.copy(src / f"{name}_test.cpp", work)
        units = [work / f"{name}_test.cpp", work / "firmware" / f"{name}.cpp"]
        if (work / "firmware" / f"{name}_axi.cpp").is_file():
            units.append(work / "firmware" / f"{name}_axi.cpp")
        flags = ["-std=c++14", "-O1", f"-I{work / 'firmware' / 'ap_types'}", f"-I{work}",
                 '-DWEIGHTS_DIR="firmware/weights"']
        t0 = time.perf_counter()

        def cc(u: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["g++", *flags, "-c", str(u), "-o", str(u.with_suffix(".o"))],
                                  capture_output=True, text=True, cwd=work, timeout=timeout_s)

        with ThreadPoolExecutor(2) as ex:
            for r in ex.map(cc, units):
                if r.returncode:
                    first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr[:200])
                    raise InputError(f"{src}: hls4ml testbench does not compile: {first}")
        r = subprocess.run(["g++", *[str(u.with_suffix(".o")) for u in units], "-o", str(work / "tb")],
                           capture_output=True, text=True, timeout=timeout_s)
        if r.returncode:
            raise InputError(f"{src}: hls4ml testbench does not link: {r.stderr.strip()[:200]}")
        t1 = time.perf_counter()
        r = subprocess.run([str(work / "tb")], capture_output=True, text=True, cwd=work, timeout=timeout_s)
        if r.returncode:
            raise InputError(f"{src}: hls4ml testbench exited {r.returncode}: {r.stderr.strip()[:200]}")
        res = compare_tb_results(src, work / TB_RESULTS)
        res.update(compile_s=t1 - t0, run_s=time.perf_counter() - t1)
        if results_to is not None:
            shutil.copyfile(work / TB_RESULTS, results_to)
        return res
