"""ib_resilience: keeps synchronous Interactive Brokers bots connected and their orders safe.

Public names are imported lazily, so that ``ib_resilience.sim`` (standard library only) can be
used without importing ``ibapi``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "IBClient": "client",
    "with_connection_check": "client",
    "Config": "config",
    "load_config": "config",
    "IBConnectionManager": "connection_manager",
    "ErrorCategory": "error_codes",
    "classify": "error_codes",
    "ConnectionState": "state",
    "CircuitOpenError": "errors",
    "ClientIdInUseError": "errors",
    "ConfigError": "errors",
    "IBConnectionError": "errors",
    "IBRequestError": "errors",
    "IBResilienceError": "errors",
    "OrderNotPlacedError": "errors",
    "OrderRejectedError": "errors",
    "OrderStateUnknownError": "errors",
    "RateLimitError": "errors",
    "ReadOnlyError": "errors",
    "RequestTimeoutError": "errors",
    "OrderCancelError": "submission",
    "OrderResult": "operations",
    "BracketResult": "operations",
    "StrangleResult": "operations",
    "OrderState": "order_tracker",
    "MarketDataSubscription": "subscriptions",
    "Tick": "subscriptions",
    "FakeGateway": "sim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ib_resilience' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .client import IBClient, with_connection_check  # noqa: F401
    from .config import Config, load_config  # noqa: F401
    from .connection_manager import IBConnectionManager  # noqa: F401
    from .error_codes import ErrorCategory, classify  # noqa: F401
    from .errors import (  # noqa: F401
        CircuitOpenError,
        ClientIdInUseError,
        ConfigError,
        IBConnectionError,
        IBRequestError,
        IBResilienceError,
        OrderNotPlacedError,
        OrderRejectedError,
        OrderStateUnknownError,
        RateLimitError,
        ReadOnlyError,
        RequestTimeoutError,
    )
    from .operations import BracketResult, OrderResult, StrangleResult  # noqa: F401
    from .order_tracker import OrderState  # noqa: F401
    from .sim import FakeGateway  # noqa: F401
    from .state import ConnectionState  # noqa: F401
    from .submission import OrderCancelError  # noqa: F401
    from .subscriptions import MarketDataSubscription, Tick  # noqa: F401
