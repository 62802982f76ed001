"""``ib-resilience check-config FILE`` and ``--help`` on every command, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_prints_effective_settings_with_defaults_filled_in(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 4002\nclient_id: 7\npacing: {burst: 3}\nread_only: true\n")
    result = run_cli(["check-config", str(path)])
    assert result.returncode == 0, result.stderr
    settings = yaml.safe_load(result.stdout)
    assert settings["port"] == 4002 and settings["client_id"] == 7
    assert settings["pacing"]["burst"] == 3
    assert settings["pacing"]["max_messages_per_second"] == 45.0  # a default, filled in
    assert settings["heartbeat_interval"] == 30.0
    assert "IB Gateway paper" in result.stderr and "read-only" in result.stderr


def test_json_format(tmp_path: Path) -> None:
    result = run_cli(["check-config", str(write(tmp_path, "host: gw.internal\n")), "--format", "json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host"] == "gw.internal"


def test_the_shipped_default_file_is_valid() -> None:
    result = run_cli(["check-config", str(REPO / "config" / "default.yaml")])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["port"] == 7497


@pytest.mark.parametrize(
    "text, key",
    [
        ("heartbeat_intervall: 5\n", "heartbeat_intervall"),  # a typo is an unknown key
        ("port: seven\n", "port"),
        ("port: 70000\n", "port"),
        ("pacing: {burst: 0}\n", "pacing.burst"),
        ("reconnect_delay_base: 10\nreconnect_delay_max: 1\n", "reconnect_delay_max"),
    ],
)
def test_invalid_file_names_key_and_file_and_exits_2(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    result = run_cli(["check-config", str(path)])
    assert result.returncode == 2
    assert key in result.stderr and str(path) in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_broken_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    broken = write(tmp_path, "port: [4002\n")
    result = run_cli(["check-config", str(broken)])
    assert result.returncode == 2 and "invalid YAML" in result.stderr and str(broken) in result.stderr
    missing = tmp_path / "nope.yaml"
    result = run_cli(["check-config", str(missing)])
    assert result.returncode == 2 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["demo"], ["sim"], ["status"], ["check-config"]])
def test_every_command_has_help(command: list) -> None:
    result = run_cli([*command, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")  # `sim --help` is the simulator's own


def test_no_command_is_a_usage_error() -> None:
    result = run_cli([])
    assert result.returncode == 2 and "usage:" in result.stderr


def test_python_dash_m_package_runs_the_cli() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ib_resilience", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "check-config" in result.stdout
