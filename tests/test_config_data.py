"""Config validation and data loaders (each loader tested on small files the test writes)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from kdhw.config import load_config, validate
from kdhw.errors import InputError
from kdhw.train.data import load_dataset, load_file, make_mnist1d_lookalike, read_idx, split


def test_embedded_default_is_valid_and_digits() -> None:
    cfg = load_config(None)
    assert cfg.data["dataset"] == "digits" and cfg.student["layers"][0]["type"] == "dense"


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"distill": {"temprature": 2}}, r"unknown key 'distill.temprature'; allowed: alpha, augment_noise, augment_scale, augment_shift, batch_size"),
        ({"studnet": {}}, r"unknown section 'studnet'; allowed: data, teacher"),
        ({"distill": {"alpha": 1.5}}, r"distill.alpha = 1.5 must be in \[0, 1\]"),
        ({"distill": {"relu_grad_leak": 1.0}}, r"distill.relu_grad_leak = 1.0 must be in \[0, 1\)"),
        ({"hls": {"io_type": "axi"}}, r"hls.io_type = 'axi' is not allowed; choose one of: io_parallel, io_stream"),
        ({"distill": {"epochs": "ten"}}, r"distill.epochs must be an integer"),
        ({"data": {"dataset": "npz"}}, r"needs data.path"),
    ],
)
def test_bad_config_names_the_key(raw: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate(raw, "cfg.yaml")


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  dataset: [digits\n")
    with pytest.raises(InputError, match=r"bad.yaml: not valid YAML"):
        load_config(p)


def test_split_is_seeded_and_stratified() -> None:
    cfg = validate({}).data
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert np.array_equal(a.x_train, b.x_train) and a.manifest == b.manifest
    assert a.shape == (1, 8, 8) and a.n_classes == 10
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 48  # stratified: ~45 per class of 450
    c = load_dataset({**cfg, "seed": 1})
    assert not np.array_equal(a.x_train, c.x_train)


def test_mnist1d_is_the_real_mnist1d_with_its_own_test_split() -> None:
    """dataset: mnist1d is MNIST-1D (Greydanus 2020) as its package regenerates it offline: the package's
    1,000 test rows are the test split, bit for bit; validation is carved from its 4,000 train rows."""
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    cfg = validate({"data": {"dataset": "mnist1d"}}).data
    d = load_dataset(cfg)
    assert d.shape == (1, 40) and d.n_classes == 10
    assert len(d.y_test) == 1000 and len(d.y_train) + len(d.y_val) == 4000
    assert len(d.y_val) == round(cfg["val_fraction"] * 4000)
    assert np.array_equal(d.x_test, ref["x_test"].astype(np.float32)[:, None, :])
    assert np.array_equal(d.y_test, ref["y_test"])
    # train and validation are a partition of the package's train rows
    got = np.concatenate([d.x_train, d.x_val])[:, 0]
    order = np.lexsort(got.T)
    want = ref["x"].astype(np.float32)
    assert np.array_equal(got[order], want[np.lexsort(want.T)])
    m = d.manifest
    assert (m["n"], m["train"], m["val"], m["test"]) == (5000, 3400, 600, 1000) and "sha256_16" in m
    assert m["generator_args"]["seed"] == 42 and "url" not in m["generator_args"]
    # the seed moves only the validation rows; the label budget works on the train rows
    other = load_dataset({**cfg, "seed": 1})
    assert np.array_equal(other.x_test, d.x_test) and not np.array_equal(other.x_train, d.x_train)
    lab = load_dataset(validate({"data": {"dataset": "mnist1d", "labels": {"fraction": 0.1}}}).data)
    assert len(lab.y_train) + len(lab.unlab) == 3400 and len(lab.y_test) == 1000


def test_mnist1d_lookalike_is_deterministic_and_balanced() -> None:
    d = load_dataset(validate({"data": {"dataset": "mnist1d_lookalike", "mnist1d_samples": 300}}).data)
    assert d.shape == (1, 40) and d.manifest["n"] == 300 and d.n_classes == 10
    x, y = make_mnist1d_lookalike(500, seed=3)
    x2, y2 = make_mnist1d_lookalike(500, seed=3)
    assert x.shape == (500, 1, 40) and np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y).tolist() == [50] * 10
    assert np.abs(x).max() < 2.0  # inside a signed fixed<8,2> input


def test_npz_loader(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.arange(12, dtype=np.float32).reshape(3, 4), y=np.array([0, 1, 2]))
    x, y = load_file("npz", p)
    assert x.shape == (3, 4) and y.tolist() == [0, 1, 2]
    np.savez(tmp_path / "bad.npz", inputs_wrong=np.zeros(3))
    with pytest.raises(InputError, match=r"bad.npz: .npz has keys \['inputs_wrong'\]; expected 'x'"):
        load_file("npz", tmp_path / "bad.npz")


def _write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    code = {np.dtype("uint8"): 0x08}[arr.dtype]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_idx_loader_reads_mnist_format(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5], dtype=np.uint8), gz=True)
    x, y = load_file("idx", tmp_path / "train-images-idx3-ubyte.gz")
    assert x.shape == (5, 1, 4, 3) and np.allclose(x[:, 0] * 255, imgs) and y.tolist() == [3, 1, 4, 1, 5]
    (tmp_path / "junk").write_bytes(b"\x08\x01\x02\x03")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_mitbih_csv_loader(tmp_path: Path) -> None:
    p = tmp_path / "mitbih_train.csv"
    rows = np.random.default_rng(1).random((6, 187))
    labels = np.array([0, 1, 2, 3, 4, 0])
    np.savetxt(p, np.column_stack([rows, labels]), delimiter=",")
    x, y = load_file("mitbih_csv", p)
    assert x.shape == (6, 187) and y.tolist() == labels.tolist()  # rows as stored; the layout rule lays them out
    assert np.allclose(x, rows, atol=1e-6)
    (tmp_path / "t.csv").write_text("0.1,0.2,abc\n")
    with pytest.raises(InputError, match="t.csv: not a numeric CSV"):
        load_file("mitbih_csv", tmp_path / "t.csv")


def test_file_dataset_through_config(tmp_path: Path) -> None:
    x, y = make_mnist1d_lookalike(300, seed=0)
    np.savez(tmp_path / "sig.npz", x=x, y=y)
    cfg = validate({"data": {"dataset": "npz", "path": str(tmp_path / "sig.npz")}}).data
    d = load_dataset(cfg)
    assert d.shape == (1, 40) and d.manifest["n"] == 300


def test_split_needs_enough_rows() -> None:
    x = np.zeros((20, 4), np.float32)
    y = np.arange(20) % 2
    d = split(x, y, 0.2, 0.2, 0, "tiny")
    assert d.manifest["train"] + d.manifest["val"] + d.manifest["test"] == 20
