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
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    chosen, exact, rows = capsys.readouterr().out.split()[-3:]
    assert chosen in ("scratch", "kd") and exact == "True" and int(rows) == 450
    assert (tmp_path / "out" / "rtl" / "rtl.json").is_file() and (tmp_path / "out" / "hls" / "kdhw_hls.json").is_file()


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
    stderr (C++, fd 2).  Inside ``kdhw.quiet.quiet`` (every API call; the whole CLI process) it does not."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from kdhw.export import export_qonnx
    from kdhw.hls import HLS_MODEL_FILE, build_hls_project
    from kdhw.quiet import quiet, silence_onnxruntime
    from kdhw.student import build_student

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
