"""The chaos soak, short and seeded: every fault kind at least once against a bot placing and
cancelling orders and holding subscriptions; every invariant of the report must hold.

The only timing in it is each call's own deadline (checked with a generous margin) and a
30 s bound on recovering from a single fault, both far above what a loaded machine needs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


EXPECTED_INVARIANTS = (
    "bot threads ended",
    "recovered from every fault",
    "subscriptions tick again after the final recovery",
    "zero duplicate orders by orderRef",
    "the caller was told were placed are in the book",
    "cancels reported ok are cancelled in the book",
    "no leaked thread",
    "no socket left open",
    "no exception escaped any thread",
    "calls returned or raised one of our exceptions",
    "within its deadline",
    "order ids never reused",
    "pacing limit",
)


@pytest.mark.timeout(300)
def test_short_chaos_soak_holds_every_invariant() -> None:
    soak = load_script("chaos_soak")
    report = soak.run_soak(seed=5, duration=25.0, fault_interval=0.5, deadline_margin=5.0, cover_all_kinds=True)
    table = report.table()
    print(table)
    names = [inv.name for inv in report.invariants]
    for expected in EXPECTED_INVARIANTS:
        assert any(expected in name for name in names), f"invariant {expected!r} was not evaluated\n{table}"
    assert {f.kind for f in report.faults} == set(soak.FAULT_KINDS), table
    assert report.calls and any(c.op == "place_bracket_order" and c.outcome == "ok" for c in report.calls), table
    assert [inv.name for inv in report.failed()] == [], table
