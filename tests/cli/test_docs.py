"""The newcomer's documents stay true: the state machine as documented is the one in the code,
and every relative link points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Set, Tuple

import pytest

from ib_resilience.state import ALLOWED_TRANSITIONS

REPO = Path(__file__).resolve().parents[2]
CODE: Set[Tuple[str, str]] = {(a.name, b.name) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}


def architecture() -> str:
    return (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_transition_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `([A-Z]+)` \| `([A-Z]+)` \|", architecture(), flags=re.M)
    assert rows, "no transition table found in docs/architecture.md"
    assert set(rows) == CODE
    assert len(rows) == len(set(rows))


def test_mermaid_diagram_matches_the_code() -> None:
    block = re.search(r"```mermaid\n(.*?)```", architecture(), flags=re.S)
    assert block is not None
    edges = set(re.findall(r"^\s+([A-Z]+) --> ([A-Z]+)", block.group(1), flags=re.M))
    assert edges == CODE


@pytest.mark.parametrize("doc", ["README.md", "docs/index.md", "docs/architecture.md", "docs/operations.md"])
def test_relative_links_resolve(doc: str) -> None:
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets or doc != "README.md"
    missing = [t for t in targets if "://" not in t and not (path.parent / t).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"
