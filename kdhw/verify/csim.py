"""Build and run an hls4ml project's C-sim exactly as synthesis will see it.

hls4ml's own C-sim loads weights from ``firmware/weights/*.txt`` at run time, while synthesis compiles the
initialisers in the ``*.h`` headers (the ``#else`` branch of ``#ifndef __SYNTHESIS__``).  A project whose
two copies disagree passes C-sim and still ships wrong hardware.  kdhw therefore compiles a private copy
of the project's *current* sources with the header weights switched on and the txt loader switched off,
and runs that.  It never reuses a library left in the project, so a stale build cannot hide an edit.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kdhw.errors import InputError, ToolMissing

_LOAD_BLOCK = re.compile(r"#ifndef __SYNTHESIS__(\s*static bool loaded_weights)")
_WEIGHT_DECL = re.compile(r"#ifndef __SYNTHESIS__\s*\n[^\n]*;\s*\n#else\s*\n")
_NUM = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def header_weights(project_dir: Path) -> dict[str, np.ndarray]:
    """The weight values synthesis compiles (initialiser lists in ``firmware/weights/*.h``)."""
    out = {}
    for h in sorted((project_dir / "firmware" / "weights").glob("*.h")):
        m = re.search(r"=\s*\{(.*?)\};", h.read_text(), flags=re.S)
        if m:
            out[h.stem] = np.array([float(v) for v in _NUM.findall(m.group(1))])
    return out


def txt_weights(project_dir: Path) -> dict[str, np.ndarray]:
    """The weight values hls4ml's own C-sim loads at run time."""
    return {
        t.stem: np.array([float(v) for v in _NUM.findall(t.read_text())])
        for t in sorted((project_dir / "firmware" / "weights").glob("*.txt"))
    }


def weight_file_mismatches(project_dir: Path) -> list[dict[str, Any]]:
    """Weight arrays whose ``.h`` (synthesis) and ``.txt`` (hls4ml C-sim) copies differ."""
    hw, tw = header_weights(project_dir), txt_weights(project_dir)
    bad = []
    for name in sorted(set(hw) | set(tw)):
        a, b = hw.get(name), tw.get(name)
        if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b):
            idx = None
            if a is not None and b is not None and a.shape == b.shape:
                idx = int(np.flatnonzero(a != b)[0])
            bad.append({"array": name, "index": idx})
    return bad


class CSim:
    """A C-sim library compiled from the project's current sources with synthesis' (header) weights."""

    def __init__(self, project_dir: str | Path, meta: dict[str, Any]) -> None:
        self.project_dir = Path(project_dir)
        self.meta = meta
        self.name = meta["project_name"]
        self._tmp = tempfile.TemporaryDirectory(prefix="kdhw-csim-")
        self.lib = self._build(Path(self._tmp.name))

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "CSim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _build(self, work: Path) -> ctypes.CDLL:
        if shutil.which("g++") is None:
            raise ToolMissing("g++ not found; the C-sim needs it (apt-get install g++)")
        src = self.project_dir
        for part in ("firmware", f"{self.name}_bridge.cpp"):
            if not (src / part).exists():
                raise InputError(f"{src}: HLS project is missing {part}")
        shutil.copytree(src / "firmware", work / "firmware", ignore=shutil.ignore_patterns("*.so"))
        shutil.copy(src / f"{self.name}_bridge.cpp", work)
        top = work / "firmware" / f"{self.name}.cpp"
        text, n = _LOAD_BLOCK.subn(r"#if 0\1", top.read_text())
        if n != 1:
            raise InputError(f"{top}: could not find hls4ml's weight-loading block; was the file edited by hand?")
        top.write_text(text)
        for h in (work / "firmware" / "weights").glob("*.h"):
            t, k = _WEIGHT_DECL.subn("#if 0\n#else\n", h.read_text(), count=1)
            if k:
                h.write_text(t.replace("#if 0\n#else\n", "#if 1\n", 1))
        flags = ["-O2", "-fPIC", "-std=c++17", "-fno-gnu-unique", f"-I{work / 'firmware' / 'ap_types'}",
                 f"-I{work}", f"-DWEIGHTS_DIR=\"{work / 'firmware' / 'weights'}\""]
        jobs = [(top, work / "top.o"), (work / f"{self.name}_bridge.cpp", work / "bridge.o")]

        def cc(job: tuple[Path, Path]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["g++", *flags, "-c", str(job[0]), "-o", str(job[1])],
                                  capture_output=True, text=True, cwd=work)

        with ThreadPoolExecutor(2) as ex:
            for r in ex.map(cc, jobs):
                if r.returncode:
                    first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr[:200])
                    raise InputError(f"{src}: C-sim does not compile: {first}")
        so = work / f"{self.name}_kdhw.so"
        r = subprocess.run(["g++", "-shared", str(work / "top.o"), str(work / "bridge.o"), "-o", str(so)],
                           capture_output=True, text=True)
        if r.returncode:
            raise InputError(f"{src}: C-sim does not link: {r.stderr.strip()[:200]}")
        lib = ctypes.CDLL(str(so))
        fn = getattr(lib, f"{self.name}_double")
        fn.restype = None
        fn.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
        self._fn = fn
        return lib

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run every row (channels-first, like the QONNX input) through the C-sim."""
        n_in, n_out = self.meta["n_inputs"], self.meta["n_outputs"]
        xs = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), n_in), dtype=np.float64)
        out = np.zeros((len(x), n_out), dtype=np.float64)
        dp = ctypes.POINTER(ctypes.c_double)
        for i in range(len(xs)):
            self._fn(xs[i].ctypes.data_as(dp), out[i].ctypes.data_as(dp))
        return out

    def trace(self, row: np.ndarray) -> dict[str, np.ndarray]:
        """Every traced layer's output for one input row (hls4ml keeps only the last call's values)."""

        class TraceData(ctypes.Structure):
            _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p)]

        sizes = {l["name"]: int(np.prod(l["shape"])) for l in self.meta["layers"]}
        self.lib.allocate_trace_storage.argtypes = [ctypes.c_size_t]
        self.lib.allocate_trace_storage(ctypes.sizeof(ctypes.c_double))
        try:
            self.predict(row[None])
            arr = (TraceData * len(sizes))()
            self.lib.collect_trace_output.argtypes = [ctypes.POINTER(TraceData)]
            self.lib.collect_trace_output(arr)
            out = {}
            for t in arr:
                if t.name is None:
                    continue
                name = t.name.decode()
                ptr = ctypes.cast(t.data, ctypes.POINTER(ctypes.c_double))
                out[name] = np.ctypeslib.as_array(ptr, shape=(sizes[name],)).copy()
            return out
        finally:
            self.lib.free_trace_storage()
