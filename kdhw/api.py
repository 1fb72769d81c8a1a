"""The Python API: one function per stage, for notebooks and scripts that want the pieces without the CLI.

Each function takes and returns plain objects (the validated ``Config``, a ``Dataset``, a trained model,
paths, the same dicts the CLI writes as JSON) and raises ``kdhw.errors.InputError`` for anything the user
can fix, as the CLI does.  Stage functions carry verbs (``load_data``, ``train_teacher``, ...) because the
stage names (``kdhw.data``, ``kdhw.export`` ...) are the modules that implement them.

Nothing here changes process-wide state when imported; heavy libraries (torch, brevitas, hls4ml) load on
the first call that needs them, and onnxruntime's per-node warnings are silenced only while a kdhw call
runs (``kdhw.quiet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .config import Config, validate
from .config import load_config as _load_config_file
from .quiet import quiet

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np
    import torch.nn as nn

    from .data import Dataset
    from .distill import Arm


def load_config(source: str | Path | dict[str, Any] | None = None) -> Config:
    """A validated config: a YAML file, a dict of sections (merged over the defaults), or None for the
    embedded default (digits).  Unknown keys are refused by name, as on the command line."""
    if isinstance(source, dict):
        return validate(source, "<dict>")
    return _load_config_file(source)


def load_data(cfg: Config) -> Dataset:
    """The data stage: load, lay out (``data.layout`` or what the student reads) and split the data, then
    hold every split to ``student.input`` (``auto`` is resolved into ``cfg.student['input']`` here).
    ``dataset.manifest`` is what ``data_manifest.json`` records, the input contract included."""
    from .data import load_data as _load

    with quiet():
        return _load(cfg)


@dataclass
class Teacher:
    """A float teacher: the network, the config it was built from, its logits on every split (the cache
    distillation reads) and its accuracy per split."""

    model: nn.Module
    config: dict[str, Any]
    logits: dict[str, np.ndarray]
    accuracy: dict[str, float]

    def save(self, path: str | Path, data: Dataset) -> Path:
        """``teacher.pt`` (weights + config; loadable with ``torch.load(weights_only=True)``)."""
        from .teacher import save_teacher

        save_teacher(self.model, self.config, data.shape, data.n_classes, Path(path))
        return Path(path)


def train_teacher(cfg: Config, data: Dataset, *, path: str | Path | None = None,
                  progress: bool = False) -> Teacher:
    """The teacher stage: load the teacher at ``path`` (or ``teacher.path``), checked against the data,
    or train one from the ``teacher`` section."""
    from .teacher import obtain_teacher, teacher_accuracy, teacher_logits

    with quiet():
        model, tcfg, _ = obtain_teacher(cfg.teacher, data, path or cfg.teacher["path"], progress, cfg.source)
        logits = teacher_logits(model, tcfg["arch"], data)
    return Teacher(model, tcfg, logits, teacher_accuracy(logits, data))


@dataclass
class Students:
    """The distill stage's result: every trained arm (``scratch``; ``scratch_aug`` under function matching;
    ``kd`` unless the method is none), the arm chosen for export and why, and the student config they were
    built from."""

    arms: dict[str, Arm]
    chosen: str
    reason: str
    spec: dict[str, Any]
    data: Dataset = field(repr=False)

    @property
    def model(self) -> nn.Module:
        """The chosen student (a brevitas network in eval mode)."""
        return self.arms[self.chosen].model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row as the student reads it (flat for a dense first layer)."""
        return tuple(self.inputs("test")[:1].shape[1:])

    def inputs(self, split: str = "test") -> np.ndarray:
        """The rows of ``split`` (train, val, test) shaped as the student, the QONNX model and the hardware
        read them: what ``verify_design`` takes."""
        from .distill import student_input

        return student_input(getattr(self.data, f"x_{split}"), self.spec)

    def save(self, path: str | Path) -> Path:
        """``student.pt`` of the chosen arm (weights + the spec that rebuilds it)."""
        from .student import save_student

        save_student(self.model, self.spec, self.input_shape, Path(path))
        return Path(path)


def distill_students(cfg: Config, data: Dataset, teacher: Teacher | None = None, *,
                     progress: bool = False) -> Students:
    """The distill stage: the arms of the run's recipe (``kdhw.recipe``: scratch and ``distill.method``,
    plus the augmented control under function matching; same seed, initial weights and batch order), the
    best on validation chosen unless ``distill.select`` forces one."""
    from .distill import choose, distill

    with quiet():
        arms = distill(cfg.student, cfg.distill, data, None if teacher is None else teacher.logits["train"],
                       progress, cfg.source, teacher=None if teacher is None else teacher.model,
                       teacher_cfg=None if teacher is None else teacher.config,
                       teacher_unlab=None if teacher is None else teacher.logits.get("unlab"))
    chosen, reason = choose(arms, cfg.distill["select"], data)
    return Students(arms, chosen, reason, cfg.student, data)


def export_qonnx(student: Students | nn.Module, out: str | Path, *,
                 input_shape: Sequence[int] | None = None) -> Path:
    """The export stage: the chosen student (or any kdhw brevitas student, with its ``input_shape``) to a
    cleaned QONNX file, the contract every hardware stage reads."""
    from .export import export_qonnx as _export

    if isinstance(student, Students):
        model, shape = student.model, student.input_shape
    elif input_shape is None:
        from .errors import InputError

        raise InputError("export_qonnx: give input_shape for a bare model (one row, without the batch dimension)")
    else:
        model, shape = student, tuple(input_shape)
    with quiet():
        return _export(model, tuple(shape), Path(out))


def build_hls(onnx: str | Path, out: str | Path, *, board: str = "pynq-z2", backend: str = "Vitis",
              io_type: str = "io_parallel", reuse_factor: int = 1, strategy: str = "Latency",
              clock_period_ns: float | None = None, compile_csim: bool = False) -> dict[str, Any]:
    """The hls stage: an hls4ml project for ``board`` (its part and clock) with the input type set to the
    QONNX input quantizer's; returns what ``kdhw_hls.json`` records.  ``verify_design`` compiles its own
    C-sim from the header weights synthesis uses, so hls4ml's library is compiled only on request
    (``compile_csim=True``, for hls4ml's own ``predict``)."""
    from .boards import load_board
    from .hls import build_hls_project

    b = load_board(board)
    with quiet():
        return build_hls_project(onnx, out, part=b.part, clock_period_ns=clock_period_ns or b.clock_period_ns,
                                 backend=backend, io_type=io_type, reuse_factor=reuse_factor, strategy=strategy,
                                 board=b.name, compile_csim=compile_csim)


def build_rtl(onnx: str | Path, out: str | Path, *, latency_cutoff: float | None = None,
              pipeline: int | None = None) -> dict[str, Any]:
    """The rtl stage: pipelined Verilog (da4ml) with fixed ports; returns what ``rtl.json`` records."""
    from .export import load_qonnx
    from .rtl import qonnx_to_rtl

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

    from .verify import verify_project

    with quiet():
        return verify_project(Path(hls_project), np.asarray(inputs), student_pt=None if student_pt is None else Path(student_pt),
                              rtl_dir=None if rtl_dir is None else Path(rtl_dir), simulator=simulator,
                              sim_rows=sim_rows, out_json=None if out_json is None else Path(out_json))


def hardware_report(run_dir: str | Path, boards: Sequence[str], *, onnx: str | Path | None = None,
                    rtl_dir: str | Path | None = None, vendor_report: str | Path | None = None,
                    synth: bool = True) -> dict[str, Any]:
    """The report stage: per board the estimate, open synthesis (yosys, nextpnr) of the RTL, latency, fit
    and I/O budget, written to ``run_dir/hw_report.{json,md,html}``; returns the JSON's dict."""
    from .boards import load_board
    from .hwreport import hardware_report as _report

    d = Path(run_dir)
    rtl = Path(rtl_dir) if rtl_dir else (d / "rtl" if (d / "rtl" / "rtl.json").is_file() else None)
    with quiet():
        return _report(d, [load_board(b) for b in boards], Path(onnx) if onnx else d / "student.qonnx.onnx", rtl,
                       Path(vendor_report) if vendor_report else None, synth=synth, log=lambda *_: None)


def run(cfg: Config, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Every stage in order into ``out`` (built beside it and swapped in), as ``kdhw run`` does; returns
    ``report.json``'s dict."""
    from .pipeline import run as _run

    with quiet():
        return _run(cfg, Path(out), progress=progress, log=lambda *_: None)


__all__ = ["Config", "Students", "Teacher", "build_hls", "build_rtl", "distill_students", "export_qonnx",
           "hardware_report", "load_config", "load_data", "run", "train_teacher", "verify_design"]
