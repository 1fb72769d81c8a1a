"""Board catalog location: ``KDHW_BOARDS_DIR`` is honoured when boards are loaded, not only at import."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from kdhw import boards
from kdhw.cli import main
from kdhw.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

CUSTOM = textwrap.dedent("""\
    name: my-fpga
    vendor: lattice
    family: ecp5
    part: 25k-CABGA256
    clock_mhz: 50
    lut: 24000
    ff: 24000
    dsp: 28
    bram36: 28
    uram: 0
    io_pins: 197
    sources: ["test board: a user's own catalog entry"]
""")


def test_boards_dir_set_after_import_is_used_and_unset_falls_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # kdhw.boards is imported (above) before the variable exists, as in a notebook or a long-lived driver
    monkeypatch.delenv("KDHW_BOARDS_DIR", raising=False)
    assert "pynq-z2" in [b.name for b in boards.list_boards()]
    own = tmp_path / "catalog"
    own.mkdir()
    (own / "my-fpga.yaml").write_text(CUSTOM)
    shutil.copy(ROOT / "boards" / "pynq-z2.yaml", own)
    monkeypatch.setenv("KDHW_BOARDS_DIR", str(own))
    assert [b.name for b in boards.list_boards()] == ["my-fpga", "pynq-z2"]
    assert boards.load_board("my-fpga").part == "25k-CABGA256"
    assert boards.boards_dir() == own
    with pytest.raises(InputError, match=r"unknown board 'zcu102'; known: my-fpga, pynq-z2"):
        boards.load_board("zcu102")
    capsys.readouterr()
    assert main(["boards"]) == 0  # the CLI in the same process reads the same catalog
    out = capsys.readouterr().out
    assert "my-fpga" in out and "zcu102" not in out
    # a folder that does not exist is one clear line naming it
    monkeypatch.setenv("KDHW_BOARDS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere: board catalog folder not found"):
        boards.list_boards()
    # empty or unset: the bundled catalog again
    for set_empty in (True, False):
        if set_empty:
            monkeypatch.setenv("KDHW_BOARDS_DIR", "")
        else:
            monkeypatch.delenv("KDHW_BOARDS_DIR")
        assert boards.boards_dir() == boards.DEFAULT_BOARDS_DIR
        assert boards.load_board("zcu102").part == "xczu9eg-ffvb1156-2-e"


def test_wheel_install_reads_the_catalog_it_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a non-editable install has no repository boards/ beside the package; pyproject ships the YAMLs as
    # data files under <prefix>/share/kdhw/boards, which must then be found
    monkeypatch.delenv("KDHW_BOARDS_DIR", raising=False)
    shipped = tmp_path / "share" / "kdhw" / "boards"
    shipped.mkdir(parents=True)
    shutil.copy(ROOT / "boards" / "kv260.yaml", shipped)
    monkeypatch.setattr(boards, "DEFAULT_BOARDS_DIR", tmp_path / "no-repo" / "boards")
    monkeypatch.setattr(boards, "INSTALLED_BOARDS_DIR", shipped)
    assert [b.name for b in boards.list_boards()] == ["kv260"]
    # and pyproject really declares those data files
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"share/kdhw/boards" = ["boards/*.yaml"]' in pyproject
