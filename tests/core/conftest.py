"""Fixtures for the connection core: a simulated gateway and resilient clients with short intervals."""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway

FAST: Dict[str, Any] = {
    "connect_timeout": 2.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.05,
    "reconnect_delay_max": 0.2,
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 0.4,
    "request_timeout": 5.0,
    "stable_after": 60.0,
    "client_id_in_use_delay": 0.1,
}


def wait_threads_back(baseline: List[str], timeout: float = 10.0) -> List[str]:
    """Names of threads still alive beyond ``baseline`` once ``timeout`` passes (or none)."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t.name for t in threading.enumerate() if t.name not in baseline]
        if not extra or time.monotonic() >= deadline:
            return extra
        time.sleep(0.02)  # polling foreign threads' exit: there is no event to wait on


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    gateway = FakeGateway(seed=7, handshake_timeout=5.0, frame_timeout=2.0)
    gateway.start()
    yield gateway
    gateway.close()


@pytest.fixture
def make_client(gw: FakeGateway) -> Iterator[Callable[..., IBClient]]:
    made: List[IBClient] = []

    def make(**overrides: Any) -> IBClient:
        cfg = dict(FAST, port=gw.port, client_id=overrides.pop("client_id", 1))
        cfg.update(overrides)
        client = IBClient(config=cfg, rng=random.Random(3))
        made.append(client)
        return client

    yield make
    for client in made:
        client.disconnect()
