"""The exception hierarchy. Ours subclass the builtins where that fits, so that
``except ConnectionError`` and ``except TimeoutError`` catch them."""

from __future__ import annotations

from typing import Any, Optional


class IBResilienceError(Exception):
    """Root of every exception this library raises."""


class ConfigError(IBResilienceError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, message: str, key: Optional[str] = None, source: Optional[str] = None) -> None:
        self.key = key
        self.source = source
        where = f" in {source}" if source else ""
        what = f"config key {key!r}{where}: " if key else (f"config{where}: " if source else "")
        super().__init__(f"{what}{message}")


class IBConnectionError(IBResilienceError, ConnectionError):
    """The gateway cannot be reached, or the connection was lost."""

    def __init__(
        self,
        message: str,
        *,
        host: Optional[str] = None,
        port: Optional[int] = None,
        code: Optional[int] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.code = code
        where = f" ({host}:{port})" if host is not None else ""
        super().__init__(f"{message}{where}")


class ClientIdInUseError(IBConnectionError):
    """The gateway answered 326: another live session uses this client id."""


class RequestTimeoutError(IBResilienceError, TimeoutError):
    """A blocking call ran past its deadline."""

    def __init__(
        self,
        message: str,
        *,
        operation: Optional[str] = None,
        timeout: Optional[float] = None,
        req_id: Optional[int] = None,
    ) -> None:
        self.operation = operation
        self.timeout = timeout
        self.req_id = req_id
        super().__init__(message)


class IBRequestError(IBResilienceError):
    """The gateway answered a request with an error code."""

    def __init__(self, code: int, text: str, req_id: int = -1, category: Any = None) -> None:
        self.code = code
        self.text = text
        self.req_id = req_id
        self.category = category
        cat = f" [{getattr(category, 'name', category)}]" if category is not None else ""
        super().__init__(f"IB error {code}{cat} for request {req_id}: {text}")


class OrderRejectedError(IBRequestError):
    """The gateway rejected an order for good (a PERMANENT error)."""


class RateLimitError(IBRequestError):
    """The gateway reported a pacing or quota violation."""


class CircuitOpenError(IBResilienceError):
    """A guarded operation's breaker is open: the call was refused without sending anything."""

    def __init__(self, operation: str, retry_after: float) -> None:
        self.operation = operation
        self.retry_after = retry_after
        super().__init__(
            f"circuit for {operation!r} is open; next trial in {max(retry_after, 0.0):.1f} s"
        )


class ReadOnlyError(IBResilienceError):
    """An order method was called while the client is configured read-only."""


class OrderNotPlacedError(IBResilienceError):
    """The gateway definitely does not have the order, and it was not resubmitted."""

    def __init__(self, message: str, order_ref: Optional[str] = None) -> None:
        self.order_ref = order_ref
        super().__init__(message)


class OrderStateUnknownError(IBResilienceError, TimeoutError):
    """The fate of an order could not be learned before the deadline."""

    def __init__(self, message: str, order_ref: Optional[str] = None) -> None:
        self.order_ref = order_ref
        super().__init__(message)
