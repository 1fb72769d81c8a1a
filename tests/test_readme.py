"""The README and the docs are a contract: the README's config block must load, its test command must be what
CI runs, the verbs it lists must exist, docs/config.md must be what the schema generates, and every link,
module path and layer key the documents name must exist.  A doc that drifts from the code is caught here, not
by a user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kdhw.cli import build_parser
from kdhw.config import default_yaml, reference_markdown, validate

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```$", re.S | re.M)


def _name(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


def test_readme_is_at_most_300_lines() -> None:
    assert len(README.splitlines()) <= 300, "the manual goes to docs/, the measurements to benchmarks/README.md"


def test_config_block_is_a_valid_config() -> None:
    block = re.search(r"## Config.*?```yaml\n(.*?)```", README, re.S)
    assert block, "README has no ```yaml block under ## Config"
    cfg = validate(yaml.safe_load(block.group(1)), "README.md")
    assert cfg.student["weight_bits"] == 4 and cfg.report["boards"] == ["pynq-z2", "ulx3s-85f", "icebreaker"]


def test_config_block_is_the_embedded_default() -> None:
    """The README shows the embedded default without its comments: the same sections, keys and values."""
    block = re.search(r"## Config.*?```yaml\n(.*?)```", README, re.S)
    assert block and yaml.safe_load(block.group(1)) == yaml.safe_load(default_yaml())


def test_ci_runs_the_readme_test_command() -> None:
    two = re.search(r"## Two commands\n\n```bash\n(.*?)```", README, re.S)
    assert two, "README has no ## Two commands block"
    lines = [ln.split("#")[0].strip() for ln in two.group(1).strip().splitlines()]
    assert len(lines) == 2 and lines[0].endswith("kdhw run --out out/")
    assert lines[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_listed_verb_exists() -> None:
    verbs = re.findall(r"^kdhw (\w+) ", README.split("## The verbs", 1)[1].split("```")[1], re.M)
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert verbs and set(verbs) <= set(sub.choices), set(verbs) - set(sub.choices)


def test_docs_config_md_is_what_the_schema_generates() -> None:
    """docs/config.md is generated: `.venv/bin/python -m kdhw.config > docs/config.md` after a schema change."""
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown()


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_yaml_block_is_a_valid_config(doc: Path) -> None:
    """Full configs and single sections alike: each ```yaml block must pass validation on its own."""
    for block in re.findall(r"^```yaml\n(.*?)^```$", doc.read_text(), re.S | re.M):
        validate(yaml.safe_load(block), _name(doc))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", doc.read_text()), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_relative_link_resolves(doc: Path) -> None:
    """Links are relative to the document's own folder (benchmarks/README.md links `results/x.png`), and an
    anchor must name a heading of the target."""
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            bad.append(f"{target}: no heading with that anchor")
    assert not bad, f"{_name(doc)}: {bad}"


def _names_exist(name: str) -> bool:
    """`kdhw.a.b.NAME`: the longest prefix that is a module or package of the repository, and at most one
    remaining part that its source defines or re-exports."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        src = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if src.is_file():
            rest = parts[i:]
            return not rest or (len(rest) == 1 and re.search(rf"\b{re.escape(rest[0])}\b", src.read_text()) is not None)
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_module_and_path_named_exists(doc: Path) -> None:
    """After a move the documents must name the new places: `kdhw/train/recipe.py`, `kdhw.flows.grid`,
    `tests/verify/test_bitexact.py`; a stale one (`kdhw/recipe.py`, `kdhw.grid`) fails here."""
    text = doc.read_text()
    paths = re.findall(r"`((?:kdhw|tests|sim|benchmarks|boards|hls|docs)/[\w/.\-]*)`", text)
    dotted = re.findall(r"`(kdhw(?:\.\w+)+)", text)
    bad = [p for p in paths if not (ROOT / p).exists()] + [d for d in dotted if not _names_exist(d)]
    assert not bad, f"{_name(doc)} names what does not exist: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_benchmarks_are_run_as_modules(doc: Path) -> None:
    assert not re.findall(r"python3? benchmarks/\w+\.py", doc.read_text()), "write `python -m benchmarks.NAME`"


def test_the_layer_table_lists_every_student_layer_and_key() -> None:
    """docs/config-guide.md's table of `student.layers` against the layer registry the student is built from."""
    from kdhw.train.student import LAYERS

    guide = (ROOT / "docs" / "config-guide.md").read_text()
    table = guide.split("## Student layers", 1)[1].split("\n\n")[2]
    rows = {m.group(1): set(re.findall(r"`(\w+)`", m.group(2)))
            for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", table.split("|---|---|", 1)[1], re.M)}
    assert rows == {t: set(kind.keys) - {"type"} for t, kind in LAYERS.items()}, rows
