"""``ib-resilience sim``: the simulator's own entry point behind the CLI, with a fault plan."""

from __future__ import annotations

import re
from pathlib import Path

from ib_resilience.client import IBClient

from .helpers import LineReader, run_cli


def test_sim_serves_a_real_client_plays_its_plan_and_stops_on_sigterm(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("- {at: 0.2, fault: set_latency, seconds: 0.0}\n", encoding="utf-8")
    sim = LineReader(["sim", "--port", "0", "--faults", str(plan)])
    client = None
    try:
        line = sim.wait_for("simulated IB Gateway on", timeout=30.0)
        assert line is not None, sim.lines
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        client = IBClient(config={"port": int(match.group(1)), "client_id": 3})
        assert client.connect(timeout=15.0)
        assert client.get_current_time(timeout=10.0) > 0
        assert sim.wait_for("set_latency(seconds=0.0)", timeout=30.0) is not None, sim.lines
    finally:
        if client is not None:
            client.disconnect()
        code = sim.stop()
    assert code == 0, sim.lines


def test_bad_plan_is_a_usage_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("- {at: 1, fault: explode}\n", encoding="utf-8")
    result = run_cli(["sim", "--port", "0", "--faults", str(plan)])
    assert result.returncode == 2
    assert "explode" in result.stderr and str(plan) in result.stderr


def test_sim_help_is_the_simulators_own() -> None:
    result = run_cli(["sim", "--help"])
    assert result.returncode == 0
    assert "usage:" in result.stdout and "--port" in result.stdout and "--fault-plan" in result.stdout
