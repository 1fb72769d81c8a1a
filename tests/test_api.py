"""The Python API and the CLI's noise handling: `import kdhw` is light and changes nothing global, the
README's example runs as written, onnxruntime's per-node warnings are silenced at their source while the
warnings meant for the user still show."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_kdhw_is_light_and_changes_no_global_state() -> None:
    code = """
import logging, os, sys, warnings
filters, handlers, env = list(warnings.filters), list(logging.getLogger().handlers), dict(os.environ)
levels = {n: logging.getLogger(n).level for n in ("torch.onnx", "hls4ml", "brevitas")}
import kdhw
assert warnings.filters == filters and logging.getLogger().handlers == handlers and dict(os.environ) == env
assert {n: logging.getLogger(n).level for n in levels} == levels
heavy = [m for m in ("torch", "numpy", "brevitas", "hls4ml", "qonnx", "onnxruntime") if m in sys.modules]
assert not heavy, heavy
cfg = kdhw.load_config({"distill": {"epochs": 3}})
assert cfg.distill["epochs"] == 3 and "torch" not in sys.modules
assert callable(kdhw.run) and kdhw.InputError.exit_code == 2
for name in kdhw.__all__:
    obj = getattr(kdhw, name)
    assert name.startswith("__") or obj.__doc__, name
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README has no ```python block under ## Python API"
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "readme_example"}
    exec(compile(block.group(1), "README.md", "exec"), ns)
    chosen, exact, rows = capsys.readouterr().out.split()[-3:]
    assert chosen in ("scratch", "kd") and exact == "True" and int(rows) == 450
    assert (tmp_path / "out" / "rtl" / "rtl.json").is_file() and (tmp_path / "out" / "hls" / "kdhw_hls.json").is_file()
    # the block trains what `kdhw run` trains: the embedded default's resource-aware 64-16-10 at 5-bit input,
    # folded into a brevitas student whose learned per-weight precisions the spec carries
    spec = ns["students"].spec
    assert spec["input"]["bits"] == 5 and [ly.get("units") for ly in spec["layers"] if ly["type"] == "dense"] == [16, 10]
    assert spec.get("resource") is None and all("weight_frac_bits" in ly for ly in spec["layers"] if ly["type"] == "dense")


def test_cli_hides_named_noise_and_shows_user_warnings() -> None:
    from kdhw import cli

    with warnings.catch_warnings(record=True) as got:
        warnings.resetwarnings()
        cli._quiet_libraries()
        warnings.warn("fast_hadamard_transform package not found, using standard pytorch kernels", UserWarning)
        warnings.warn("The GemmToMatMul transformation only offers explicit support for version 9", UserWarning)
        warnings.warn("layer dense1: accumulator precision saturates", UserWarning)
    assert [str(w.message) for w in got] == ["layer dense1: accumulator precision saturates"]


def test_onnxruntime_per_node_warnings_are_silenced_at_the_source(tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """qonnx builds one onnxruntime session per node with an old opset; onnxruntime warns about each on
    stderr (C++, fd 2).  Inside ``kdhw.util.quiet.quiet`` (every API call; the whole CLI process) it does not."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from kdhw.hw.export import export_qonnx
    from kdhw.hw.hls import HLS_MODEL_FILE, build_hls_project
    from kdhw.train.student import build_student
    from kdhw.util.quiet import quiet, silence_onnxruntime

    spec = {"input": {"bits": 8, "int_bits": 1, "signed": True},
            "layers": [{"type": "conv1d", "filters": 2, "kernel": 3}, {"type": "relu"}, {"type": "dense", "units": 3}]}
    onnx = export_qonnx(build_student(spec, (1, 12), 3), (1, 12), tmp_path / "m.onnx")
    # the project's converted copy is what verify executes node by node to name a diverging layer
    build_hls_project(onnx, tmp_path / "hls", part="xc7z020clg400-1", clock_period_ns=10, compile_csim=False)
    mw = ModelWrapper(str(tmp_path / "hls" / HLS_MODEL_FILE))
    feed = {mw.graph.input[0].name: np.random.default_rng(0).uniform(-1, 1, size=(1, 1, 12)).astype(np.float32)}
    out = mw.graph.output[0].name
    silence_onnxruntime(2)  # onnxruntime's own default: another test may have run the CLI in this process
    capfd.readouterr()
    loud = execute_onnx(mw, feed)[out]
    assert "onnxruntime" in capfd.readouterr().err, "no onnxruntime warning to silence: the test proves nothing"
    with quiet():
        assert np.array_equal(execute_onnx(mw, feed)[out], loud)
    assert "onnxruntime" not in capfd.readouterr().err


def test_load_config_lays_a_dict_over_the_embedded_default_unless_told(tmp_path: Path) -> None:
    import kdhw

    cfg = kdhw.load_config({"distill": {"epochs": 5}})
    default = kdhw.load_config()
    assert cfg.distill["epochs"] == 5 and cfg.student == default.student and cfg.student["resource"] == {"beta": 3e-4}
    bare = kdhw.load_config({"distill": {"epochs": 5}}, base=None)
    assert bare.student["resource"] is None and bare.student["input"]["bits"] == 8
    assert kdhw.load_config({"student": {"resource": None}}).student["resource"] is None  # None drops a key
    yml = tmp_path / "c.yaml"
    yml.write_text("distill: {epochs: 7}\n")
    assert kdhw.load_config(yml).student["resource"] is None  # a file stands alone, as `kdhw run c.yaml` reads it
    assert kdhw.load_config(yml, base="default").student["resource"] == {"beta": 3e-4}
    assert kdhw.load_config({"distill": {"epochs": 2}}, base=yml).distill["epochs"] == 2
    with pytest.raises(kdhw.InputError, match="unknown key 'distill.epoch'"):
        kdhw.load_config({"distill": {"epoch": 5}})
    with pytest.raises(kdhw.InputError, match="unknown section 'distil'"):
        kdhw.load_config({"distil": {"epochs": 5}})


def test_api_paths_raise_input_error_for_what_the_user_can_fix(tmp_path: Path) -> None:
    import kdhw
    from kdhw.train.resource import build_trainable

    cfg = kdhw.load_config({"student": {"auto": {"board": "icebreaker"}, "resource": None}})
    data = kdhw.load_data(cfg)
    with pytest.raises(kdhw.InputError, match="student.auto trains a pareto grid and needs a folder"):
        kdhw.distill_students(cfg, data)
    fine = build_trainable(kdhw.load_config().student, (64,), 10)
    with pytest.raises(kdhw.InputError, match="must be folded into a brevitas student first"):
        kdhw.export_qonnx(fine, tmp_path / "m.onnx", input_shape=(64,))
    with pytest.raises(kdhw.InputError, match="give input_shape"):
        kdhw.export_qonnx(fine, tmp_path / "m.onnx")
    with pytest.raises(kdhw.InputError, match="no-such-board"):
        kdhw.build_hls(tmp_path / "m.onnx", tmp_path / "hls", board="no-such-board")
    with pytest.raises(kdhw.InputError):
        kdhw.load_config(tmp_path / "missing.yaml")
