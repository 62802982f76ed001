"""Fixtures: a simulated gateway per test, real ``ibapi`` clients, and a thread-leak check."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, List

import pytest

from ib_resilience.sim import FakeGateway

from .rawclient import RawClient


def _wait_threads(baseline: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)  # polling a count: no event to wait on for foreign threads
    return threading.active_count()


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    baseline = threading.active_count()
    gateway = FakeGateway(seed=7, handshake_timeout=5.0, frame_timeout=2.0)
    gateway.start()
    yield gateway
    gateway.close()
    assert _wait_threads(baseline) <= baseline, [t.name for t in threading.enumerate()]


@pytest.fixture
def clients(gw: FakeGateway) -> Iterator[Callable[[], RawClient]]:
    made: List[RawClient] = []

    def make() -> RawClient:
        c = RawClient()
        made.append(c)
        return c

    yield make
    for c in made:
        c.hang_up()
    for c in made:  # joined after every hang-up: readers notice within their 1 s recv timeout
        c.join()


@pytest.fixture
def client(gw: FakeGateway, clients: Callable[[], RawClient]) -> RawClient:
    c = clients()
    assert c.start(gw.port, client_id=1)
    return c
