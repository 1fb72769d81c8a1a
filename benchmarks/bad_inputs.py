"""Bad inputs a user can hand kdhw, each tried through the real CLI: how many get one line on stderr and exit 2.

Every case writes its own small bad file or config into a scratch folder and runs `kdhw distill` (or the
verb named) on it, in this process, capturing stdout/stderr.  A case passes when the command exits 2 with
exactly one line on stderr that contains the case's expected words; a traceback, a crash, a success or a
second line is a failure.  ``tests/bench/test_bad_inputs.py`` runs the same catalog (``CASES``), so the count
printed here is the count the tests try.  The results (counts per kind and each case's actual message,
with the fix) go to ``benchmarks/results/bad_inputs.json``; the README's troubleshooting section is
rendered from it.

    .venv/bin/python -m benchmarks.bad_inputs [--out benchmarks/results/bad_inputs.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pickle
import struct
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from benchmarks.common import RESULTS

# a run that is not refused must cost seconds, not minutes
QUICK = {"teacher": {"arch": "mlp", "hidden": 8, "epochs": 1}, "distill": {"epochs": 1, "method": "none"}}
DENSE = {"layers": [{"type": "dense", "units": 3}]}


@dataclass(frozen=True)
class Case:
    kind: str  # the README's troubleshooting groups
    name: str
    make: Callable[[Path], list[str]]  # writes the bad input under the folder, returns the CLI argv
    expect: str  # words the one stderr line must contain
    fix: str  # what the user does about it (README)


def _cfg(tmp: Path, raw: dict[str, Any], name: str = "c.yaml") -> str:
    full = {**QUICK, **raw}
    full["student"] = {**DENSE, **raw.get("student", {})}
    p = tmp / name
    p.write_text(yaml.safe_dump(full))
    return str(p)


def _distill(tmp: Path, data: dict[str, Any], **sections: Any) -> list[str]:
    return ["distill", _cfg(tmp, {"data": data, **sections}), "--out", str(tmp / "out"), "--no-progress"]


def _npz(tmp: Path, name: str = "d.npz", n: int = 60, cols: int = 8, lo: float = 0.0, hi: float = 1.0,
         **arrays: Any) -> Path:
    rng = np.random.default_rng(0)
    base = {"x": rng.uniform(lo, hi, size=(n, cols)).astype(np.float32), "y": np.arange(n) % 3}
    base.update(arrays)
    p = tmp / name
    np.savez(p, **{k: v for k, v in base.items() if v is not None})
    return p


def _npz_case(**kw: Any) -> Callable[[Path], list[str]]:
    return lambda t: _distill(t, {"dataset": "npz", "path": str(_npz(t, **kw))})


def _csv(tmp: Path, text: str) -> list[str]:
    (tmp / "d.csv").write_text(text)
    return _distill(tmp, {"dataset": "mitbih_csv", "path": str(tmp / "d.csv")})


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def _idx(tmp: Path, images: bytes, labels: bytes | None) -> list[str]:
    (tmp / "t-images-idx3-ubyte").write_bytes(images)
    if labels is not None:
        (tmp / "t-labels-idx1-ubyte").write_bytes(labels)
    return _distill(tmp, {"dataset": "idx", "path": str(tmp / "t-images-idx3-ubyte")})


IMGS = np.random.default_rng(0).integers(0, 256, size=(60, 6, 6), dtype=np.uint8)
LABS = (np.arange(60) % 3).astype(np.uint8)


def _folder(tmp: Path, classes: dict[str, list[tuple[str, Any]]], size: Any = (6, 6)) -> list[str]:
    from PIL import Image

    root = tmp / "images"
    for c, files in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for name, content in files:
            if isinstance(content, bytes):
                (root / c / name).write_bytes(content)
            else:
                Image.fromarray(np.full(content, 128, np.uint8)).save(root / c / name)
    data: dict[str, Any] = {"dataset": "image_folder", "path": str(root)}
    if size is not None:
        data["image_size"] = list(size)
    return _distill(tmp, data, teacher={**QUICK["teacher"]})


def _pngs(n: int, shape: tuple[int, ...] = (6, 6)) -> list[tuple[str, Any]]:
    return [(f"{i}.png", shape) for i in range(n)]


class _Evil:
    def __reduce__(self) -> Any:
        import os

        return (os.system, ("echo pwned",))


def _cifar(tmp: Path, blob: bytes, name: str = "data_batch_1") -> list[str]:
    (tmp / name).write_bytes(blob)
    return _distill(tmp, {"dataset": "cifar10", "path": str(tmp / name)})


def _unlab(tmp: Path, make: Callable[[Path], Path], **student: Any) -> list[str]:
    lab = _npz(tmp)
    extra = make(tmp)
    return _distill(tmp, {"dataset": "npz", "path": str(lab), "unlabeled": str(extra)}, **({"student": student}
                                                                                          if student else {}))


def _garbage(tmp: Path, name: str, dataset: str) -> list[str]:
    (tmp / name).write_bytes(b"not what the name says")
    return _distill(tmp, {"dataset": dataset, "path": str(tmp / name)})


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _zeros_csv(p: Path, cols: int) -> Path:
    np.savetxt(p, np.zeros((10, cols)), delimiter=",")
    return p


def _raw_cfg(tmp: Path, text: str) -> list[str]:
    (tmp / "c.yaml").write_text(text)
    return ["distill", str(tmp / "c.yaml"), "--out", str(tmp / "out"), "--no-progress"]


CASES: list[Case] = [
    # ---- .npz files
    Case("npz", "file not found", lambda t: _distill(t, {"dataset": "npz", "path": str(t / "missing.npz")}),
         "data file not found", "check data.path (relative paths are from the directory you run kdhw in)"),
    Case("npz", "not an npz", lambda t: _garbage(t, "d.npz", "npz"),
         "not a readable .npz file", "write it with numpy.savez(path, x=inputs, y=labels)"),
    Case("npz", "no x array", _npz_case(x=None, inputs_wrong=np.zeros(3)), "expected 'x'",
         "name the input array x (or X, inputs) and the labels y"),
    Case("npz", "fractional labels", _npz_case(y=np.linspace(0, 2, 60)), "labels must be a 1D array of non-negative integers",
         "store class indices 0 .. C-1 as integers"),
    Case("npz", "negative labels", _npz_case(y=np.arange(60) % 3 - 1), "non-negative integers",
         "store class indices 0 .. C-1 as integers"),
    Case("npz", "x of one dimension", _npz_case(x=np.zeros(60, np.float32)), "expected (N, F) rows",
         "x must be (N, F) rows, (N, C, L) signals or (N, C, H, W) images"),
    Case("npz", "x not numeric", _npz_case(x=np.array([["a"] * 8] * 60)), "expected real numbers",
         "store x as a float or integer array"),
    Case("npz", "NaN inputs", _npz_case(x=np.where(np.eye(60, 8) > 0, np.nan, 0.5).astype(np.float32)),
         "NaN or infinite", "drop or impute the rows with NaN / inf before saving"),
    Case("npz", "labels and rows disagree", _npz_case(y=np.arange(59) % 3), "input rows but 59 labels",
         "give one label per row of x"),
    Case("npz", "fewer than 30 rows", _npz_case(n=20, y=np.arange(20) % 2), "need at least 30",
         "a train/val/test split needs at least 30 rows"),
    Case("npz", "values outside the input format", _npz_case(lo=-1.9, hi=3.8),
         "use {bits: 8, int_bits: 2, signed: true}",
         "set student.input to the format the message names (or auto), or allow_clip to accept the clipping"),
    Case("npz", "conv1d student on flat layout",
         lambda t: _distill(t, {"dataset": "npz", "path": str(_npz(t)), "layout": "flat"},
                            student={"layers": [{"type": "conv1d", "filters": 2}, {"type": "dense", "units": 3}]}),
         "set data.layout: signal", "set data.layout: signal, or drop data.layout (the student's first layer decides)"),
    Case("npz", "image layout on flat rows",
         lambda t: _distill(t, {"dataset": "npz", "path": str(_npz(t, cols=16))}, teacher={"arch": "cnn2d", "epochs": 1}),
         "x.reshape(N, 1, 4, 4)", "save images as (N, H, W) or (N, C, H, W), or use teacher.arch: cnn1d / mlp"),
    # ---- MIT-BIH style CSV
    Case("csv", "file not found", lambda t: _distill(t, {"dataset": "mitbih_csv", "path": str(t / "none.csv")}),
         "not found", "check data.path"),
    Case("csv", "not numeric", lambda t: _csv(t, "0.1,0.2,abc\n" * 40), "not a numeric CSV",
         "numbers only, comma-separated, no header row"),
    Case("csv", "no label column", lambda t: _csv(t, "0.5\n" * 40), "a row needs samples and a label",
         "put the class index in the last column"),
    Case("csv", "fractional label column", lambda t: _csv(t, "0.1,0.2,0.5\n" * 40),
         "labels must be a 1D array of non-negative integers", "the last column holds the class index"),
    # ---- MNIST IDX
    Case("idx", "bad magic number", lambda t: _idx(t, b"\x08\x01\x02\x03" + bytes(40), None), "bad magic number",
         "give the uncompressed or .gz IDX file itself"),
    Case("idx", "unknown data type", lambda t: _idx(t, _idx_bytes(IMGS, 0x07), None), "IDX data type 0x07 unknown",
         "the IDX header's third byte must be one of the IDX types"),
    Case("idx", "truncated", lambda t: _idx(t, _idx_bytes(IMGS)[:-10], None), "but the file holds",
         "the download is incomplete: fetch the file again"),
    Case("idx", "no labels file", lambda t: _idx(t, _idx_bytes(IMGS), None), "no labels found",
         "put the matching ...-labels-idx1-ubyte file beside the images"),
    Case("idx", "labels count", lambda t: _idx(t, _idx_bytes(IMGS), _idx_bytes(LABS[:50])), "50 labels for 60 images",
         "use the labels file that belongs to these images"),
    # ---- image folders
    Case("image_folder", "not a folder", lambda t: _distill(t, {"dataset": "image_folder", "path": str(t / "nope")}),
         "needs a folder with one subfolder per class", "point data.path at the folder holding one subfolder per class"),
    Case("image_folder", "one class", lambda t: _folder(t, {"cats": _pngs(40)}), "found 1 class subfolder",
         "one subfolder per class, at least two"),
    Case("image_folder", "empty class", lambda t: _folder(t, {"cats": _pngs(20), "dogs": []}),
         "class folder holds no images", "remove the empty class folder or add its images"),
    Case("image_folder", "not an image", lambda t: _folder(t, {"cats": _pngs(20) + [("notes.txt", b"x")],
                                                               "dogs": _pngs(20)}),
         "not an image kdhw reads", "move other files out of the class folders (.png, .jpg, .jpeg are read)"),
    Case("image_folder", "broken image", lambda t: _folder(t, {"cats": _pngs(20) + [("bad.png", b"\x89PNG...")],
                                                               "dogs": _pngs(20)}),
         "not a readable image", "re-export or delete the file"),
    Case("image_folder", "sizes differ", lambda t: _folder(t, {"cats": _pngs(20), "dogs": _pngs(20, (8, 8))}, size=None),
         "set data.image_size", "set data.image_size: [H, W] to resize every image"),
    # ---- CIFAR-10 python batches
    Case("cifar10", "hostile pickle", lambda t: _cifar(t, pickle.dumps({b"data": _Evil()}, protocol=2)),
         "refused to unpickle", "use the batches from the official cifar-10-python archive"),
    Case("cifar10", "not a pickle", lambda t: _cifar(t, b"hello"), "not a readable CIFAR-10 python batch",
         "give a data_batch_N / test_batch file or their folder"),
    Case("cifar10", "wrong content", lambda t: _cifar(t, pickle.dumps([1, 2, 3], protocol=2)),
         "a CIFAR-10 batch is a dict", "give a data_batch_N / test_batch file or their folder"),
    Case("cifar10", "folder without batches", lambda t: _distill(t, {"dataset": "cifar10", "path": str(_mkdir(t / "c"))}),
         "no data_batch_* or test_batch", "point data.path at cifar-10-batches-py/"),
    # ---- transfer set (data.unlabeled)
    Case("unlabeled", "file not found", lambda t: _unlab(t, lambda d: d / "none.npz"), "data.unlabeled",
         "check data.unlabeled"),
    Case("unlabeled", "holds labels", lambda t: _unlab(t, lambda d: _npz(d, "u.npz")), "holds labels",
         "drop 'y' from the transfer file (or use data.labels for a label budget)"),
    Case("unlabeled", "wrong shape", lambda t: _unlab(t, lambda d: _npz(d, "u.npz", cols=5, y=None)),
         "a transfer set must match the labelled inputs", "the transfer rows must have the labelled rows' shape"),
    Case("unlabeled", "label column in CSV", lambda t: _unlab(t, lambda d: _zeros_csv(d / "u.csv", 9)),
         "a label column?", "drop the label column from the transfer CSV"),
    Case("unlabeled", "outside the input format", lambda t: _unlab(t, lambda d: _npz(d, "u.npz", lo=5, hi=6, y=None)),
         "clips", "the transfer set is held to student.input like the labelled splits: widen the format"),
    # ---- the config's data and input keys
    Case("config", "unknown data key", lambda t: _distill(t, {"dataset": "digits", "layuot": "flat"}),
         "unknown key 'data.layuot'", "fix the key's spelling (the message lists the allowed keys)"),
    Case("config", "bad layout", lambda t: _distill(t, {"dataset": "digits", "layout": "rows"}),
         "data.layout = 'rows' is not allowed", "layout is flat, signal or image"),
    Case("config", "bad image size", lambda t: _distill(t, {"dataset": "digits", "image_size": [16]}),
         "data.image_size = [16] must be [height, width]", "give [height, width]"),
    Case("config", "dataset without path", lambda t: _distill(t, {"dataset": "npz"}), "needs data.path",
         "give data.path"),
    Case("config", "bad input key", lambda t: _distill(t, {"dataset": "digits"}, student={"input": {"bitz": 8}}),
         "unknown key student.input.bitz", "student.input takes bits, int_bits, signed, allow_clip (or auto)"),
    Case("config", "allow_clip above 1", lambda t: _distill(t, {"dataset": "digits"},
                                                              student={"input": {"bits": 8, "allow_clip": 5}}),
         "allow_clip = 5 must be a share in [0, 1]", "allow_clip is a share: 0.05 means 5 %"),
    Case("config", "auto cannot hold the data",
         lambda t: _distill(t, {"dataset": "npz", "path": str(_npz(t, lo=-5e5, hi=5e5))}, student={"input": "auto"}),
         "more than 8 bits can hold", "scale the data, or give more student.input.bits"),
    Case("config", "YAML syntax", lambda t: _raw_cfg(t, "data:\n  dataset: [digits\n"), "not valid YAML",
         "fix the YAML at the line the message gives"),
]


def run_case(case: Case, tmp: Path) -> dict[str, Any]:
    """Run one case through ``kdhw.cli.main`` in this process; what the user would see, and the verdict."""
    from kdhw.cli import main

    argv = case.make(tmp)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    except Exception:  # a crash: the user would see a traceback
        rc, err = -1, io.StringIO(traceback.format_exc())
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    ok = rc == 2 and len(lines) == 1 and case.expect in lines[0] and "Traceback" not in lines[0]
    return {"kind": case.kind, "name": case.name, "exit_code": rc, "stderr_lines": len(lines),
            "message": lines[0] if len(lines) == 1 else "\n".join(lines[-3:]), "one_line_exit_2": ok, "fix": case.fix}


def main() -> None:
    import warnings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "bad_inputs.json"))
    a = ap.parse_args()
    results = []
    with warnings.catch_warnings():
        for i, case in enumerate(CASES):
            with tempfile.TemporaryDirectory() as td:
                r = run_case(case, Path(td))
            # paths of the scratch folder say nothing; keep the message readable and stable
            r["message"] = r["message"].replace(td, "DIR")
            results.append(r)
            print(f"{'ok  ' if r['one_line_exit_2'] else 'FAIL'} {case.kind:12s} {case.name:32s} "
                  f"exit {r['exit_code']}: {r['message'][:110]}", flush=True)
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        k = by_kind.setdefault(r["kind"], {"tried": 0, "one_line_exit_2": 0})
        k["tried"] += 1
        k["one_line_exit_2"] += int(r["one_line_exit_2"])
    res = {"script": "benchmarks/bad_inputs.py", "tried": len(results),
           "one_line_exit_2": sum(r["one_line_exit_2"] for r in results), "by_kind": by_kind, "cases": results}
    from kdhw.util.atomic import write_json

    write_json(Path(a.out), res)
    print(f"\n{res['one_line_exit_2']} of {res['tried']} bad inputs answered with one line on stderr and exit 2 "
          f"-> {a.out}")


if __name__ == "__main__":
    main()
