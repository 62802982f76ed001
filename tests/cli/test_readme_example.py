"""The README's usage example runs as printed, against the simulator instead of TWS."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ib_resilience.sim import FakeGateway

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.timeout(120)
def test_usage_example_runs_against_the_simulator() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    example = next(b for b in blocks if "place_bracket_order" in b and "CircuitOpenError" in b)
    assert '7497' in example
    with FakeGateway(port=0) as gw:
        # The simulator trades AAPL around 190: the README's prices are realistic for it.
        code = example.replace("7497", str(gw.port)) + "\nclient.disconnect()\n"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100)
        assert result.returncode == 0, result.stderr
        first, second = result.stdout.splitlines()[:2]
        assert first.startswith("True ")
        ids = [o.order_id for o in gw.orders]
    assert len(ids) == 3 and str(tuple(ids)) in second, (ids, second)
