"""Render the documents' result blocks from the files under benchmarks/results/, or check that they match.

A figure in a document must come from a file a benchmark script wrote.  Two markers tie them together:

    <!-- results: benchmarks/results/spine.json render=spine-hardware -->
    ...a table, rewritten by this script from that file...
    <!-- /results -->

    <!-- numbers: benchmarks/results/spine.md -->prose whose every number appears in that file<!-- /numbers -->

A results block is produced by a renderer named by ``render=`` (default ``md-table``: table ``table=N``,
counted from 1, of a markdown results file, copied verbatim).  To add a table: have your benchmark write
its results file, put a marker in a document, and either use ``md-table`` or add a function to
``RENDERERS``.  The documents are ``DOCUMENTS``: README.md, benchmarks/README.md and every docs/*.md; the
file path in a marker is relative to the repository root whichever document holds it.
``tests/bench/test_readme_results.py`` re-renders every block of every document and checks every numbers span.

    .venv/bin/python -m benchmarks.readme_results            # rewrite the blocks of every document
    .venv/bin/python -m benchmarks.readme_results --check    # exit 1 naming each block or number that is stale
    .venv/bin/python -m benchmarks.readme_results docs/hardware.md   # only the documents named

(``.venv/bin/python benchmarks/readme_results.py`` does the same.)
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = ("README.md", "benchmarks/README.md", "docs/*.md")  # relative to ROOT; a pattern may match several
BLOCK = re.compile(r"<!-- results: (?P<file>\S+)(?P<args>(?: [\w-]+=\S+)*) -->\n(?P<body>.*?)<!-- /results -->", re.S)
NUMBERS = re.compile(r"<!-- numbers: (?P<file>\S+) -->(?P<body>.*?)<!-- /numbers -->", re.S)
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?")

Renderer = Callable[[Path, dict[str, str]], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    def deco(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn
    return deco


@renderer("md-table")
def md_table(path: Path, args: dict[str, str]) -> str:
    """Table number ``table`` (from 1) of a markdown file, verbatim."""
    n = int(args.get("table", "1"))
    tables, cur = [], []
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    if not 1 <= n <= len(tables):
        raise ValueError(f"{path}: has {len(tables)} tables, not {n}")
    return "\n".join(tables[n - 1])


@renderer("md-fence")
def md_fence(path: Path, args: dict[str, str]) -> str:
    """Fenced code block number ``fence`` (from 1) of a markdown file, fences included, verbatim."""
    n = int(args.get("fence", "1"))
    blocks = re.findall(r"^```.*?^```$", path.read_text(), re.S | re.M)
    if not 1 <= n <= len(blocks):
        raise ValueError(f"{path}: has {len(blocks)} fenced blocks, not {n}")
    return blocks[n - 1]


@functools.cache
def _spine() -> Any:
    """benchmarks/spine.py as the module ``benchmarks.spine`` (it imports ``benchmarks.common``), with the
    repository root put first on the path when this file runs as a script or is loaded by the tests."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    mod = importlib.import_module("benchmarks.spine")
    if Path(mod.__file__ or "").resolve() != ROOT / "benchmarks" / "spine.py":
        raise ImportError(f"benchmarks.spine resolves to {mod.__file__}, not this repository's")
    return mod


@renderer("spine-accuracy")
def spine_accuracy(path: Path, args: dict[str, str]) -> str:
    return _spine().accuracy_table(json.loads(path.read_text()))


@renderer("spine-stages")
def spine_stages(path: Path, args: dict[str, str]) -> str:
    return _spine().stage_table(json.loads(path.read_text()))


@renderer("spine-hardware")
def spine_hardware(path: Path, args: dict[str, str]) -> str:
    return _spine().hardware_table(json.loads(path.read_text()))


@renderer("bad-inputs")
def bad_inputs(path: Path, args: dict[str, str]) -> str:
    """Per kind of bad input: how many the benchmark tried and how many got one line on stderr and exit 2."""
    res = json.loads(path.read_text())
    out = ["| bad input | tried | one line + exit 2 |", "|---|---|---|"]
    for kind, v in res["by_kind"].items():
        out.append(f"| {kind} | {v['tried']} | {v['one_line_exit_2']} |")
    out.append(f"| **all** | **{res['tried']}** | **{res['one_line_exit_2']}** |")
    return "\n".join(out)


@renderer("troubleshooting")
def troubleshooting(path: Path, args: dict[str, str]) -> str:
    """Every bad input the benchmark tried: the one line kdhw printed and the fix, grouped by kind."""
    res = json.loads(path.read_text())
    out = ["| input | problem | what kdhw says (exit 2) | fix |", "|---|---|---|---|"]
    for c in res["cases"]:
        msg = c["message"].split(": error: ", 1)[-1].replace("|", "\\|")
        out.append(f"| {c['kind']} | {c['name']} | `{msg}` | {c['fix']} |")
    return "\n".join(out)


@renderer("kd-pays-gap")
def kd_pays_gap(path: Path, args: dict[str, str]) -> str:
    """Gap closed per arm for each (student, label budget) of ``kd_pays.json``: 10 % rows first, then 5 % and
    100 % where they were run; ``*`` = the paired 95 % CI of the difference excludes 0."""
    res = json.loads(path.read_text())
    names = {"mlp8_w4": "digits 64-8-10 w4", "mlp16_w2": "digits 64-16-10 w2", "conv4_8_w4": "mnist1d conv 4-8",
             "conv8_16_w4": "mnist1d conv 8-16"}
    by = {(e["student"], e["budget"], e["arm"]): e for e in res["table"]}
    arms = ("kd", "pseudo", "fm", "scratch_aug", "kd_semi", "exported")

    def cell(e: dict[str, Any] | None) -> str:
        if e is None or e.get("gap_closed") is None:
            return "—"
        g = f"{100 * e['gap_closed']:+.0f} %".replace("-", "−") + ("\\*" if e.get("significant") else "")
        return g + (f" ({100 * e['semi_teacher']:.1f} %)" if "semi_teacher" in e else "")

    out = ["| student | labels | scratch % | kd (handed over) | pseudo-labels | fm | scratch_aug | kd_semi (its teacher) "
           "| exported (best_val) |", "|---|---|---|---|---|---|---|---|---|"]
    for b in (0.1, 0.05, 1.0):
        for stu, name in names.items():
            sc = by.get((stu, b, "scratch"))
            if sc is None or (b != 0.1 and not any(by.get((stu, b, a)) for a in arms)):
                continue
            out.append(f"| {name} | {100 * b:g} % | {100 * sc['mean']:.1f} | " + " | ".join(cell(by.get((stu, b, a)))
                                                                                       for a in arms) + " |")
    return "\n".join(out)


def _args(text: str) -> dict[str, str]:
    return dict(a.split("=", 1) for a in text.split())


def render_block(file: str, args: str) -> str:
    a = _args(args)
    kind = a.pop("render", "md-table")
    if kind not in RENDERERS:
        raise ValueError(f"unknown render={kind}; known: {', '.join(sorted(RENDERERS))}")
    return RENDERERS[kind](ROOT / file, a).rstrip("\n") + "\n"


def render(text: str) -> str:
    """The README with every results block re-rendered from its file."""
    def one(m: re.Match[str]) -> str:
        head = text[m.start():m.start("body")]
        return head + render_block(m.group("file"), m.group("args")) + "<!-- /results -->"

    return BLOCK.sub(one, text)


def stale_blocks(text: str) -> list[str]:
    """``file args`` of each block whose body differs from what its file renders."""
    return [f"{m.group('file')}{m.group('args')}" for m in BLOCK.finditer(text)
            if m.group("body") != render_block(m.group("file"), m.group("args"))]


def _norm(tok: str) -> str:
    return tok.replace(",", "").replace("−", "-").lstrip("+-")


def missing_numbers(text: str) -> list[str]:
    """``file: number`` for each number in a numbers span that its file does not contain."""
    out = []
    for m in NUMBERS.finditer(text):
        have = {_norm(t) for t in NUMBER.findall((ROOT / m.group("file")).read_text())}
        out += [f"{m.group('file')}: {t}" for t in NUMBER.findall(m.group("body")) if _norm(t) not in have]
    return out


def documents() -> list[Path]:
    """Every document that may hold blocks (``DOCUMENTS``), in that order; README.md and benchmarks/README.md
    must exist, docs/*.md are those present."""
    out: list[Path] = []
    for pattern in DOCUMENTS:
        found = sorted(ROOT.glob(pattern)) if any(c in pattern for c in "*?[") else [ROOT / pattern]
        out += [p for p in found if p not in out]
    return out


def _name(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix() if doc.is_relative_to(ROOT) else str(doc)


def problems(doc: Path, text: str | None = None) -> list[str]:
    """``doc: stale: ...`` for each block of ``doc`` (or of ``text``, read as that document) that differs from
    its file, and ``doc: not in its file: ...`` for each number of a numbers span its file lacks."""
    text = doc.read_text() if text is None else text
    return ([f"{_name(doc)}: stale: {b}" for b in stale_blocks(text)]
            + [f"{_name(doc)}: a number in prose is not in its file: {n}" for n in missing_numbers(text)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("docs", nargs="*", type=Path, help="documents to render or check (default: every one of DOCUMENTS)")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if a block or number is stale")
    a = ap.parse_args(argv)
    docs = [d if d.is_absolute() else (Path.cwd() / d).resolve() for d in a.docs] or documents()
    for d in docs:
        if not d.is_file():
            print(f"{d}: no such document", file=sys.stderr)
            return 2
    bad: list[str] = []
    blocks = spans = 0
    for doc in docs:
        text = doc.read_text()
        if a.check:
            bad += problems(doc, text)
            continue
        new = render(text)
        if new != text:
            tmp = doc.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(doc)
        bad += problems(doc, new)
        blocks += len(BLOCK.findall(new))
        spans += len(NUMBERS.findall(new))
    for b in bad:
        print(b, file=sys.stderr)
    if not a.check:
        print(f"{len(docs)} documents: {blocks} blocks rendered, {spans} numbers spans checked")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
