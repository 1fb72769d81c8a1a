"""What both cocotb benches read the same way: the run folder the runner wrote (``$KDHW_SIM_DIR``) and its
hex files.  Imported by name from the bench modules, which the runner puts on ``sys.path``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CLOCK_NS = 10
MAX_REPORTED_MISMATCHES = 20


def setup() -> tuple[Path, dict[str, Any]]:
    """The run folder and its ``config.json``."""
    d = Path(os.environ["KDHW_SIM_DIR"])
    return d, json.loads((d / "config.json").read_text())


def words(path: Path) -> list[int]:
    """One hex word per line (what the runner packed with ``kdhw.hw.rtl``'s port layout)."""
    return [int(line, 16) for line in path.read_text().split()]
