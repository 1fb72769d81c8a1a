"""Data where users keep it, held to the hardware: the input contract, the layout rule, image folders and
CIFAR-10 batches, and the split's guarantees.  Every file is one the test writes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kdhw.config import validate
from kdhw.contract import IOFormat, measure, output_saturation
from kdhw.errors import InputError
from kdhw.train.data import load_data, load_dataset, load_file, split

CONV1D = [{"type": "conv1d", "filters": 2, "kernel": 3}, {"type": "relu"}, {"type": "dense", "units": 5}]
DENSE = [{"type": "dense", "units": 5}]


def beats(path: Path, n: int = 300, cols: int = 64, seed: int = 0) -> Path:
    """Heartbeat-like rows: one beat of ``cols`` samples per row, values from -1.9 to 3.8, 5 classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.9, 0.9, size=(n, cols)).clip(-1.9, 3.8)
    x[0, 0], x[1, 1] = -1.9, 3.8
    np.savez(path, x=x.astype(np.float32), y=np.arange(n) % 5)
    return path


def cfg_for(path: Path, layers: list[dict[str, Any]], teacher: str = "mlp", **student: Any) -> Any:
    return validate({"data": {"dataset": "npz", "path": str(path)}, "teacher": {"arch": teacher},
                     "student": {"layers": layers, **student}}, "c.yaml")


# ---------------------------------------------------------------- input contract

def test_a_format_that_clips_the_data_is_refused_with_the_format_that_fits(tmp_path: Path) -> None:
    p = beats(tmp_path / "beats.npz")
    with pytest.raises(InputError) as e:
        load_data(cfg_for(p, DENSE))
    msg = str(e.value)
    assert msg.startswith("c.yaml: student.input = {bits: 8, int_bits: 1, signed: false} clips ")
    assert "beats.npz" in msg and "range -1.9 .. 3.8" in msg and "the format holds 0 .. 1.99" in msg
    assert msg.endswith(f"use {{bits: 8, int_bits: 2, signed: true}} or set student.input.allow_clip: "
                        f"{msg.split('allow_clip: ')[1]}") and "\n" not in msg
    # the format the message names loads, with nothing clipped
    good = yaml.safe_load(msg.split("use ")[1].split(" or set")[0])
    cfg = cfg_for(p, DENSE, input=good)
    d = load_data(cfg)
    rec = d.manifest["input_contract"]
    assert rec["format"] == {"bits": 8, "int_bits": 2, "signed": True} and rec["max_clipped_share"] == 0.0
    assert rec["hls_type"] == "fixed<8,3,RND_CONV,SAT>" and set(rec["splits"]) == {"train", "val", "test"}
    assert rec["all"]["min"] == pytest.approx(-1.9) and rec["all"]["max"] == pytest.approx(3.8)
    # the documented override: allow_clip above the clipped share lets the run go on and records the share
    allow = float(msg.split("allow_clip: ")[1])
    d = load_data(cfg_for(p, DENSE, input={"bits": 8, "int_bits": 1, "signed": False, "allow_clip": allow}))
    share = d.manifest["input_contract"]["max_clipped_share"]
    assert 0.2 < share <= allow and d.manifest["input_contract"]["allow_clip"] == allow


def test_mnist1d_with_the_default_input_names_the_signed_format() -> None:
    """The real MNIST-1D is centred with unit spread (about -5.5 .. 4.5): the unsigned default input is refused
    and the message names the signed format that holds it."""
    raw = {"data": {"dataset": "mnist1d"}, "teacher": {"arch": "cnn1d"}}
    with pytest.raises(InputError, match=r"clips 5\d\.\d % of the values of the mnist1d data set .*use "
                                         r"\{bits: 8, int_bits: 3, signed: true\} or set"):
        load_data(validate(raw, "c.yaml"))
    ok = validate({**raw, "student": {"input": {"bits": 8, "int_bits": 3, "signed": True}}}, "c.yaml")
    assert load_data(ok).manifest["input_contract"]["max_clipped_share"] == 0.0


def test_measure_counts_clamped_values_and_idle_top_bits() -> None:
    f = IOFormat(8, 1, False)  # codes 0..255, step 2^-7: 0 .. 1.9921875
    x = np.array([-0.01, -0.003, 0.0, 0.5, 1.99609, 1.9961, 3.0, 0.25])
    m = measure(x, f)
    # -0.003 and 1.99609 are within half a step of the range (only rounded); -0.01, 1.9961, 3.0 are clamped
    assert (m["clipped_low"], m["clipped_high"]) == (1, 2) and m["clipped_share"] == 3 / 8
    # 3.0 needs int_bits 2; -0.01 rounds to 0 instead of clamping only with a step of 2^-5 (int_bits 3)
    assert m["headroom_bits"] == -2 and measure(np.array([0.0, 3.0]), f)["headroom_bits"] == -1
    small = measure(np.array([0.0, 0.3, 0.49]), f)
    assert small["headroom_bits"] == 2 and small["top_bit_idle_share"] == 1.0 and small["clipped_share"] == 0


def test_auto_input_reaches_qonnx_hls_and_rtl(tmp_path: Path) -> None:
    """``student.input: auto`` is resolved from the training rows; the QONNX input Quant, the HLS input type
    and rtl.json's input format all follow it."""
    from kdhw.hw.export import export_qonnx, hls_input_type, load_qonnx
    from kdhw.hw.hls import build_hls_project
    from kdhw.hw.rtl import qonnx_to_rtl
    from kdhw.train.distill import student_input, train_arm

    p = beats(tmp_path / "beats.npz")
    cfg = cfg_for(p, CONV1D, input="auto")
    d = load_data(cfg)
    assert cfg.student["input"] == {"bits": 8, "int_bits": 2, "signed": True}
    assert d.shape == (1, 64) and d.manifest["layout"] == {"layout": "signal",
                                                            "why": "the student's first layer is conv1d"}
    assert d.manifest["input_contract"]["auto"] == ["int_bits", "signed"]
    dcfg = validate({"distill": {"epochs": 1, "method": "none"}}).distill
    arm = train_arm("scratch", cfg.student, dcfg, d, None, "none", progress=False)
    onnx = export_qonnx(arm.model, student_input(d.x_test, cfg.student).shape[1:], tmp_path / "m.onnx")
    assert hls_input_type(load_qonnx(onnx)) == "fixed<8,3,RND_CONV,SAT>"
    meta = build_hls_project(onnx, tmp_path / "hls", part="xc7z020clg400-1", clock_period_ns=10, compile_csim=False)
    assert meta["input_type"] == "fixed<8,3,RND_CONV,SAT>"
    rtl = qonnx_to_rtl(onnx, tmp_path / "rtl")
    fin = json.loads((tmp_path / "rtl" / "rtl.json").read_text())["input_format"]
    assert (fin["bits"], fin["int_bits"], fin["signed"]) == (8, 2, True) and rtl["latency_cycles"] >= 1
    # the trained student's logits against the output format: measured, and the tie count checked by hand
    sat = output_saturation(arm.model, student_input(d.x_test, cfg.student))
    assert sat["rows"] == len(d.x_test) and sat["format"]["bits"] == 8
    assert 0 <= sat["rows_tied_at_max_share"] <= sat["rows_top_saturated_share"]


def test_output_saturation_counts_ties_at_the_saturated_maximum() -> None:
    import torch

    from kdhw.train.student import build_student

    spec = {"input": {"bits": 8, "int_bits": 1, "signed": True}, "output": {"bits": 3},
            "layers": [{"type": "dense", "units": 3, "bias": False}]}
    m = build_student(spec, (2,), 3)
    with torch.no_grad():
        m.layers[1].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    m.eval()
    x = np.array([[0.1, 0.0], [1.5, 0.0], [1.5, 1.5], [0.0, 0.2]], dtype=np.float32)
    sat = output_saturation(m, x)
    lo, hi = sat["range"]
    z = x @ np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).T  # the float logits, before the output quantizer
    step = (hi - lo) / 7
    want_sat = (z > hi + step / 2) | (z < lo - step / 2)
    assert want_sat.any() and not want_sat.all(), "the case must saturate some logits and not others"
    assert sat["logit_saturated_share"] == pytest.approx(want_sat.mean())
    # classes 0 and 1 always tie (same weights): a tie at a saturated top is rows 1 and 2 once the clamp bites
    want_ties = np.mean([want_sat[i, 0] and (want_sat[i, 2] or z[i, 2] < z[i, 0]) for i in range(4)])
    assert sat["rows_tied_at_max_share"] == pytest.approx(want_ties) and sat["warn"] == (want_ties > 0.01)


def test_the_transfer_set_is_held_to_the_same_format(tmp_path: Path) -> None:
    p = beats(tmp_path / "beats.npz")
    np.savez(tmp_path / "more.npz", x=np.full((20, 64), 7.5, np.float32))
    raw = {"data": {"dataset": "npz", "path": str(p), "unlabeled": str(tmp_path / "more.npz")},
           "teacher": {"arch": "mlp"}, "student": {"layers": DENSE, "input": {"bits": 8, "int_bits": 2, "signed": True}}}
    with pytest.raises(InputError, match=r"\(transfer set: 100\.0 %;.* use \{bits: 8, int_bits: 3, signed: true\}"):
        load_data(validate(raw, "c.yaml"))


# ---------------------------------------------------------------- layout

def _write(kind: str, tmp: Path, x: np.ndarray, y: np.ndarray) -> Path:
    import struct

    if kind == "npz":
        np.savez(tmp / "d.npz", x=x, y=y)
        return tmp / "d.npz"
    if kind == "mitbih_csv":
        np.savetxt(tmp / "d.csv", np.column_stack([x, y]), delimiter=",")
        return tmp / "d.csv"
    arr = np.round(x * 50).astype(np.uint8)
    (tmp / "d-images-idx2-ubyte").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">II", *arr.shape) + arr.tobytes())
    (tmp / "d-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", len(y)) + y.astype(np.uint8).tobytes())
    return tmp / "d-images-idx2-ubyte"


@pytest.mark.parametrize("kind", ["npz", "mitbih_csv", "idx"])
def test_one_layout_rule_for_npz_csv_and_idx(tmp_path: Path, kind: str) -> None:
    """Rows of 64 (or 65) values: signals for a Conv1D student, flat for a dense one, whatever the count."""
    rng = np.random.default_rng(1)
    for cols in (64, 65):
        x = rng.uniform(0, 1, size=(60, cols)).astype(np.float32)
        y = np.arange(60) % 3
        p = _write(kind, tmp_path, x, y)
        conv = validate({"data": {"dataset": kind, "path": str(p)}, "teacher": {"arch": "mlp"},
                         "student": {"layers": [*CONV1D[:2], {"type": "dense", "units": 3}]}}, "c.yaml")
        assert load_data(conv).shape == (1, cols)
        dense = validate({"data": {"dataset": kind, "path": str(p)}, "teacher": {"arch": "mlp"},
                          "student": {"layers": [{"type": "dense", "units": 3}]}}, "c.yaml")
        assert load_data(dense).shape == (cols,)
        sig = validate({"data": {"dataset": kind, "path": str(p)}, "teacher": {"arch": "cnn1d"},
                        "student": {"layers": [{"type": "dense", "units": 3}]}}, "c.yaml")
        assert load_data(sig).shape == (1, cols)
    flat_conv = validate({"data": {"dataset": kind, "path": str(p), "layout": "flat"}, "teacher": {"arch": "mlp"},
                          "student": {"layers": [*CONV1D[:2], {"type": "dense", "units": 3}]}}, "c.yaml")
    with pytest.raises(InputError, match=r"first layer is conv1d, which reads \(channels, length\) rows, but the "
                                         r"data rows have shape \(65,\); set data.layout: signal"):
        load_data(flat_conv)


def test_image_layout_on_flat_rows_says_how_to_reshape(tmp_path: Path) -> None:
    p = beats(tmp_path / "b.npz")
    with pytest.raises(InputError, match=r"rows are 64 values each; layout image \(teacher.arch = cnn2d\) needs "
                                         r"\(N, H, W\) or \(N, C, H, W\) arrays: store them as images "
                                         r"\(e.g. x.reshape\(N, 1, 8, 8\)\)"):
        load_data(cfg_for(p, DENSE, teacher="cnn2d", input="auto"))
    np.savez(tmp_path / "img.npz", x=np.random.default_rng(0).random((40, 8, 8)).astype(np.float32),
             y=np.arange(40) % 2)
    d = load_data(validate({"data": {"dataset": "npz", "path": str(tmp_path / "img.npz")},
                            "student": {"layers": [{"type": "dense", "units": 2}]}}, "c.yaml"))
    assert d.shape == (1, 8, 8) and d.manifest["layout"]["layout"] == "image"


# ---------------------------------------------------------------- image folders and CIFAR-10

def test_image_folder_gray_and_rgb_resized(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "xray"
    for c, name in enumerate(["normal", "pneumonia"]):
        (root / name).mkdir(parents=True)
        for i in range(16):
            h, w = (20, 24) if i % 2 else (32, 32)
            arr = np.full((h, w, 3), 40 + 150 * c, np.uint8)
            arr[..., 2] = 255 * (i % 3 == 0)
            Image.fromarray(arr).save(root / name / f"{i}.{'png' if i % 4 else 'jpg'}")
    (root / "normal" / ".DS_Store").write_bytes(b"\0")
    cfg = validate({"data": {"dataset": "image_folder", "path": str(root), "image_size": [16, 12], "color": "gray"},
                    "teacher": {"arch": "cnn2d"}}, "c.yaml")
    d = load_data(cfg)
    assert d.shape == (1, 16, 12) and d.n_classes == 2 and d.manifest["classes"] == ["normal", "pneumonia"]
    x_all = np.concatenate([d.x_train, d.x_val, d.x_test])
    y_all = np.concatenate([d.y_train, d.y_val, d.y_test])
    gray = {0: 40 * (0.299 + 0.587) / 255, 1: 190 * (0.299 + 0.587) / 255}  # PIL's luma of (v, v, 0)
    for c in (0, 1):
        plain = x_all[(y_all == c)].reshape(-1, 16 * 12)
        assert np.any(np.all(np.abs(plain - gray[c]) < 0.01, axis=1)), "a uniform image keeps its gray level"
    rgb = load_data(validate({"data": {"dataset": "image_folder", "path": str(root), "image_size": [8, 8],
                                       "color": "rgb"}, "teacher": {"arch": "cnn2d"}}, "c.yaml"))
    assert rgb.shape == (3, 8, 8) and 0 <= rgb.x_train.min() and rgb.x_train.max() <= 1
    with pytest.raises(InputError, match=r"image is 20x24, the first one 32x32; set data.image_size: \[32, 32\]"):
        load_file("image_folder", root, {"color": "gray"})
    (root / "normal" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes.txt: not an image kdhw reads \(allowed: .png, .jpg, .jpeg\)"):
        load_file("image_folder", root, {"image_size": [8, 8]})
    (root / "normal" / "notes.txt").unlink()
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match=r"broken.png: not a readable image"):
        load_file("image_folder", root, {"image_size": [8, 8]})


def _cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in np.arange(n) % 10]
    with open(path, "wb") as fh:  # protocol 2 and bytes keys, like the archive's Python-2 pickles
        pickle.dump({b"batch_label": b"batch", b"labels": labels, b"data": data,
                     b"filenames": [b"f%d.png" % i for i in range(n)]}, fh, protocol=2)
    return data, labels


class _Evil:
    def __reduce__(self) -> Any:
        import os

        return (os.system, ("touch pwned",))


def test_cifar10_batches_load_and_a_hostile_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    d1, l1 = _cifar_batch(folder / "data_batch_1", 30, 0)
    d2, l2 = _cifar_batch(folder / "test_batch", 20, 1)
    x, y = load_file("cifar10", folder)
    assert x.shape == (50, 3, 32, 32) and y.tolist() == l1 + l2
    # row-major R, G, B planes of 32x32, scaled to [0, 1]
    assert np.array_equal(np.round(x[0] * 255).astype(np.uint8).reshape(-1), d1[0])
    assert np.array_equal(np.round(x[30] * 255).astype(np.uint8).reshape(-1), d2[0])
    g, _ = load_file("cifar10", folder / "data_batch_1", {"color": "gray", "image_size": [8, 8]})
    assert g.shape == (30, 1, 8, 8)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(InputError, match=r"evil: refused to unpickle (posix|os)\.system: a CIFAR-10 batch holds only"):
        load_file("cifar10", tmp_path / "evil")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- the split's guarantees

def test_splits_are_disjoint_and_cover_every_row() -> None:
    x = np.arange(300, dtype=np.float32).reshape(300, 1) * np.ones((1, 4), np.float32)  # row id in every value
    y = np.arange(300) % 3
    d = split(x, y, 0.15, 0.25, 0, "ids")
    ids = {s: getattr(d, f"x_{s}")[:, 0].astype(int) for s in ("train", "val", "test")}
    assert sum(len(v) for v in ids.values()) == 300
    assert sorted(np.concatenate(list(ids.values())).tolist()) == list(range(300))
    for s in ids:
        assert np.array_equal(getattr(d, f"y_{s}"), y[ids[s]]), f"{s}: labels left their rows"


def test_fewer_than_30_rows_is_refused_and_30_is_enough(tmp_path: Path) -> None:
    for n, ok in ((29, False), (30, True)):
        np.savez(tmp_path / f"{n}.npz", x=np.random.default_rng(0).random((n, 4)).astype(np.float32),
                 y=np.arange(n) % 2)
        cfg = validate({"data": {"dataset": "npz", "path": str(tmp_path / f"{n}.npz")}}, "c.yaml").data
        if ok:
            assert load_dataset(cfg, "c.yaml").manifest["n"] == 30
        else:
            with pytest.raises(InputError, match=r"c.yaml: data set has 29 rows; need at least 30"):
                load_dataset(cfg, "c.yaml")


def test_nan_inputs_are_refused(tmp_path: Path) -> None:
    x = np.zeros((40, 4), np.float32)
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(InputError, match=r"nan.npz: inputs contain NaN or infinite values"):
        load_dataset(validate({"data": {"dataset": "npz", "path": str(tmp_path / "nan.npz")}}).data)
