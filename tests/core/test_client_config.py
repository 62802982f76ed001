"""IBClient construction from YAML, dicts and overrides; bad config fails before any socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from ib_resilience import ConfigError, ConnectionState, IBClient

ROOT = Path(__file__).resolve().parents[2]


def test_from_yaml_with_keyword_overrides() -> None:
    client = IBClient.from_yaml(ROOT / "config" / "default.yaml", port=4002, heartbeat_interval=5.0)
    assert client.config.port == 4002 and client.config.heartbeat_interval == 5.0
    assert client.config.max_reconnect_attempts == 10 and client.config.reconnect_delay_base == 1.0
    assert client.state is ConnectionState.DISCONNECTED and not client.is_connected()


def test_constructor_arguments_override_the_config_dict() -> None:
    client = IBClient(host="127.0.0.2", port=4001, client_id=9, config={"port": 7497, "request_timeout": 3})
    assert (client.config.host, client.config.port, client.config.client_id) == ("127.0.0.2", 4001, 9)
    assert client.config.request_timeout == 3.0


def test_bad_config_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text("heartbeat_interval: -1\n")
    with pytest.raises(ConfigError) as info:
        IBClient.from_yaml(path)
    assert "heartbeat_interval" in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="heartbeat_intervall"):
        IBClient(config={"heartbeat_intervall": 1.0})
