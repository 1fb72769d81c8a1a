"""Every figure in the README comes from a results file: each `<!-- results: FILE -->` block is re-rendered
from its file and must match, and every number in a `<!-- numbers: FILE -->` span must appear in its file.
benchmarks/readme_results.py rewrites the blocks after a benchmark run; this test catches a hand edit or a
stale table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kdhw_bench_readme_results", ROOT / "benchmarks" / "readme_results.py")
assert _spec and _spec.loader
rr = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rr
_spec.loader.exec_module(rr)
README = (ROOT / "README.md").read_text()


def test_every_results_block_matches_its_file() -> None:
    blocks = list(rr.BLOCK.finditer(README))
    assert len(blocks) >= 5, "the README's spine, hardware, estimate and bad-input tables are rendered blocks"
    assert rr.stale_blocks(README) == []


def test_every_number_in_a_numbers_span_is_in_its_file() -> None:
    assert len(rr.NUMBERS.findall(README)) >= 3
    assert rr.missing_numbers(README) == []


def test_the_check_catches_a_changed_figure_and_a_number_not_in_the_file(tmp_path: Path) -> None:
    block = next(rr.BLOCK.finditer(README))
    body = block.group("body")
    first_num = next(m for m in rr.NUMBER.finditer(body))
    bumped = body[:first_num.start()] + str(int(first_num.group().replace(",", "").split(".")[0]) + 1) \
        + body[first_num.end():]
    edited = README.replace(body, bumped, 1)
    assert rr.stale_blocks(edited) != []
    span = next(rr.NUMBERS.finditer(README))
    assert rr.missing_numbers(README.replace(span.group("body"), span.group("body") + " 987654.321", 1)) \
        == [f"{span.group('file')}: 987654.321"]
    assert rr.render(edited) == README  # re-rendering restores the figure


def test_the_bad_input_counts_quoted_are_the_catalog_the_tests_try() -> None:
    res = json.loads((ROOT / "benchmarks" / "results" / "bad_inputs.json").read_text())
    spec = importlib.util.spec_from_file_location("kdhw_bench_bad_inputs_count", ROOT / "benchmarks" / "bad_inputs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert res["tried"] == len(mod.CASES) and [c["name"] for c in res["cases"]] == [c.name for c in mod.CASES]
    assert res["one_line_exit_2"] == res["tried"]


@pytest.mark.parametrize("renderer", sorted(rr.RENDERERS))
def test_each_renderer_is_used(renderer: str) -> None:
    used = {dict(a.split("=", 1) for a in m.group("args").split()).get("render", "md-table")
            for m in rr.BLOCK.finditer(README)}
    assert renderer in used, f"render={renderer} is registered but no README block uses it"
