"""Board catalog: one YAML per board in ``boards/``, validated on load.

Boards are data, not code, so users add their own board by dropping a YAML next to the others (or by
pointing ``KDHW_BOARDS_DIR`` at their own folder).  Each figure carries its data-sheet source.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

DEFAULT_BOARDS_DIR: Path = Path(__file__).resolve().parents[1] / "boards"
# A wheel (non-editable install) has no repository around the package: pyproject ships the catalog as
# data files under <prefix>/share/kdhw/boards instead.
INSTALLED_BOARDS_DIR: Path = Path(sys.prefix) / "share" / "kdhw" / "boards"
VENDORS = ("xilinx", "lattice")
FAMILIES = ("zynq7000", "zynquplus", "artix7", "kintex7", "virtex7", "virtexuplus", "kintexuplus", "ice40", "ecp5")


@dataclass(frozen=True)
class Board:
    name: str
    vendor: str
    family: str
    part: str
    clock_mhz: float
    lut: int
    ff: int
    dsp: int
    bram36: float
    uram: int
    io_pins: int
    sources: tuple[str, ...]
    notes: str = ""

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


_TYPES: dict[str, Any] = {
    "name": str, "vendor": str, "family": str, "part": str, "clock_mhz": (int, float), "lut": int, "ff": int,
    "dsp": int, "bram36": (int, float), "uram": int, "io_pins": int, "sources": list, "notes": str,
}


def load_board_file(path: str | Path) -> Board:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        raise InputError(f"{p}: not a readable YAML board file") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a board file must be a mapping of {', '.join(_TYPES)}")
    for k in raw:
        if k not in _TYPES:
            raise InputError(f"{p}: unknown key '{k}'; allowed: {', '.join(_TYPES)}")
    for f in fields(Board):
        if f.name not in raw and f.name != "notes":
            raise InputError(f"{p}: missing key '{f.name}'")
    for k, t in _TYPES.items():
        v = raw.get(k, "")
        if isinstance(v, bool) or not isinstance(v, t):
            raise InputError(f"{p}: {k} = {v!r} has the wrong type")
    if raw["vendor"] not in VENDORS:
        raise InputError(f"{p}: vendor = {raw['vendor']!r}; allowed: {', '.join(VENDORS)}")
    if raw["family"] not in FAMILIES:
        raise InputError(f"{p}: family = {raw['family']!r}; allowed: {', '.join(FAMILIES)}")
    for k in ("clock_mhz", "lut", "ff", "io_pins"):
        if raw[k] <= 0:
            raise InputError(f"{p}: {k} must be > 0, got {raw[k]}")
    for k in ("dsp", "bram36", "uram"):
        if raw[k] < 0:
            raise InputError(f"{p}: {k} must be >= 0, got {raw[k]}")
    if not raw["sources"] or not all(isinstance(s, str) and s for s in raw["sources"]):
        raise InputError(f"{p}: sources must be a non-empty list of citations")
    if raw["name"] != p.stem:
        raise InputError(f"{p}: name = {raw['name']!r} must match the file name '{p.stem}'")
    return Board(**{**raw, "sources": tuple(raw["sources"]), "notes": raw.get("notes") or ""})


def boards_dir() -> Path:
    """The catalog folder: ``KDHW_BOARDS_DIR`` when set (and not empty), else the repository's ``boards/``,
    else the copy a wheel installs under ``<prefix>/share/kdhw/boards``.

    Read at every call, not once at import, so a process (a notebook, a test, a sweep driver) that sets
    the variable after importing kdhw gets the catalog it asked for.
    """
    env = os.environ.get("KDHW_BOARDS_DIR")
    if env:
        return Path(env)
    if DEFAULT_BOARDS_DIR.is_dir() or not INSTALLED_BOARDS_DIR.is_dir():
        return DEFAULT_BOARDS_DIR  # when neither exists, list_boards names the repository path
    return INSTALLED_BOARDS_DIR


def list_boards() -> list[Board]:
    d = boards_dir()
    if not d.is_dir():
        raise InputError(f"{d}: board catalog folder not found (set KDHW_BOARDS_DIR)")
    return sorted((load_board_file(p) for p in d.glob("*.yaml")), key=lambda b: b.name)


def load_board(name: str) -> Board:
    p = boards_dir() / f"{name}.yaml"
    if not p.is_file() or "/" in name:
        known = ", ".join(b.name for b in list_boards())
        raise InputError(f"unknown board '{name}'; known: {known}")
    return load_board_file(p)


def boards_table() -> str:
    rows = [("board", "vendor", "part", "MHz", "LUT", "FF", "DSP", "BRAM", "URAM", "I/O")]
    for b in list_boards():
        rows.append((b.name, b.vendor, b.part, f"{b.clock_mhz:g}", f"{b.lut:,}", f"{b.ff:,}", f"{b.dsp:,}",
                     f"{b.bram36:g}", f"{b.uram:,}", f"{b.io_pins}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
