"""Every bad input of the catalog in benchmarks/bad_inputs.py, through the real CLI: one line on stderr naming
the file or key and what to do, exit 2, never a traceback.  The benchmark counts the same cases for the
README, so the number quoted there is the number tried here."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bad_inputs as bad


@pytest.mark.parametrize("case", bad.CASES, ids=[f"{c.kind}:{c.name}" for c in bad.CASES])
def test_bad_input_is_one_line_and_exit_2(case: object, tmp_path: Path) -> None:
    r = bad.run_case(case, tmp_path)
    assert r["one_line_exit_2"], r
    assert not (tmp_path / "out").exists(), "a refused run wrote its output folder"
