"""Every figure in the documents comes from a results file: each `<!-- results: FILE -->` block of README.md,
benchmarks/README.md and docs/*.md is re-rendered from its file and must match, and every number in a
`<!-- numbers: FILE -->` span must appear in its file.  benchmarks/readme_results.py rewrites the blocks after a
benchmark run; this test catches a hand edit or a stale table in any of those documents."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("kdhw_bench_readme_results", ROOT / "benchmarks" / "readme_results.py")
assert _spec and _spec.loader
rr = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rr
_spec.loader.exec_module(rr)
DOCS = rr.documents()
TEXT = {d: d.read_text() for d in DOCS}


def _name(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


def _blocks(doc: Path) -> int:
    return len(rr.BLOCK.findall(TEXT[doc]))


def test_the_documents_checked_are_the_readme_the_benchmarks_and_the_docs() -> None:
    names = [_name(d) for d in DOCS]
    assert names[:2] == ["README.md", "benchmarks/README.md"]
    assert {"docs/hardware.md", "docs/troubleshooting.md"} <= set(names)


def test_the_blocks_are_where_the_readers_look() -> None:
    """The README keeps a headline table, benchmarks/README.md every benchmark's, docs/ the stream core's
    waveform and the troubleshooting catalog."""
    by = {_name(d): _blocks(d) for d in DOCS}
    assert 1 <= by["README.md"] <= 2, "at most one or two headline blocks in the README"
    assert by["benchmarks/README.md"] >= 20
    assert by["docs/hardware.md"] >= 2 and by["docs/troubleshooting.md"] >= 2


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_results_block_matches_its_file(doc: Path) -> None:
    assert rr.stale_blocks(TEXT[doc]) == []


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_number_in_a_numbers_span_is_in_its_file(doc: Path) -> None:
    assert rr.missing_numbers(TEXT[doc]) == []


def test_marker_paths_are_from_the_repository_root() -> None:
    """Whichever document holds a marker, its file is named from the repository root (benchmarks/results/...)."""
    files = {m.group("file") for d in DOCS for pat in (rr.BLOCK, rr.NUMBERS) for m in pat.finditer(TEXT[d])}
    assert files and all(f.startswith("benchmarks/results/") and (ROOT / f).is_file() for f in files), files


@pytest.mark.parametrize("doc", [d for d in DOCS if rr.BLOCK.search(d.read_text())], ids=_name)
def test_the_check_catches_a_changed_figure_and_a_number_not_in_the_file(doc: Path) -> None:
    text = TEXT[doc]
    block = next(m for m in rr.BLOCK.finditer(text) if rr.NUMBER.search(m.group("body")))
    body = block.group("body")
    first_num = next(m for m in rr.NUMBER.finditer(body))
    bumped = body[:first_num.start()] + str(int(first_num.group().replace(",", "").split(".")[0]) + 1) \
        + body[first_num.end():]
    edited = text.replace(body, bumped, 1)
    assert rr.stale_blocks(edited) != [] and rr.problems(doc, edited) != []
    assert rr.render(edited) == text  # re-rendering restores the figure
    span = next(rr.NUMBERS.finditer(text), None)
    if span is not None:
        assert rr.missing_numbers(text.replace(span.group("body"), span.group("body") + " 987654.321", 1)) \
            == [f"{span.group('file')}: 987654.321"]


def test_the_command_checks_every_document_and_fails_on_a_stale_one(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert rr.main(["--check"]) == 0
    doc = ROOT / "benchmarks" / "README.md"
    text = TEXT[doc]
    body = next(rr.BLOCK.finditer(text)).group("body")
    stale = tmp_path / "README.md"
    stale.write_text(text.replace(body, body.replace("|", "| ", 1), 1))
    assert rr.main(["--check", str(stale)]) == 1
    assert "stale: benchmarks/results/" in capsys.readouterr().err
    assert stale.read_text() != text and rr.main([str(stale)]) == 0 and stale.read_text() == text  # rewritten


def test_the_bad_input_counts_quoted_are_the_catalog_the_tests_try(monkeypatch: pytest.MonkeyPatch) -> None:
    res = json.loads((ROOT / "benchmarks" / "results" / "bad_inputs.json").read_text())
    monkeypatch.syspath_prepend(str(ROOT))
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
            for d in DOCS for m in rr.BLOCK.finditer(TEXT[d])}
    assert renderer in used, f"render={renderer} is registered but no document's block uses it"
