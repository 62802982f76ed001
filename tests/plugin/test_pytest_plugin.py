"""The pytest plugin: its fixtures used directly, and loaded through the pytest11 entry point
in a separate pytest run, as a user's suite would."""

from __future__ import annotations

import textwrap
import threading
from typing import Any, Dict

import pytest

from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState

pytest_plugins = ["pytester"]


def test_fixtures_give_a_connected_client_on_the_fake_gateway(
    fake_gateway: FakeGateway, resilient_client: IBClient
) -> None:
    assert resilient_client.is_connected()
    assert resilient_client.config.port == fake_gateway.port
    assert [c.client_id for c in fake_gateway.connections if c.ready] == [1]
    assert resilient_client.get_current_time(timeout=5.0) > 0


def test_resilient_client_heals_a_gateway_restart(fake_gateway: FakeGateway, resilient_client: IBClient) -> None:
    before = resilient_client.get_connection_status()["total_connections"]
    back = threading.Event()
    resilient_client.add_state_listener(
        lambda old, new, reason: back.set() if (old, new) == (ConnectionState.RECONNECTING, ConnectionState.CONNECTED) else None
    )
    fake_gateway.restart(downtime=0.3)
    assert back.wait(15.0)
    status = resilient_client.get_connection_status()
    assert status["total_connections"] == before + 1
    assert resilient_client.get_current_time(timeout=5.0) > 0


def test_config_fixture_has_short_intervals(resilient_client_config: Dict[str, Any], fake_gateway: FakeGateway) -> None:
    assert resilient_client_config["port"] == fake_gateway.port
    assert resilient_client_config["heartbeat_interval"] < 1.0
    assert resilient_client_config["max_reconnect_attempts"] == 0  # retry forever in tests


USER_CONFTEST = """
import pytest

@pytest.fixture
def resilient_client_config(resilient_client_config):
    return dict(resilient_client_config, client_id=42)
"""

USER_TESTS = """
import threading

from ib_resilience import ConnectionState


def test_bot_survives_a_drop(fake_gateway, resilient_client):
    assert [c.client_id for c in fake_gateway.connections] == [42]
    back = threading.Event()
    resilient_client.add_state_listener(
        lambda old, new, reason: new is ConnectionState.CONNECTED and back.set()
    )
    fake_gateway.drop_connections()
    assert back.wait(15)
    assert resilient_client.get_connection_status()["total_connections"] == 2
    assert resilient_client.get_current_time(timeout=5) > 0


def test_gateway_alone(fake_gateway):
    assert fake_gateway.listening and fake_gateway.port > 0


def test_this_one_fails_on_purpose(resilient_client):
    assert not resilient_client.is_connected()
"""


def test_entry_point_loads_the_fixtures_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user_bot=textwrap.dedent(USER_TESTS))
    # A subprocess: the plugin must come from the installed entry point, not from this process.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60", "-q", timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_this_one_fails_on_purpose*"])


def test_plugin_is_registered_under_its_entry_point_name(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("ib_resilience")
    assert plugin is not None and plugin.__name__ == "ib_resilience.pytest_plugin"
