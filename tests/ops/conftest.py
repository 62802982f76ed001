"""The operations' tests start from a connected client."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from ib_resilience.client import IBClient


@pytest.fixture
def make_client(new_client: Callable[..., IBClient]) -> Callable[..., IBClient]:
    def make(**overrides: Any) -> IBClient:
        client = new_client(**overrides)
        assert client.connect()
        return client

    return make


@pytest.fixture
def client(make_client: Callable[..., IBClient]) -> IBClient:
    return make_client()
