"""kdhw: float teacher -> distilled fixed-point student -> QONNX -> hls4ml / Verilog, proven bit-exact.

The Python API (``kdhw.api``), one function per stage::

    cfg = kdhw.load_config({"distill": {"epochs": 20}})      # or a YAML path, or None for the default
    data = kdhw.load_data(cfg)                               # split, laid out, held to student.input
    teacher = kdhw.train_teacher(cfg, data)
    students = kdhw.distill_students(cfg, data, teacher)     # scratch + distilled, one chosen
    onnx = kdhw.export_qonnx(students, "out/student.qonnx.onnx")
    kdhw.build_hls(onnx, "out/hls"); kdhw.build_rtl(onnx, "out/rtl")
    kdhw.verify_design("out/hls", students.inputs("test"), rtl_dir="out/rtl")["bit_exact"]
    kdhw.hardware_report("out", ["pynq-z2"]);  kdhw.run(cfg, "out2")   # the whole pipeline

Importing kdhw loads nothing heavy and changes no process-wide setting (warning filters, logging, torch
threads): names resolve on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Config", "Students", "Teacher", "build_hls", "build_rtl", "distill_students", "export_qonnx",
        "hardware_report", "load_config", "load_data", "run", "train_teacher", "verify_design")
__all__ = ["__version__", "InputError", "CheckFailed", *_API]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time names load lazily
    from .api import (Config, Students, Teacher, build_hls, build_rtl, distill_students, export_qonnx,
                      hardware_report, load_config, load_data, run, train_teacher, verify_design)
    from .errors import CheckFailed, InputError


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in ("InputError", "CheckFailed"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'kdhw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
