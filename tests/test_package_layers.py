"""The packages' import rules (DESIGN.md): lait/ imports none of pipeline/, dedupe/, pretrain/
outside its CLI; dedupe/ does not import pipeline/ (pipeline/ imports dedupe/); pretrain/ knows
nothing of crawling. Read from the source, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages it must not import (and the files exempt from that rule)
RULES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "lait": (frozenset({"pipeline", "dedupe", "pretrain"}), frozenset({"lait/cli"})),
    "dedupe": (frozenset({"pipeline", "pretrain"}), frozenset()),
    "pretrain": (frozenset({"pipeline", "dedupe"}), frozenset()),
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_follow_the_design(package: str) -> None:
    forbidden, exempt = RULES[package]
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative.startswith(prefix) for prefix in exempt):
            continue
        bad = _imported_packages(path) & forbidden
        if bad:
            offences.append(f"{relative} imports {sorted(bad)}")
    assert not offences, "\n".join(offences)
