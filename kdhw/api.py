"""The Python API: one function per stage, for notebooks and scripts that want the pieces without the CLI.

Each function takes and returns plain objects (the validated ``Config``, a ``Dataset``, a trained model,
paths, the same dicts the CLI writes as JSON) and raises ``kdhw.errors.InputError`` for anything the user
can fix, as the CLI does.  Stage functions carry verbs (``load_data``, ``train_teacher``, ...) because the
stage names (``kdhw.train.data``, ``kdhw.hw.export`` ...) are the modules that implement them.

Nothing here changes process-wide state when imported; heavy libraries (torch, brevitas, hls4ml) load on
the first call that needs them, and onnxruntime's per-node warnings are silenced only while a kdhw call
runs (``kdhw.util.quiet``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from kdhw.util.quiet import quiet

from .config import Config, _embedded_default, _read_yaml, merge, validate
from .config import load_config as _load_config_file
from .errors import InputError
from .flows.stages import Students, Teacher

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np
    import torch.nn as nn

    from kdhw.train.data import Dataset


class _DefaultBase:
    """``base`` left out: the embedded default under a dict, nothing under a file."""

    def __repr__(self) -> str:
        return "'default'"


_DICT_BASE: Any = _DefaultBase()


def load_config(source: str | Path | dict[str, Any] | None = None, *,
                base: str | Path | dict[str, Any] | None = _DICT_BASE) -> Config:
    """A validated config: a YAML file, a dict of sections, or None for the embedded default (digits).

    A dict is laid over ``base`` section by section and key by key (a key's value replaces the base's whole;
    ``None`` drops a key to the schema default): by default the embedded default config, so
    ``load_config({"distill": {"epochs": 5}})`` trains the same student as ``kdhw run`` with fewer epochs.
    ``base`` may also be a YAML path, a dict, or None (the bare schema defaults).  A YAML file stands alone,
    as ``kdhw run CONFIG`` reads it, unless ``base`` is given explicitly for it.  Unknown keys are refused
    by name, as on the command line."""
    if not isinstance(source, dict):
        if isinstance(base, dict):
            raise InputError("load_config: base must be a YAML path or 'default' when the source is a file")
        return _load_config_file(source, base=None if base is _DICT_BASE else base)
    if base is _DICT_BASE:
        base = "default"
    if base is None:
        raw: dict[str, Any] = {}
    elif isinstance(base, dict):
        raw = base
    elif str(base) == "default":
        raw = _embedded_default()
    else:
        raw = _read_yaml(base)
    return validate(merge(raw, source, "<dict>"), "<dict>")


def load_data(cfg: Config) -> Dataset:
    """The data stage: load, lay out (``data.layout`` or what the student reads) and split the data, then
    hold every split to ``student.input`` (``auto`` is resolved into ``cfg.student['input']`` here).
    ``dataset.manifest`` is what ``data_manifest.json`` records, the input contract included."""
    from kdhw.train.data import load_data as _load

    with quiet():
        return _load(cfg)


def train_teacher(cfg: Config, data: Dataset, *, path: str | Path | None = None,
                  progress: bool = False) -> Teacher:
    """The teacher stage: load the teacher at ``path`` (or ``teacher.path``), checked against the data,
    or train one from the ``teacher`` section."""
    from .flows.stages import teacher_stage

    with quiet():
        return teacher_stage(cfg, data, path=path, progress=progress)


def distill_students(cfg: Config, data: Dataset, teacher: Teacher | None = None, *,
                     progress: bool = False, work: str | Path | None = None) -> Students:
    """The distill stage, as ``kdhw run`` runs it: the arms of the run's recipe (``kdhw.train.recipe``:
    scratch and ``distill.method``, plus the augmented control under function matching; same seed, initial
    weights and batch order), the best on validation chosen unless ``distill.select`` forces one, and every
    resource-aware arm folded into an exact brevitas student.  ``student.auto`` trains its pareto grid into
    ``work/pareto`` (``work`` is then required)."""
    from .flows.stages import check_student, distill_stage

    with quiet():
        check_student(cfg, data)
        return distill_stage(cfg, data, teacher, progress=progress, work=None if work is None else Path(work),
                             log=lambda *_: None)


def export_qonnx(student: Students | nn.Module, out: str | Path, *,
                 input_shape: Sequence[int] | None = None) -> Path:
    """The export stage: the chosen student (or any kdhw brevitas student, with its ``input_shape``) to a
    cleaned QONNX file, the contract every hardware stage reads."""
    from kdhw.hw.export import export_qonnx as _export

    if isinstance(student, Students):
        model, shape = student.model, student.input_shape
    elif input_shape is None:
        raise InputError("export_qonnx: give input_shape for a bare model (one row, without the batch dimension)")
    else:
        model, shape = student, tuple(input_shape)
    from kdhw.train.resource import FineNet

    if isinstance(model, FineNet):
        raise InputError("export_qonnx: a resource-aware network must be folded into a brevitas student first "
                         "(distill_students does it; or kdhw.train.resource.fold)")
    with quiet():
        return _export(model, tuple(shape), Path(out))


def build_hls(onnx: str | Path, out: str | Path, *, board: str = "pynq-z2", backend: str = "Vitis",
              io_type: str = "io_parallel", reuse_factor: int = 1, strategy: str = "Latency",
              clock_period_ns: float | None = None, compile_csim: bool = False,
              tb_inputs: np.ndarray | None = None) -> dict[str, Any]:
    """The hls stage: an hls4ml project for ``board`` (its part and clock) with the input type set to the
    QONNX input quantizer's; returns what ``kdhw_hls.json`` records.  ``tb_inputs`` (student-shaped rows,
    e.g. ``Students.inputs("test")``) become ``tb_data/``: hls4ml's testbench inputs and, from the QONNX
    reference, its expected predictions.  ``verify_design`` compiles its own
    C-sim from the header weights synthesis uses, so hls4ml's library is compiled only on request
    (``compile_csim=True``, for hls4ml's own ``predict``)."""
    from kdhw.hw.hls import build_hls_project

    from .boards import load_board

    b = load_board(board)
    with quiet():
        return build_hls_project(onnx, out, part=b.part, clock_period_ns=clock_period_ns or b.clock_period_ns,
                                 backend=backend, io_type=io_type, reuse_factor=reuse_factor, strategy=strategy,
                                 board=b.name, compile_csim=compile_csim, tb_inputs=tb_inputs,
                                 tb_source=None if tb_inputs is None else "kdhw.build_hls(tb_inputs=...)")


def build_rtl(onnx: str | Path, out: str | Path, *, latency_cutoff: float | None = None,
              pipeline: int | None = None) -> dict[str, Any]:
    """The rtl stage: pipelined Verilog (da4ml) with fixed ports; returns what ``rtl.json`` records."""
    from kdhw.hw.export import load_qonnx
    from kdhw.hw.rtl import qonnx_to_rtl

    with quiet():
        load_qonnx(onnx)
        return qonnx_to_rtl(Path(onnx), Path(out), latency_cutoff=latency_cutoff, pipeline=pipeline)


def verify_design(hls_project: str | Path, inputs: np.ndarray, *, student_pt: str | Path | None = None,
                  rtl_dir: str | Path | None = None, simulator: str = "icarus", sim_rows: int = 1000,
                  out_json: str | Path | None = None) -> dict[str, Any]:
    """The verify stage: every level present (the trained student when ``student_pt`` is given, the C-sim
    rebuilt from the project's headers, the weight copies, the RTL interpreter and simulator when
    ``rtl_dir`` is given) compared with the QONNX reference with exact equality on every row of ``inputs``
    (student-shaped: ``Students.inputs``).  Returns what ``verify.json`` records; ``result['bit_exact']``."""
    import numpy as np

    from kdhw.verify.levels import verify_project

    with quiet():
        return verify_project(Path(hls_project), np.asarray(inputs), student_pt=None if student_pt is None else Path(student_pt),
                              rtl_dir=None if rtl_dir is None else Path(rtl_dir), simulator=simulator,
                              sim_rows=sim_rows, out_json=None if out_json is None else Path(out_json))


def hardware_report(run_dir: str | Path, boards: Sequence[str], *, onnx: str | Path | None = None,
                    rtl_dir: str | Path | None = None, vendor_report: str | Path | None = None,
                    synth: bool = True) -> dict[str, Any]:
    """The report stage: per board the estimate, open synthesis (yosys, nextpnr) of the RTL, latency, fit
    and I/O budget, written to ``run_dir/hw_report.{json,md,html}``; returns the JSON's dict."""
    from kdhw.hw.report import hardware_report as _report

    from .boards import load_board

    d = Path(run_dir)
    rtl = Path(rtl_dir) if rtl_dir else (d / "rtl" if (d / "rtl" / "rtl.json").is_file() else None)
    with quiet():
        return _report(d, [load_board(b) for b in boards], Path(onnx) if onnx else d / "student.qonnx.onnx", rtl,
                       Path(vendor_report) if vendor_report else None, synth=synth, log=lambda *_: None)


def run(cfg: Config, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Every stage in order into ``out`` (built beside it and swapped in), as ``kdhw run`` does; returns
    ``report.json``'s dict."""
    from kdhw.flows.run import run as _run

    with quiet():
        return _run(cfg, Path(out), progress=progress, log=lambda *_: None)


__all__ = ["Config", "Students", "Teacher", "build_hls", "build_rtl", "distill_students", "export_qonnx",
           "hardware_report", "load_config", "load_data", "run", "train_teacher", "verify_design"]
