"""The README is a contract: its config block must load, its test command must be what CI runs, and the
verbs it lists must exist.  A doc that drifts from the code is caught here, not by a user."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kdhw.cli import build_parser
from kdhw.config import validate

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_config_block_is_a_valid_config() -> None:
    block = re.search(r"## Config.*?```yaml\n(.*?)```", README, re.S)
    assert block, "README has no ```yaml block under ## Config"
    cfg = validate(yaml.safe_load(block.group(1)), "README.md")
    assert cfg.student["weight_bits"] == 4 and cfg.report["boards"] == ["pynq-z2", "ulx3s-85f", "icebreaker"]


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
