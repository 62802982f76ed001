"""Shared fixtures: a simulated gateway and resilient clients against it (short intervals)."""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, Iterator, List

import pytest

from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway

from resilient import FAST


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    gateway = FakeGateway(seed=7, handshake_timeout=5.0, frame_timeout=2.0)
    gateway.start()
    yield gateway
    gateway.close()


@pytest.fixture
def new_client(gw: FakeGateway) -> Iterator[Callable[..., IBClient]]:
    """A factory of unconnected clients for ``gw``: FAST config plus keyword overrides."""
    made: List[IBClient] = []

    def make(**overrides: Any) -> IBClient:
        cfg: Dict[str, Any] = dict(FAST, port=gw.port, client_id=1)
        cfg.update(overrides)
        client = IBClient(config=cfg, rng=random.Random(3))
        made.append(client)
        return client

    yield make
    for client in made:
        client.disconnect()
