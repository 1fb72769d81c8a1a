"""A rendered results file must not be older than the code that makes it: where regenerating takes seconds, the
test regenerates it and compares byte for byte.  (The instantiation example in docs/hardware.md is rendered from
benchmarks/results/stream_waveform.md; a stale one mis-packs every input of a user who copies it.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_stream_waveform_results_match_todays_code(tmp_path: Path) -> None:
    from benchmarks import stream_waveform

    stream_waveform.main(out=tmp_path / "stream_waveform.md")
    fresh = (tmp_path / "stream_waveform.md").read_text()
    committed = (ROOT / "benchmarks" / "results" / "stream_waveform.md").read_text()
    assert fresh == committed, ("benchmarks/results/stream_waveform.md is stale: run "
                                "`.venv/bin/python -m benchmarks.stream_waveform` and "
                                "`.venv/bin/python -m benchmarks.readme_results`")
