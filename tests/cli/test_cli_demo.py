"""``ib-resilience demo`` end to end: simulator, client, bracket order, four faults, exit code."""

from __future__ import annotations

import io

import pytest

from ib_resilience.cli import Demo

from .helpers import run_cli


@pytest.mark.timeout(180)
def test_demo_recovers_from_every_fault_and_exits_0() -> None:
    result = run_cli(["demo"], timeout=170)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for fault in ("drop", "blackhole", "upstream outage", "gateway restart"):
        assert f"== fault: {fault}" in out
    assert "short on purpose" in out  # it says that its settings are not production settings
    assert "every fault recovered; orders intact; data flowing" in out
    assert "market data on AAPL:" in out
    assert "FAILED" not in out
    assert out.count("  t+") >= 5  # live status lines (and transitions) while it runs


@pytest.mark.timeout(180)
def test_demo_exits_1_when_a_fault_is_not_recovered_in_time() -> None:
    out = io.StringIO()
    # The gateway stays down far longer than the demo is willing to wait for it.
    code = Demo(out=out, fault_timeout=3.0, blackhole_seconds=1.0, outage_seconds=0.5, restart_downtime=60.0).run()
    text = out.getvalue()
    assert code == 1, text
    assert "gateway restart  " in text and "FAILED: not recovered within 3 s" in text
    assert "NOT everything recovered" in text
