"""A pytest plugin for users' own test suites: drive a bot through gateway faults, no IB account.

Installed with the package (entry point ``pytest11``), so the fixtures are simply there::

    def test_bot_survives_a_gateway_restart(fake_gateway, resilient_client):
        bot = MyBot(resilient_client)
        back = threading.Event()
        resilient_client.add_state_listener(
            lambda old, new, reason: new is ConnectionState.CONNECTED and back.set())
        fake_gateway.restart(downtime=1.0)
        assert back.wait(10)            # reconnected by itself
        assert bot.still_consistent()

Fixtures (function scope):

* ``fake_gateway`` — a started :class:`ib_resilience.sim.FakeGateway` on 127.0.0.1, a free
  port; closed (every thread joined) after the test.
* ``resilient_client_config`` — the config dict ``resilient_client`` is built from: short
  heartbeats and backoff so faults are detected and healed in well under a second or two.
  Override this fixture in your ``conftest.py`` to change settings.
* ``resilient_client`` — an :class:`ib_resilience.IBClient` connected to ``fake_gateway``;
  disconnected after the test.

Imports are deferred to the fixtures, so loading the plugin costs nothing and never imports
``ibapi`` in test runs that do not use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from .client import IBClient
    from .sim import FakeGateway

#: Settings of ``resilient_client``: faults are detected within about 0.5 s and reconnects
#: retried every 0.05–0.5 s, forever. Production defaults are far longer (see
#: docs/configuration.md).
FAST_CLIENT_SETTINGS: Dict[str, Any] = {
    "client_id": 1,
    "connect_timeout": 3.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.05,
    "reconnect_delay_max": 0.5,
    "heartbeat_interval": 0.25,
    "heartbeat_timeout": 0.5,
    "request_timeout": 5.0,
    "client_id_in_use_delay": 0.1,
}

CONNECT_TIMEOUT = 15.0  # generous: a loaded CI box must not fail the fixture


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    """A started simulated IB Gateway on 127.0.0.1 (free port), closed after the test."""
    from .sim import FakeGateway

    gateway = FakeGateway(host="127.0.0.1", port=0)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture
def resilient_client_config(fake_gateway: FakeGateway) -> Dict[str, Any]:
    """Config for ``resilient_client``: ``fake_gateway``'s address plus short intervals."""
    return dict(FAST_CLIENT_SETTINGS, host=fake_gateway.host, port=fake_gateway.port)


@pytest.fixture
def resilient_client(resilient_client_config: Dict[str, Any]) -> Iterator[IBClient]:
    """An IBClient connected to ``fake_gateway`` with short intervals; disconnected after."""
    from .client import IBClient

    client = IBClient(config=resilient_client_config)
    try:
        if not client.connect(timeout=CONNECT_TIMEOUT):
            status = client.get_connection_status()
            pytest.fail(
                f"resilient_client could not connect to {resilient_client_config['host']}:"
                f"{resilient_client_config['port']}: {status.get('last_error')}"
            )
        yield client
    finally:
        client.disconnect()
