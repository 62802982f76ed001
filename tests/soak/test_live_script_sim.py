"""scripts/test_connection_resilience_live.py in simulator mode (no IB_HOST/IB_PORT), as a
subprocess: every scenario passes and the exit code is 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test_connection_resilience_live.py"


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("IB_HOST", "IB_PORT")}  # never a real gateway
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(240)
def test_live_script_passes_every_scenario_against_the_simulator() -> None:
    listed = run_script("--list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert "forced_reconnect" in names and "unknown_fate" in names, names

    run = run_script(timeout=200)
    output = run.stdout + run.stderr
    assert "embedded simulator" in run.stdout, output
    verdicts = {line.split()[1]: line.split()[0] for line in run.stdout.splitlines()
                if line.split()[:1] in (["PASS"], ["FAIL"], ["SKIP"])}
    assert verdicts == {name: "PASS" for name in names}, output
    assert run.returncode == 0, output


def test_live_script_rejects_an_unknown_scenario() -> None:
    run = run_script("--only", "no_such_scenario", timeout=60)
    assert run.returncode == 2
    assert "no_such_scenario" in run.stderr
