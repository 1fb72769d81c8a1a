"""Process-wide library settings, held only for the duration of one kdhw call.

kdhw is used from notebooks and scripts as well as from its CLI, so a call must leave the caller's
process as it found it: a setting a stage needs is taken in a ``with`` block and restored on the way out.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


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
