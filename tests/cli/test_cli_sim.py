"""``ib-resilience sim``: the standalone simulator with an optional fault plan."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from ib_resilience.cli import FaultStep, load_fault_plan, play_fault_plan
from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway

from .helpers import LineReader


def test_sim_serves_a_real_client_plays_its_plan_and_stops_on_sigterm(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("- {at: 0.2, fault: set_latency, seconds: 0.0}\n", encoding="utf-8")
    sim = LineReader(["sim", "--port", "0", "--faults", str(plan)])
    client = None
    try:
        line = sim.wait_for("listening on", timeout=30.0)
        assert line is not None, sim.lines
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match
        client = IBClient(config={"port": int(match.group(1)), "client_id": 3})
        assert client.connect(timeout=15.0)
        assert client.get_current_time(timeout=10.0) > 0
        assert sim.wait_for("set_latency(seconds=0.0)", timeout=30.0) is not None, sim.lines
    finally:
        if client is not None:
            client.disconnect()
        code = sim.stop()
    assert code == 0
    assert any("simulator stopped" in s for s in sim.lines)


def test_bad_plan_is_a_usage_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("- {at: 1, fault: explode}\n", encoding="utf-8")
    sim = LineReader(["sim", "--port", "0", "--faults", str(plan)])
    assert sim.proc.wait(30.0) == 2
    assert sim.proc.stderr is not None and "explode" in sim.proc.stderr.read()


def test_load_fault_plan_reads_steps_in_time_order(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "faults:\n"
        "  - {at: 10, fault: restart, downtime: 3}\n"
        "  - {at: 2.5, fault: drop_connections}\n"
        "  - {at: 5, fault: upstream_outage, seconds: 4, data_lost: false}\n",
        encoding="utf-8",
    )
    assert load_fault_plan(str(plan)) == [
        FaultStep(2.5, "drop_connections"),
        FaultStep(5.0, "upstream_outage", (("data_lost", False), ("seconds", 4))),
        FaultStep(10.0, "restart", (("downtime", 3),)),
    ]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{at: 1, fault: restart}\n", "list"),
        ("- {fault: restart}\n", "entry 1"),
        ("- {at: -1, fault: restart}\n", "'at'"),
        ("- {at: 1, fault: nuke}\n", "nuke"),
        ("- {at: 1, fault: restart, seconds: 3}\n", "seconds"),
        ("- [at, 1\n", "invalid YAML"),
    ],
)
def test_load_fault_plan_rejects_bad_plans(tmp_path: Path, text: str, needle: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_fault_plan(str(plan))
    assert needle in str(info.value) and str(plan) in str(info.value)


def test_play_fault_plan_calls_the_gateway() -> None:
    said = []
    with FakeGateway(port=0) as gw:
        play_fault_plan(gw, [FaultStep(0.0, "blackhole", (("seconds", 30.0),))], threading.Event(), said.append)
        assert gw.blackholed
    assert said == ["t+0s: blackhole(seconds=30.0)"]
