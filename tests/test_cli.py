"""CLI contract: bad input -> exit 2 with one line on stderr; foreign QONNX works; outputs are atomic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from kdhw.cli import main


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_not_onnx(tmp_path: Path, capsys) -> None:
    p = tmp_path / "model.onnx"
    p.write_text("this is not a protobuf")
    assert main(["hls", str(p), "--out", str(tmp_path / "p")]) == 2
    assert "model.onnx: not an ONNX model" in _err_line(capsys)


def test_unsupported_op_is_named_with_the_supported_list(tmp_path: Path, capsys) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="sig0")], "g", [x], [y])
    p = tmp_path / "sig.onnx"
    onnx.save(helper.make_model(g), p)
    assert main(["hls", str(p), "--out", str(tmp_path / "p")]) == 2
    line = _err_line(capsys)
    assert "node 'sig0' has op Sigmoid, which kdhw does not support; supported: Quant, MatMul" in line


def _brevitas_mlp(act_quant_float: bool = False):
    """A student exported by plain brevitas, not by kdhw."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                                Int16Bias, Uint8ActPerTensorFixedPoint)

    torch.manual_seed(0)
    inq = Int8ActPerTensorFloat if act_quant_float else Int8ActPerTensorFixedPoint
    m = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=inq, return_quant_tensor=True),
        qnn.QuantLinear(16, 8, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias=True,
                        bias_quant=Int16Bias, return_quant_tensor=True),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(8, 4, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias=True,
                        bias_quant=Int16Bias, return_quant_tensor=False),
    )
    m.train()
    for _ in range(8):
        m(torch.randn(64, 16))
    return m.eval()


def _export_plain(model, path: Path) -> None:
    import torch
    from brevitas.export import export_qonnx

    export_qonnx(model, torch.randn(1, 16), str(path))


def test_non_power_of_two_scales_are_refused(tmp_path: Path, capsys) -> None:
    p = tmp_path / "float_scale.onnx"
    _export_plain(_brevitas_mlp(act_quant_float=True), p)
    capsys.readouterr()
    assert main(["hls", str(p), "--out", str(tmp_path / "p")]) == 2
    assert "not a power of two" in _err_line(capsys)


@pytest.mark.slow
def test_foreign_qonnx_hls_and_verify(tmp_path: Path, capsys) -> None:
    """A QONNX file exported by plain brevitas goes through `kdhw hls` + `kdhw verify` bit-exactly."""
    p = tmp_path / "plain.onnx"
    _export_plain(_brevitas_mlp(), p)
    assert main(["hls", str(p), "--board", "pynq-z2", "--out", str(tmp_path / "prj")]) == 0
    x = np.random.default_rng(0).normal(0, 1.5, size=(500, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "prj"), "--inputs", str(tmp_path / "x.npy")]) == 0
    assert "csim        500/500 rows exact" in capsys.readouterr().out
    # wrong shape of inputs: one clear line, exit 2
    np.save(tmp_path / "bad.npy", np.zeros((3, 15), np.float32))
    assert main(["verify", str(tmp_path / "prj"), "--inputs", str(tmp_path / "bad.npy")]) == 2
    assert "inputs have shape (15,) per row; the model expects (16,)" in _err_line(capsys)


def test_unknown_board_lists_known(tmp_path: Path, capsys) -> None:
    p = tmp_path / "m.onnx"
    _export_plain(_brevitas_mlp(), p)
    capsys.readouterr()
    assert main(["hls", str(p), "--board", "nope-board", "--out", str(tmp_path / "p")]) == 2
    line = _err_line(capsys)
    assert "unknown board 'nope-board'" in line and "pynq-z2" in line and "zcu102" in line


def test_unknown_config_key(tmp_path: Path, capsys) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"distill": {"temprature": 4}}))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key 'distill.temprature'" in _err_line(capsys)


def test_failed_run_leaves_previous_output_intact(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"good": true}')
    cfg = {"teacher": {"arch": "mlp", "epochs": 1, "hidden": 8},
           "student": {"layers": [{"type": "dense", "units": 8}, {"type": "relu"}, {"type": "dense", "units": 7}]},
           "distill": {"epochs": 1}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(p), "--out", str(out), "--no-progress"]) == 2  # fails inside the run
    assert "7 units but the data has 10 classes" in capsys.readouterr().err
    assert (out / "report.json").read_text() == '{"good": true}'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.yaml", "out"]  # no temp dirs left behind


def test_console_script_exit_code_and_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "kdhw.cli", "verify", "/nonexistent", "--inputs", "x.npy"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "kdhw verify: error: /nonexistent: not a directory"


def test_version_quiet_verbose_and_progress_flags(capsys: pytest.CaptureFixture[str]) -> None:
    import kdhw

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"kdhw {kdhw.__version__}"
    assert main(["-q", "-v", "boards"]) == 2 and "exclude each other" in capsys.readouterr().err
    # -q silences what a verb says, not what it is for: config and boards still print
    assert main(["-q", "config"]) == 0 and "data:" in capsys.readouterr().out
    assert main(["boards", "-q"]) == 0 and "icebreaker" in capsys.readouterr().out
    from kdhw.cli import _settle_output, build_parser

    def progress(*argv: str) -> bool:
        a = build_parser().parse_args([*argv, "run", "--out", "x"])
        _settle_output(a)
        return not a.no_progress

    assert progress("--progress") and not progress("--progress", "-q")
    assert not progress()  # pytest's stderr is not a terminal: no bars unless asked
    a = build_parser().parse_args(["run", "--out", "x", "--progress", "--no-progress"])
    _settle_output(a)
    assert a.no_progress


def test_every_flag_of_every_verb_has_help() -> None:
    import argparse

    from kdhw.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{verb} {act.option_strings or act.dest}" for verb, sp in sub.choices.items() for act in sp._actions
               if not isinstance(act, argparse._HelpAction) and not act.help]
    missing += [str(a.option_strings) for a in p._actions
                if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing, missing


def test_config_schema_is_a_json_schema_the_default_config_meets(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import jsonschema
    import yaml

    from kdhw.config import default_yaml

    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    assert not list(v.iter_errors(yaml.safe_load(default_yaml())))
    assert list(v.iter_errors({"distill": {"temprature": 2}}))  # the typo kdhw refuses, an editor flags too
    assert list(v.iter_errors({"rtl": {"mode": "folded"}}))
    assert schema["properties"]["distill"]["properties"]["epochs"] == {
        "description": "epochs of the plain arms (function matching: x epochs_factor)", "type": "integer", "default": 60}
