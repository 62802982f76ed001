"""Fault plans (YAML, JSON, the built-in subset) and ``python -m ib_resilience.sim``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ib_resilience.sim import FakeGateway
from ib_resilience.sim.faults import FaultPlan, FaultPlanError, FaultPlanRunner, parse_simple_yaml

from .rawclient import RawClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "fault-plan.example.yaml"


def test_example_plan_loads_with_yaml_and_with_the_builtin_parser() -> None:
    plan = FaultPlan.load(str(EXAMPLE))
    assert plan.repeat == 180 and len(plan.steps) == 9
    assert plan.steps[0].fault == "upstream_outage"
    assert dict(plan.steps[0].kwargs) == {"seconds": 5, "data_lost": False}
    builtin = FaultPlan.from_data(parse_simple_yaml(EXAMPLE.read_text()))
    assert builtin == plan


def test_json_plan_and_bare_list() -> None:
    plan = FaultPlan.parse('[{"at": 1, "fault": "blackhole", "seconds": 2}, {"at": 0, "fault": "drop_connections"}]')
    assert [s.fault for s in plan.steps] == ["drop_connections", "blackhole"]
    assert plan.repeat is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"at": 1, "fault": "explode"}]', "unknown fault"),
        ('[{"at": 1, "fault": "blackhole"}]', "needs"),
        ('[{"at": 1, "fault": "restart", "downtime": 1, "loud": true}]', "takes no"),
        ('[{"fault": "restart"}]', "needs 'at'"),
        ('{"repeat": 1, "steps": [{"at": 5, "fault": "drop_connections"}]}', "repeat"),
    ],
)
def test_bad_plans_are_rejected_at_load(text: str, message: str) -> None:
    with pytest.raises(FaultPlanError, match=message):
        FaultPlan.parse(text)


def test_runner_applies_steps_in_time_order(gw: FakeGateway, client: RawClient) -> None:
    plan = FaultPlan.parse(
        '[{"at": 0.05, "fault": "inject_error", "code": 2110}, {"at": 0.1, "fault": "drop_connections"}]'
    )
    with FaultPlanRunner(gw, plan) as runner:
        client.wait_error(2110)
        client.wait_event("connectionClosed")
        assert runner.wait(10.0)
    assert runner.executed == ["t+0.05s inject_error(code=2110)", "t+0.1s drop_connections()"]


def test_python_dash_m_runs_standalone(tmp_path: Path, clients) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("- at: 0.2\n  fault: inject_error\n  code: 2119\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ib_resilience.sim", "--port", "0", "--fault-plan", str(plan), "--log-level", "ERROR"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        line = proc.stdout.readline()  # "simulated IB Gateway on 127.0.0.1:PORT ..."
        port = int(line.split(":")[1].split()[0])
        c = clients()
        assert c.start(port, client_id=1)
        c.wait_error(2119)
        c.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0


def test_bad_plan_file_exits_2(tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text("- at: 1\n  fault: nope\n")
    out = subprocess.run(
        [sys.executable, "-m", "ib_resilience.sim", "--port", "0", "--fault-plan", str(plan)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert out.returncode == 2 and "unknown fault" in out.stderr
