"""Every bad input of the catalog in benchmarks/bad_inputs.py, through the real CLI: one line on stderr naming
the file or key and what to do, exit 2, never a traceback.  The benchmark counts the same cases for the
README, so the number quoted there is the number tried here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kdhw_bench_bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
assert _spec and _spec.loader
bad = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bad  # its dataclasses look their module up there
_spec.loader.exec_module(bad)


@pytest.mark.parametrize("case", bad.CASES, ids=[f"{c.kind}:{c.name}" for c in bad.CASES])
def test_bad_input_is_one_line_and_exit_2(case: object, tmp_path: Path) -> None:
    r = bad.run_case(case, tmp_path)
    assert r["one_line_exit_2"], r
    assert not (tmp_path / "out").exists(), "a refused run wrote its output folder"
