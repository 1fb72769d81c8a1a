"""The house's one rule, checked on the source: data flows one way.  Every import in the package (module
level and inside functions alike) runs down the floors below; none runs back up, and the module graph has no
cycle.  Training never imports hardware, hardware never imports verification, and no stage imports a
command module (``flows``, ``api``, ``cli``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kdhw"

# floor of each room: a module may import its own room and any room on a lower floor, nothing higher
FLOORS = {"errors": 0, "util": 1, "config": 1, "contract": 1, "boards": 1, "train": 2, "hw": 3, "verify": 4,
          "flows": 5, "api": 6, "cli": 6}
COMMANDS = {"flows", "api", "cli"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every kdhw module ``path`` imports, resolved to absolute names."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "kdhw"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "kdhw":
                continue
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if (PKG.parent / Path(*f"{target}.{a.name}".split("."))).exists()
                    or (PKG.parent / Path(*f"{target}.{a.name}".split("."))).with_suffix(".py").exists()}
    return {m for m in out if m != "kdhw"}


def _room(mod: str) -> str:
    return mod.split(".")[1]


def graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) - {_module(p)} for p in PKG.rglob("*.py")}


def upward(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        if mod == "kdhw":
            continue
        for dep in deps:
            a, b = _room(mod), _room(dep)
            if a != b and (FLOORS[b] > FLOORS[a] or (b in COMMANDS and a not in COMMANDS)):
                bad.append(f"{mod} -> {dep}")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_every_room_has_a_floor() -> None:
    rooms = {_room(m) for m in graph() if m != "kdhw"}
    assert rooms <= set(FLOORS), rooms - set(FLOORS)


def test_no_import_runs_up_a_floor_or_into_a_command_module() -> None:
    assert upward(graph()) == []


def test_the_module_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("edge, found", [
    (("kdhw.train.student", "kdhw.hw.export"), "upward"),   # training reaching into hardware
    (("kdhw.hw.export", "kdhw.flows.run"), "upward"),       # a stage importing a command module
    (("kdhw.hw.rtl._build", "kdhw.hw.rtl"), "cycle"),       # the rtl facade and its private module
])
def test_the_checks_catch_a_planted_edge(edge: tuple[str, str], found: str) -> None:
    g = graph()
    g[edge[0]] = g[edge[0]] | {edge[1]}
    if found == "upward":
        assert f"{edge[0]} -> {edge[1]}" in upward(g)
    else:
        assert any(edge[0] in c and edge[1] in c for c in cycles(g))
