"""Board catalog: one YAML per board in ``boards/``, validated on load.

Boards are data, not code, so users add their own board by dropping a YAML next to the others (or by
pointing ``KDHW_BOARDS_DIR`` at their own folder).  Each figure carries its data-sheet source.

An optional ``pins`` mapping says where the board wires its clock, USB-serial lines, a reset button and
status LEDs (``kdhw board`` builds a bitstream only for boards that have it).  Each pin carries its own
source, because a wrong pin is a board that silently does nothing: it must be checkable against the
vendor's constraints file, line by line.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from .errors import InputError

DEFAULT_BOARDS_DIR: Path = Path(__file__).resolve().parents[1] / "boards"
# A wheel (non-editable install) has no repository around the package: pyproject ships the catalog as
# data files under <prefix>/share/kdhw/boards instead.
INSTALLED_BOARDS_DIR: Path = Path(sys.prefix) / "share" / "kdhw" / "boards"
VENDORS = ("xilinx", "lattice")
FAMILIES = ("zynq7000", "zynquplus", "artix7", "kintex7", "virtex7", "virtexuplus", "kintexuplus", "ice40", "ecp5")


PIN_ROLES_REQUIRED = ("clk", "uart_rx", "uart_tx", "button", "led0")
PIN_ROLES = (*PIN_ROLES_REQUIRED, *(f"led{i}" for i in range(1, 8)))
_PIN_KEYS = ("site", "source", "active_low")
_SITE = re.compile(r"[A-Za-z0-9]{1,8}")


class Pin(NamedTuple):
    """One board pin: its role for kdhw (``uart_rx`` is the FPGA's input from the USB-serial chip), the
    package site the constraints file names, its polarity, and where that fact comes from.

    A NamedTuple, not a dict: ``Board`` stays hashable, and ``kdhw boards --json`` prints it as a list."""

    role: str
    site: str
    active_low: bool
    source: str


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
    pins: tuple[Pin, ...] = ()

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def pin_map(self) -> dict[str, Pin]:
        """role -> Pin (empty for a board without pin data)."""
        return {p.role: p for p in self.pins}

    def leds(self) -> list[Pin]:
        """The status LEDs in order led0, led1, ..."""
        m = self.pin_map()
        return [m[f"led{i}"] for i in range(8) if f"led{i}" in m]


_TYPES: dict[str, Any] = {
    "name": str, "vendor": str, "family": str, "part": str, "clock_mhz": (int, float), "lut": int, "ff": int,
    "dsp": int, "bram36": (int, float), "uram": int, "io_pins": int, "sources": list, "notes": str, "pins": dict,
}
_OPTIONAL = ("notes", "pins")


def _load_pins(p: Path, raw: Any) -> tuple[Pin, ...]:
    """Validate a ``pins`` mapping: known roles, the required ones present, one distinct site each, a source."""
    for role in raw:
        if role not in PIN_ROLES:
            raise InputError(f"{p}: pins: unknown role {role!r}; allowed: {', '.join(PIN_ROLES)}")
    missing = [r for r in PIN_ROLES_REQUIRED if r not in raw]
    if missing:
        raise InputError(f"{p}: pins: missing {', '.join(missing)} (required: {', '.join(PIN_ROLES_REQUIRED)})")
    leds = [r for r in PIN_ROLES if r.startswith("led") and r in raw]
    if leds != [f"led{i}" for i in range(len(leds))]:
        raise InputError(f"{p}: pins: LEDs must be numbered from led0 without gaps, got {', '.join(leds)}")
    out, seen = [], {}
    for role in PIN_ROLES:
        if role not in raw:
            continue
        e = raw[role]
        if not isinstance(e, dict):
            raise InputError(f"{p}: pins.{role} must be a mapping of {', '.join(_PIN_KEYS)}")
        for k in e:
            if k not in _PIN_KEYS:
                raise InputError(f"{p}: pins.{role}: unknown key {k!r}; allowed: {', '.join(_PIN_KEYS)}")
        site = e.get("site")
        if isinstance(site, int) and not isinstance(site, bool):
            site = str(site)
        if not isinstance(site, str) or not _SITE.fullmatch(site):
            raise InputError(f"{p}: pins.{role}.site = {e.get('site')!r} must be a package pin name (letters and "
                             "digits, e.g. 35 or G2)")
        if site in seen:
            raise InputError(f"{p}: pins.{role}.site = {site!r} is already the site of pins.{seen[site]}")
        seen[site] = role
        src = e.get("source")
        if not isinstance(src, str) or not src.strip():
            raise InputError(f"{p}: pins.{role}.source must cite where the pin comes from (a constraints file, "
                             "a schematic)")
        low = e.get("active_low", False)
        if not isinstance(low, bool):
            raise InputError(f"{p}: pins.{role}.active_low = {low!r} must be true or false")
        out.append(Pin(role, site, low, src.strip()))
    return tuple(out)


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
        if f.name not in raw and f.name not in _OPTIONAL:
            raise InputError(f"{p}: missing key '{f.name}'")
    for k, t in _TYPES.items():
        v = raw.get(k, {} if k == "pins" else "")
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
    pins = _load_pins(p, raw["pins"]) if raw.get("pins") else ()
    return Board(**{**raw, "sources": tuple(raw["sources"]), "notes": raw.get("notes") or "", "pins": pins})


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
