"""The connection core's tests build their clients unconnected."""

from __future__ import annotations

from typing import Callable

import pytest

from ib_resilience.client import IBClient


@pytest.fixture
def make_client(new_client: Callable[..., IBClient]) -> Callable[..., IBClient]:
    return new_client
