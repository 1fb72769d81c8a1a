"""Atomic outputs: a failure leaves the previous result as it was, and a success has ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kdhw.util.atomic import _UMASK, atomic_dir, write_json


def test_outputs_get_umask_permissions_not_mkstemp_ones(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "d") as d:
        write_json(d / "b.json", {"y": 2})
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o666 & ~_UMASK
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o777 & ~_UMASK
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "b.json").st_mode) == 0o666 & ~_UMASK


def test_failed_build_keeps_the_previous_directory(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "out") as d:
        (d / "good.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as d:
            (d / "good.txt").write_text("half")
            raise RuntimeError("crash mid-run")
    assert (tmp_path / "out" / "good.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind
