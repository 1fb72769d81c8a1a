"""One config object for the whole pipeline, loaded from YAML and validated on load.

Why a hand-written schema rather than a validation library: the error a hardware engineer sees must be
one line that names the file, the dotted key and what is allowed, and unknown keys must be refused (a
typo such as ``temprature`` silently falling back to a default would invalidate a regression).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import InputError

# Schema: section -> key -> (type(s), default, what it means). ``None`` default with a type means optional.
# The third field is the config reference (docs/config.md is generated from it; ``kdhw config --schema``).
_Num = (int, float)
SCHEMA: dict[str, dict[str, tuple[Any, Any, str]]] = {
    "data": {
        "dataset": (str, "digits", "built-in set (no download: digits; mnist1d, the real MNIST-1D of Greydanus "
                    "2020 regenerated offline by the mnist1d package, 4,000 train / 1,000 test signals of 40 "
                    "samples, its test rows kept as the test split; mnist1d_lookalike, kdhw's synthetic "
                    "stand-in for tests, data.mnist1d_samples rows) or a loader for data.path"),
        "path": (str, None, "file or folder the npz / idx / mitbih_csv / image_folder / cifar10 loaders read"),
        "seed": (int, 0, "seed of the train / validation / test split"),
        "val_fraction": (_Num, 0.15, "share of the rows held out for validation (arm and epoch choice)"),
        "test_fraction": (_Num, 0.25, "share of the rows held out for test (read, never chosen on)"),
        "mnist1d_samples": (int, 4000, "rows generated for dataset: mnist1d_lookalike (the real mnist1d has its own 5,000)"),
        "labels": (dict, None, "label budget: {fraction: f} or {per_class: n} (+ seed, val); rows whose labels "
                               "are dropped become the transfer set"),
        "unlabeled": (str, None, "transfer-set file of inputs without labels (.npz x, IDX images, CSV)"),
        "layout": (str, None, "flat | signal | image; unset: what the student's first layer (or the teacher) reads"),
        "image_size": (list, None, "image_folder / cifar10: [H, W] every image is resized to"),
        "color": (str, None, "image_folder / cifar10: gray | rgb (unset: gray for folders, rgb for CIFAR)"),
    },
    "teacher": {
        "arch": (str, "cnn2d", "float teacher kdhw trains: mlp, cnn1d or cnn2d"),
        "channels": (list, [16, 32], "convolution channels per block (mlp: hidden widths)"),
        "hidden": (int, 64, "width of the dense layer before the classifier"),
        "kernel": (int, 3, "convolution kernel size"),
        "epochs": (int, 40, "most training epochs (early stop on validation loss)"),
        "lr": (_Num, 0.002, "Adam learning rate"),
        "batch_size": (int, 64, "training batch size"),
        "patience": (int, 8, "epochs without a better validation loss before training stops"),
        "path": (str, None, "a teacher to load instead of training one: teacher.pt, .onnx, TorchScript or a "
                            "logits .npz"),
        "seed": (int, 0, "seed of the teacher's initial weights and batch order"),
    },
    "student": {
        "input": (object, {"bits": 8, "int_bits": 1, "signed": False},
                  "input fixed-point format {bits, int_bits, signed} (+ allow_clip), or auto (from the training data)"),
        "output": (dict, {"bits": 8}, "output (logit) quantizer {bits}"),
        "weight_bits": (int, 4, "weight width (resource-aware: every weight's starting precision)"),
        "bias_bits": (int, 16, "bias width"),
        "act_bits": (int, 4, "ReLU output width"),
        "scaling": (str, "po2", "quantizer scales: power of two only (what makes hls4ml bit-exact)"),
        "layers": (list, [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 10}],
                   "layer list, each {type: dense | conv1d | conv2d | maxpool | relu | flatten, ...} (keys: docs/config-guide.md)"),
        "auto": (dict, None, "{board: B}: kdhw run runs the pareto search and exports its best point for B"),
        "resource": (dict, None, "resource-aware QAT (kdhw.train.resource): {beta | target_ebops, ramp, granularity, "
                                 "epochs}"),
    },
    "distill": {
        "method": (str, "hinton", "distillation method of the distilled arm (none: scratch only)"),
        "recipe": (str, "auto", "auto: function matching when there is a transfer set and a runnable teacher, "
                                "else plain (kdhw.train.recipe)"),
        "temperature": (_Num, 1.0, "softmax temperature of the teacher's and student's targets"),
        "alpha": (_Num, None, "weight of the teacher term; unset: 0.5 (plain), 0.9 (function matching)"),
        "epochs": (int, 60, "epochs of the plain arms (function matching: x epochs_factor)"),
        "lr": (_Num, 0.01, "Adam learning rate (cosine decay)"),
        "batch_size": (int, 64, "training batch size"),
        "seed": (int, 0, "seed of initial weights and batch order, shared by all arms (paired)"),
        "select": (str, "best_val", "arm to export: best on validation, or a named arm"),
        "hint_layer": (str, None, "fitnets: student layer name; unset: the input of the last dense layer"),
        "teacher_hint_layer": (object, -2, "fitnets: index or name in the teacher's nn.Sequential"),
        "hint_epochs": (int, 10, "fitnets: stage-1 epochs, counted inside distill.epochs"),
        "rkd_distance": (_Num, 25.0, "rkd: weight of the distance-wise term"),
        "rkd_angle": (_Num, 50.0, "rkd: weight of the angle-wise term"),
        "mae_weight": (_Num, 1.0, "kl_mae: weight of the mean absolute error term"),
        "generations": (int, 2, "born_again: distilled generations after generation 0 (= scratch)"),
        "tf_kd_prob": (_Num, 0.9, "tf_kd: the virtual teacher's probability of the correct class"),
        "smoothing": (_Num, 0.1, "label_smoothing: epsilon"),
        "teachers": (list, None, "ensemble: extra teacher.pt files (the main teacher is always a member)"),
        "ensemble_size": (int, 3, "ensemble: members in all when no teachers list is given"),
        "mixup_alpha": (_Num, None, "> 0: mixup with Beta(a, a), teacher evaluated online on mixed inputs; unset: "
                                    "0 (plain) or function matching's value"),
        "relu_grad_leak": (_Num, 0.05, "students' ReLUs pass this x the gradient below zero (value unchanged)"),
        "float_warmup_epochs": (int, 0, "first epochs with quantizers off, counted inside distill.epochs"),
        "augment_shift": (int, None, "signals: circular shift by up to n samples; images: translation, zero fill"),
        "augment_scale": (_Num, None, "amplitude factor in [1 - s, 1 + s] per sample"),
        "augment_noise": (_Num, None, "additive Gaussian noise, std in input units"),
        "epochs_factor": (_Num, None, "function matching's arms train epochs x this at batch_size (unset: the measured "
                                       "default, at a larger batch: docs/distillation.md)"),
        "checkpoint": (str, None, "score that keeps an arm's exported epoch: val (validation accuracy) or teacher "
                                  "(agreement on the transfer rows); unset: teacher under function matching"),
        "init": (str, "fresh", "distilled arm starts fresh, or from the trained scratch student (QKD)"),
    },
    "hls": {
        "board": (str, "pynq-z2", "board of the hls4ml project (its part and clock; kdhw boards)"),
        "backend": (str, "Vitis", "hls4ml backend"),
        "io_type": (str, "io_parallel", "hls4ml I/O: arrays in parallel, or hls::stream"),
        "reuse_factor": (int, 1, "hls4ml reuse factor (multiplications per multiplier)"),
        "strategy": (str, "Latency", "hls4ml strategy"),
        "clock_period_ns": (_Num, None, "HLS clock period; unset: the board's clock"),
    },
    "verify": {
        "random_inputs": (int, 1000, "off-grid random rows checked besides the test split"),
        "random_seed": (int, 1234, "seed of those random rows"),
    },
    "rtl": {
        "enabled": (bool, True, "generate Verilog and check it (false: the HLS path only)"),
        "mode": (str, "parallel", "parallel: one unrolled block; stream: AXI4-Stream core, one datapath per "
                                  "layer; auto: the least folded form that fits rtl.board (kdhw.hw.board_fit)"),
        "board": (str, None, "auto: the board to fit (unset: hls.board)"),
        "latency_cutoff": (_Num, None, "da4ml delay budget per pipeline stage (smaller: deeper pipeline)"),
        "pipeline": (int, None, "parallel mode: exact latency in cycles"),
        "parallelism": (int, None, "stream: output positions per issue (conv/pool), MAC lanes (folded dense); "
                                   "unset: 1"),
        "in_elements": (int, None, "stream, MLPs (first layer dense): input elements per beat (unset: 1)"),
        "out_elements": (int, None, "stream: logits per output beat (unset: 1)"),
        "output": (str, None, "stream: logits | class | both (unset: logits)"),
        "dense": (str, None, "stream: auto | folded | unrolled (unset: auto)"),
        "fold": (dict, None, "stream: {pe: P, simd: S | target_ii: N[, memory: auto | bram | lut][, requant: serial | "
                             "parallel][, layers: {index or node name: {pe, simd}}]}: every conv and dense layer "
                             "computes P outputs x S inputs per cycle, weights in block RAM (registered read; "
                             "memory auto: a table of up to 512 bits in a LUT ROM), "
                             "multipliers into DSP blocks, bias/ReLU/requantization one group of P outputs per "
                             "cycle where the layer allows; target_ii: P and S chosen per layer, the fewest "
                             "multipliers that still take a frame every N cycles; layers: per-layer P and S (index "
                             "= rtl.json's layers[].layer); line_buffer: auto (block RAM from 1 kbit of row "
                             "delays) | bram | registers (unset: the folded/unrolled units of rtl.dense)"),
        "tlast": (str, None, "stream: required (frames delimited by s_axis_tlast, checked against the beat count) | "
                             "ignore (frames counted; tlast only flagged, for sources without TLAST) (unset: "
                             "required)"),
        "top": (str, "kdhw_top", "name of the top module; every generated module starts with it, so cores with "
                                 "different tops share one design"),
        "simulator": (str, "icarus", "RTL simulator kdhw run drives (cocotb)"),
        "sim_rows": (int, 1000, "rows driven through the RTL simulator"),
    },
    "report": {
        "boards": (list, ["pynq-z2", "ulx3s-85f", "icebreaker"], "boards of the hardware report (kdhw report's "
                                                                 "default too)"),
        "synth": (bool, True, "open synthesis and place-and-route (false: the estimate only)"),
        "vendor_report": (str, None, "HLS csynth.xml or Vivado utilization report to read beside the open flow"),
        "require_fit": (bool, False, "kdhw run exits 1 when the design does not fit every report board"),
    },
    "pareto": {
        "betas": (list, [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], "weights of the EBOPs term (a searched dimension)"),
        "students": (list, [], "student specs, each merged over the student section; [] = that section"),
        "search": (dict, {"input_bits": [2, 3, 4, 5]}, "further searched dimensions, each a list of values applied "
                                                       "to every student spec: input_bits (student.input.bits), "
                                                       "act_bits, weight_bits; {} = none"),
        "budget_min": (_Num, 8, "wall minutes for training and synthesizing candidates, taken in a space-filling "
                                "order over the searched dimensions (later seeds last); candidates finished by an "
                                "earlier run in --out are free; 0 = every candidate, however long"),
        "epochs": (int, 150, "training epochs per point"),
        "seeds": (int, 2, "trainings per candidate, seeds distill.seed, +1, ...: more candidates for the front"),
        "input_noise": (list, [0.1], "Gaussian input noise while training, as shares of the inputs' std; one "
                                     "training per level (0 = none); [] = the distill section's augmentation"),
        "lr": (_Num, None, "learning rate; unset: distill.lr"),
        "ramp": (_Num, 0.3, "beta ramps up over this fraction of the epochs; checkpoints are chosen after it"),
        "checkpoints": (int, 0, "candidates kept per training along its beta ramp (the ramp then spans 90 % of the "
                                "epochs; up to this many epochs of the run's own validation accuracy x EBOPs "
                                "front after the first 30 %, each folded and synthesized); 0 = one, the best "
                                "epoch after the ramp"),
        "granularity": (str, "weight", "learned precision per weight or per output channel"),
        "kd": (bool, True, "also a distilled arm per point, paired with its scratch arm (function matching and "
                                "its scratch_aug control with a transfer set)"),
        "synth_board": (str, "pynq-z2", "Xilinx board whose yosys flow measures the front's LUTs"),
        "pins": (str, "serialize", "board fit: parallel RTL behind a serial pin wrapper, or parallel ports"),
        "verify_random_inputs": (int, 300, "off-grid rows (besides the test split) for front verification"),
        "sim_rows": (int, 200, "rows through the RTL simulator per front point"),
    },
    "selector": {
        "students": (list, [], "student specs, each merged over the student section"),
        "hidden": (int, 8, "hidden width of the selector network"),
        "weight_bits": (int, 4, "selector weight width"),
        "act_bits": (int, 4, "selector activation width"),
        "epochs": (int, 30, "selector training epochs"),
        "lr": (_Num, 0.01, "selector learning rate"),
    },
}

CHOICES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("digits", "mnist1d", "mnist1d_lookalike", "npz", "idx", "mitbih_csv", "image_folder", "cifar10"),
    "data.layout": ("flat", "signal", "image"),
    "data.color": ("gray", "rgb"),
    "teacher.arch": ("mlp", "cnn1d", "cnn2d"),
    "student.scaling": ("po2",),
    "distill.method": ("hinton", "none", "logits_mse", "kl_mae", "fitnets", "rkd", "born_again", "tf_kd",
                       "ensemble", "label_smoothing", "pseudo_label"),
    "distill.recipe": ("auto", "plain", "function_matching"),
    "distill.checkpoint": ("val", "teacher"),
    "distill.select": ("best_val", "kd", "scratch", "scratch_aug"),
    "distill.init": ("fresh", "scratch"),
    "hls.backend": ("Vitis", "Vivado", "VivadoAccelerator"),
    "hls.io_type": ("io_parallel", "io_stream"),
    "hls.strategy": ("Latency", "Resource"),
    "rtl.simulator": ("icarus", "verilator"),
    "rtl.mode": ("parallel", "stream", "auto"),
    "rtl.output": ("logits", "class", "both"),
    "rtl.dense": ("auto", "folded", "unrolled"),
    "rtl.tlast": ("required", "ignore"),
    "pareto.granularity": ("weight", "channel"),
    "pareto.pins": ("serialize", "parallel"),
}


@dataclass
class Config:
    """Validated pipeline config: one plain dict per section, every key present (defaults filled in)."""

    data: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    hls: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    rtl: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    selector: dict[str, Any] = field(default_factory=dict)
    pareto: dict[str, Any] = field(default_factory=dict)
    source: str = "<default>"

    def to_dict(self) -> dict[str, Any]:
        return {s: copy.deepcopy(getattr(self, s)) for s in SCHEMA}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return "number"
    return {str: "string", int: "integer", list: "list", dict: "mapping", bool: "boolean"}.get(t, t.__name__)


def _check_type(src: str, key: str, value: Any, typ: Any) -> Any:
    if value is None:
        return None
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ in (int, _Num))
    if not ok:
        name = _type_name(typ)
        raise InputError(f"{src}: {key} must be {'an' if name[0] in 'aeiou' else 'a'} {name}, got {value!r}")
    return value


def validate(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Check keys, types and choices; fill defaults.  Raises InputError naming file and key."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: top level must be a mapping with sections {', '.join(SCHEMA)}")
    cfg = Config(source=source)
    for section in raw:
        if section not in SCHEMA:
            raise InputError(f"{source}: unknown section '{section}'; allowed: {', '.join(SCHEMA)}")
    for section, keys in SCHEMA.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise InputError(f"{source}: section '{section}' must be a mapping")
        for k in given:
            if k not in keys:
                raise InputError(
                    f"{source}: unknown key '{section}.{k}'; allowed: {', '.join(sorted(keys))}"
                )
        out: dict[str, Any] = {}
        for k, (typ, default, _doc) in keys.items():
            v = given.get(k, copy.deepcopy(default))
            out[k] = _check_type(source, f"{section}.{k}", v, typ)
            choices = CHOICES.get(f"{section}.{k}")
            if choices and out[k] is not None and out[k] not in choices:
                raise InputError(
                    f"{source}: {section}.{k} = {out[k]!r} is not allowed; choose one of: {', '.join(choices)}"
                )
        setattr(cfg, section, out)
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    src = cfg.source
    for key in ("val_fraction", "test_fraction"):
        v = cfg.data[key]
        if not 0 < v < 0.5:
            raise InputError(f"{src}: data.{key} = {v} must be in (0, 0.5)")
    if cfg.distill["temperature"] <= 0:
        raise InputError(f"{src}: distill.temperature must be > 0")
    if cfg.distill["alpha"] is not None and not 0 <= cfg.distill["alpha"] <= 1:
        raise InputError(f"{src}: distill.alpha = {cfg.distill['alpha']} must be in [0, 1]")
    for sec, key in (("teacher", "epochs"), ("distill", "epochs"), ("hls", "reuse_factor")):
        if cfg.__dict__[sec][key] < 1:
            raise InputError(f"{src}: {sec}.{key} must be >= 1")
    _check_distill_ranges(cfg)
    _check_label_budget(cfg)
    _check_rtl(cfg)
    _check_pareto(cfg)
    _check_resource(cfg)
    if cfg.data["dataset"] in ("npz", "idx", "mitbih_csv", "image_folder", "cifar10") and not cfg.data["path"]:
        what = "a folder" if cfg.data["dataset"] == "image_folder" else "a file"
        raise InputError(f"{src}: data.dataset = {cfg.data['dataset']} needs data.path ({what})")
    size = cfg.data["image_size"]
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        and 1 <= v <= 512 for v in size)):
        raise InputError(f"{src}: data.image_size = {size!r} must be [height, width], integers in [1, 512]")
    from .contract import parse_input

    parse_input(cfg.student["input"], src)


RTL_STREAM_KEYS = ("parallelism", "in_elements", "out_elements", "output", "dense", "tlast", "fold")
RTL_DEFAULT_TOP = "kdhw_top"


def _verilog_name(s: Any) -> bool:
    """A plain Verilog identifier of at most 63 characters (letters, digits, _; not first a digit)."""
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
    return isinstance(s, str) and 0 < len(s) <= 63 and not s[0].isdigit() and set(s) <= ok


def check_rtl_options(mode: str, opts: dict[str, Any], name: Callable[[str], str], where: str) -> None:
    """The rtl options' rules, for the config's rtl section and ``kdhw rtl``'s flags alike: each option belongs
    to one mode (a key of the other mode is a mistake, not a no-op), and numbers stay in range.  ``opts``
    holds board, pipeline, latency_cutoff, top and the RTL_STREAM_KEYS (None = not given); ``name`` spells a key
    as the user wrote it (``rtl.parallelism`` or ``--parallelism``)."""
    def fail(msg: str) -> None:
        raise InputError(f"{where}{msg}")

    mode_key = name("mode")
    if opts.get("board") is not None and mode != "auto":
        fail(f"{name('board')} applies to {mode_key} auto (the board to fit; the mode here is {mode})")
    if mode == "parallel":
        given = [k for k in RTL_STREAM_KEYS if opts.get(k) is not None]
        if given:
            fail(f"{name(given[0])} applies to {mode_key} stream (the mode here is parallel)")
    elif opts.get("pipeline") is not None:
        fail(f"{name('pipeline')} applies to {mode_key} parallel (an exact latency); in stream mode set "
             f"{name('latency_cutoff')} (pipeline depth of each layer's datapath)")
    top = opts.get("top")
    if top is not None and not _verilog_name(top):
        fail(f"{name('top')} = {top!r} is not a Verilog module name (letters, digits, _; not first a digit; at most "
             "63 characters)")
    if mode == "auto":
        chosen = [k for k in ("parallelism", "in_elements", "dense", "fold") if opts.get(k) is not None]
        if chosen:
            fail(f"{name(chosen[0])} is what {mode_key} auto chooses; remove it, or use {mode_key} stream to fix "
                 "it yourself")
    if opts.get("pipeline") is not None and opts.get("latency_cutoff") is not None:
        fail(f"give {name('latency_cutoff')} or {name('pipeline')}, not both")
    if opts.get("latency_cutoff") is not None and not opts["latency_cutoff"] > 0:
        fail(f"{name('latency_cutoff')} = {opts['latency_cutoff']} must be > 0")
    if opts.get("pipeline") is not None and not 1 <= opts["pipeline"] <= 64:
        fail(f"{name('pipeline')} = {opts['pipeline']} must be in [1, 64]")
    for key, hi in (("parallelism", 64), ("in_elements", 4096), ("out_elements", 4096)):
        if opts.get(key) is not None and not 1 <= opts[key] <= hi:
            fail(f"{name(key)} = {opts[key]} must be in [1, {hi}]")
    fold = opts.get("fold")
    if fold is not None:
        check_fold(fold, name("fold"), where)
        if opts.get("dense") == "unrolled":
            fail(f"{name('fold')} folds every dense layer; it contradicts {name('dense')} unrolled")


FOLD_KEYS = ("pe", "simd", "memory", "requant", "target_ii", "layers", "line_buffer")
FOLD_LAYER_KEYS = ("pe", "simd")


def check_fold(fold: Any, key: str = "rtl.fold", where: str = "") -> None:
    """``rtl.fold``'s rules, for the config, ``kdhw rtl --fold`` and the RTL generator alike: pe, simd in
    [1, 64] (or ``target_ii``, which chooses them per layer, not both), memory auto | bram | lut, requant serial |
    parallel, and ``layers``: {layer index or node name: {pe, simd}} overrides."""
    def fail(msg: str) -> None:
        raise InputError(f"{where}{msg}")

    if fold is None:
        return

    def shape(d: dict[str, Any], k: str) -> None:
        for x in ("pe", "simd"):
            v = d.get(x, 1)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
                fail(f"{k}.{x} = {v!r} must be an integer in [1, 64]")

    if not isinstance(fold, dict):
        fail(f"{key} = {fold!r} must be a mapping {{pe: P, simd: S}} or {{target_ii: N}}")
    extra = [k for k in fold if k not in FOLD_KEYS]
    if extra:
        fail(f"{key}: unknown key {extra[0]!r}; allowed: {', '.join(FOLD_KEYS)}")
    shape(fold, key)
    if fold.get("memory", "auto") not in ("auto", "bram", "lut"):
        fail(f"{key}.memory = {fold['memory']!r}; allowed: auto, bram, lut")
    if fold.get("requant", "serial") not in ("serial", "parallel"):
        fail(f"{key}.requant = {fold['requant']!r}; allowed: serial, parallel")
    if fold.get("line_buffer", "auto") not in ("auto", "bram", "registers"):
        fail(f"{key}.line_buffer = {fold['line_buffer']!r}; allowed: auto, bram, registers")
    ii = fold.get("target_ii")
    if ii is not None:
        if isinstance(ii, bool) or not isinstance(ii, int) or ii < 1:
            fail(f"{key}.target_ii = {ii!r} must be a positive integer (clock cycles between frames)")
        both = [k for k in ("pe", "simd") if k in fold]
        if both:
            fail(f"{key}: give {key}.target_ii (pe and simd chosen per layer) or {key}.{both[0]}, not both")
    layers = fold.get("layers")
    if layers is not None:
        if not isinstance(layers, dict):
            fail(f"{key}.layers = {layers!r} must be a mapping {{layer index or node name: {{pe: P, simd: S}}}}")
        for lk, lv in layers.items():
            if isinstance(lk, bool) or not isinstance(lk, (int, str)):
                fail(f"{key}.layers: key {lk!r} must be a layer index (rtl.json's layers[].layer) or a node name")
            if not isinstance(lv, dict) or not lv or any(k not in FOLD_LAYER_KEYS for k in lv):
                fail(f"{key}.layers.{lk} = {lv!r} must be a mapping with pe and/or simd")
            shape(lv, f"{key}.layers.{lk}")


def _check_rtl(cfg: Config) -> None:
    r = cfg.rtl
    check_rtl_options(r["mode"], r, lambda k: f"rtl.{k}" if k != "mode" else "rtl.mode:", f"{cfg.source}: ")
    if r["sim_rows"] < 0:
        raise InputError(f"{cfg.source}: rtl.sim_rows = {r['sim_rows']} must be >= 0")


# student.resource keys (kdhw.train.resource.FineNet reads them); epochs defaults to distill.epochs in kdhw run
RESOURCE_KEYS = ("beta", "epochs", "ramp", "granularity", "target_ebops")


def _check_resource(cfg: Config) -> None:
    src, res = cfg.source, cfg.student["resource"]
    if res is None:
        return
    for k in res:
        if k not in RESOURCE_KEYS:
            raise InputError(f"{src}: unknown key 'student.resource.{k}'; allowed: {', '.join(RESOURCE_KEYS)}")
    for k in ("beta", "ramp", "target_ebops", "epochs"):
        v = res.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise InputError(f"{src}: student.resource.{k} = {v!r} must be a number >= 0")
    if "beta" not in res and "target_ebops" not in res:
        raise InputError(f"{src}: student.resource needs beta (weight of the EBOPs term) or target_ebops")
    if not 0 <= res.get("ramp", 0.3) < 1:
        raise InputError(f"{src}: student.resource.ramp = {res['ramp']} must be in [0, 1)")
    if res.get("granularity", "weight") not in ("weight", "channel"):
        raise InputError(f"{src}: student.resource.granularity = {res['granularity']!r} is not allowed; choose one "
                         "of: weight, channel")
    if cfg.student["auto"] is not None:
        raise InputError(f"{src}: student.auto and student.resource exclude each other (auto runs the pareto search)")


SEARCH_DIMS = ("input_bits", "act_bits", "weight_bits")  # pareto.search: student keys a search may vary


def _check_pareto(cfg: Config) -> None:
    src, p = cfg.source, cfg.pareto
    betas = p["betas"]
    if not betas or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in betas):
        raise InputError(f"{src}: pareto.betas must be a non-empty list of numbers >= 0, got {betas!r}")
    if p["epochs"] < 1:
        raise InputError(f"{src}: pareto.epochs must be >= 1")
    if p["seeds"] < 1:
        raise InputError(f"{src}: pareto.seeds must be >= 1, got {p['seeds']}")
    noise = p["input_noise"]
    if (not all(isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n <= 1 for n in noise)
            or len(set(noise)) < len(noise)):
        raise InputError(f"{src}: pareto.input_noise must be a list of distinct numbers in [0, 1] (shares of the "
                         f"inputs' std), got {noise!r}")
    if not 0 <= p["ramp"] < 1:
        raise InputError(f"{src}: pareto.ramp = {p['ramp']} must be in [0, 1)")
    if not 0 <= p["checkpoints"] <= 64:
        raise InputError(f"{src}: pareto.checkpoints = {p['checkpoints']} must be in [0, 64] (0 = one candidate per "
                         "training)")
    for key in ("verify_random_inputs", "sim_rows"):
        if p[key] < 0:
            raise InputError(f"{src}: pareto.{key} must be >= 0")
    if p["budget_min"] < 0:
        raise InputError(f"{src}: pareto.budget_min = {p['budget_min']} must be >= 0 (wall minutes; 0 = no budget)")
    for dim, values in p["search"].items():
        if dim not in SEARCH_DIMS:
            raise InputError(f"{src}: pareto.search: unknown dimension {dim!r}; allowed: {', '.join(SEARCH_DIMS)} "
                             "(beta and seed are pareto.betas and pareto.seeds)")
        if (not isinstance(values, list) or not values or len(set(map(str, values))) < len(values)
                or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16 for v in values)):
            raise InputError(f"{src}: pareto.search.{dim} = {values!r} must be a non-empty list of distinct bit "
                             "widths in [1, 16]")
    auto = cfg.student["auto"]
    if auto is not None and (set(auto) != {"board"} or not isinstance(auto.get("board"), str)):
        raise InputError(f"{src}: student.auto must be {{board: NAME}} (one board of `kdhw boards`), got {auto!r}")


def _check_label_budget(cfg: Config) -> None:
    src, b = cfg.source, cfg.data["labels"]
    if b is None:
        return
    allowed = ("fraction", "per_class", "seed", "val")
    for k in b:
        if k not in allowed:
            raise InputError(f"{src}: unknown key 'data.labels.{k}'; allowed: {', '.join(allowed)}")
    given = [k for k in ("fraction", "per_class") if b.get(k) is not None]
    if len(given) != 1:
        raise InputError(f"{src}: data.labels needs exactly one of fraction (in (0, 1]) or per_class (>= 1)")
    v = b[given[0]]
    if given[0] == "fraction":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise InputError(f"{src}: data.labels.fraction = {v!r} must be a number in (0, 1]")
    elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"{src}: data.labels.per_class = {v!r} must be an integer >= 1")
    seed = b.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"{src}: data.labels.seed = {seed!r} must be an integer")
    if b.get("val") is not None and not isinstance(b["val"], bool):
        raise InputError(f"{src}: data.labels.val = {b['val']!r} must be true or false")


def _check_distill_ranges(cfg: Config) -> None:
    src, d = cfg.source, cfg.distill
    ep = d["epochs"]
    if not 0 <= d["float_warmup_epochs"] < ep:
        raise InputError(f"{src}: distill.float_warmup_epochs = {d['float_warmup_epochs']} must be in [0, {ep - 1}] "
                         "(counted inside distill.epochs)")
    if d["method"] == "fitnets" and not 0 <= d["hint_epochs"] < ep:
        raise InputError(f"{src}: distill.hint_epochs = {d['hint_epochs']} must be in [0, {ep - 1}] "
                         "(stage 1 is counted inside distill.epochs)")
    if d["mixup_alpha"] is not None and d["mixup_alpha"] < 0:
        raise InputError(f"{src}: distill.mixup_alpha = {d['mixup_alpha']} must be >= 0 (0 = no mixup)")
    if d["augment_shift"] is not None and not 0 <= d["augment_shift"] <= 64:
        raise InputError(f"{src}: distill.augment_shift = {d['augment_shift']} must be in [0, 64] (0 = off)")
    if d["augment_scale"] is not None and not 0 <= d["augment_scale"] < 1:
        raise InputError(f"{src}: distill.augment_scale = {d['augment_scale']} must be in [0, 1) (0 = off)")
    if d["augment_noise"] is not None and d["augment_noise"] < 0:
        raise InputError(f"{src}: distill.augment_noise = {d['augment_noise']} must be >= 0 (0 = off)")
    if d["epochs_factor"] is not None and not 0 < d["epochs_factor"] <= 1000:
        raise InputError(f"{src}: distill.epochs_factor = {d['epochs_factor']} must be in (0, 1000]")
    if not 0 <= d["relu_grad_leak"] < 1:
        raise InputError(f"{src}: distill.relu_grad_leak = {d['relu_grad_leak']} must be in [0, 1) (0 = plain ReLU "
                         "gradient)")
    for key in ("rkd_distance", "rkd_angle", "mae_weight"):
        if d[key] < 0:
            raise InputError(f"{src}: distill.{key} = {d[key]} must be >= 0")
    if not 0 < d["tf_kd_prob"] <= 1:
        raise InputError(f"{src}: distill.tf_kd_prob = {d['tf_kd_prob']} must be in (0, 1]")
    if not 0 <= d["smoothing"] < 1:
        raise InputError(f"{src}: distill.smoothing = {d['smoothing']} must be in [0, 1)")
    for key in ("generations", "ensemble_size"):
        if d[key] < 1:
            raise InputError(f"{src}: distill.{key} must be >= 1")
    th = d["teacher_hint_layer"]
    if isinstance(th, bool) or not isinstance(th, (int, str)):
        raise InputError(f"{src}: distill.teacher_hint_layer must be an integer index or a layer name, got {th!r}")
    if d["teachers"] is not None and not all(isinstance(t, str) and t for t in d["teachers"]):
        raise InputError(f"{src}: distill.teachers must be a list of teacher.pt paths")
    sel = cfg.selector
    if not all(isinstance(s, dict) for s in sel["students"]):
        raise InputError(f"{src}: selector.students must be a list of student specs (mappings)")
    for key in ("hidden", "epochs"):
        if sel[key] < 1:
            raise InputError(f"{src}: selector.{key} must be >= 1")
    for key in ("weight_bits", "act_bits"):
        if not 2 <= sel[key] <= 16:
            raise InputError(f"{src}: selector.{key} = {sel[key]} must be in [2, 16]")


def _embedded_default() -> dict[str, Any]:
    return yaml.safe_load(resources.files("kdhw").joinpath("defaults/digits.yaml").read_text())


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise InputError(f"{p}: not valid YAML{where}") from None
    if raw is not None and not isinstance(raw, dict):
        raise InputError(f"{p}: top level must be a mapping with sections {', '.join(SCHEMA)}")
    return raw or {}


def merge(base: dict[str, Any], over: dict[str, Any], source: str = "<dict>") -> dict[str, Any]:
    """``over`` laid on ``base`` section by section and key by key; a key's value replaces the base's whole
    (a list or mapping is not merged inside), and ``None`` drops the key back to the schema's default."""
    if not isinstance(over, dict):
        raise InputError(f"{source}: top level must be a mapping with sections {', '.join(SCHEMA)}")
    out = copy.deepcopy(base)
    for section, keys in over.items():
        if not isinstance(keys, dict) or not isinstance(out.get(section) or {}, dict):
            out[section] = copy.deepcopy(keys)  # validate names the bad section
            continue
        sec = dict(out.get(section) or {})
        for k, v in keys.items():
            if v is None:
                sec.pop(k, None)
            else:
                sec[k] = copy.deepcopy(v)
        out[section] = sec
    return out


def load_config(path: str | Path | None, *, base: str | Path | None = None) -> Config:
    """Load ``path`` (YAML), or the embedded default when ``path`` is None.

    A YAML file stands alone over the schema's defaults (what ``kdhw run CONFIG`` reads), unless ``base`` names
    a file to lay it over, or ``"default"`` for the embedded default config."""
    if path is None:
        return validate(_embedded_default(), "<embedded default digits.yaml>")
    raw = _read_yaml(path)
    if base is not None:
        raw = merge(_embedded_default() if str(base) == "default" else _read_yaml(base), raw, str(path))
    return validate(raw, str(path))


def default_yaml() -> str:
    """The embedded default config, for users to copy and edit."""
    return resources.files("kdhw").joinpath("defaults/digits.yaml").read_text()


_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}


def json_schema() -> dict[str, Any]:
    """The config as a JSON Schema (draft 2020-12) that editors use for completion and checking; generated
    from ``SCHEMA`` and ``CHOICES``, so it cannot drift from what ``validate`` accepts.  Range rules that
    involve several keys stay in ``validate``."""
    sections: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        props: dict[str, Any] = {}
        for k, (typ, default, doc) in keys.items():
            prop: dict[str, Any] = {"description": doc}
            if typ is _Num:
                prop["type"] = "number"
            elif typ in _JSON_TYPES:
                prop["type"] = _JSON_TYPES[typ]
            if default is not None:
                prop["default"] = default
            choices = CHOICES.get(f"{section}.{k}")
            if choices:
                prop["enum"] = list(choices)
            if default is None and "type" in prop:
                prop["type"] = [prop["type"], "null"]
            props[k] = prop
        sections[section] = {"type": "object", "additionalProperties": False, "properties": props}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "kdhw config",
            "description": "kdhw pipeline config (YAML). Unknown sections and keys are refused.",
            "type": "object", "additionalProperties": False, "properties": sections}


def reference_markdown() -> str:
    """The config reference (docs/config.md): every section and key with its type, default, choices and
    meaning, from the same schema ``validate`` enforces."""
    lines = ["# Config reference", "",
             "<!-- generated by `python -m kdhw.config > docs/config.md`; tests/test_readme.py fails when it drifts -->", "",
             "Every key of the YAML config, its type, its default and what it does. Unknown sections and keys are",
             "refused by name. `kdhw config` prints the embedded default config (whose values differ from the",
             "schema defaults below where it sets them); `kdhw config --schema` prints this as a JSON Schema.", ""]
    for section, keys in SCHEMA.items():
        lines += [f"## `{section}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for k, (typ, default, doc) in keys.items():
            t = "number" if typ is _Num else _JSON_TYPES.get(typ, "any")
            choices = CHOICES.get(f"{section}.{k}")
            meaning = doc + (f" (one of: {', '.join(choices)})" if choices else "")
            d = "unset" if default is None else f"`{yaml.safe_dump(default, default_flow_style=True).strip()}`"
            d = d.replace("\n...", "").replace("|", "\\|")
            meaning = meaning.replace("|", "\\|")
            lines.append(f"| `{k}` | {t} | {d} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference_markdown())
