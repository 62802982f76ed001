"""IBClient: the blocking facade users call."""

from __future__ import annotations

import functools
import logging
import os
import random
from typing import Any, Callable, Dict, Optional, TypeVar, Union, cast

from .clock import SYSTEM_CLOCK, Clock
from .config import Config, load_config
from .connection_manager import IBConnectionManager, StateListener
from .error_codes import ErrorCategory
from .errors import IBConnectionError, IBRequestError
from .router import Router
from .state import ConnectionState

log = logging.getLogger("ib_resilience.client")

F = TypeVar("F", bound=Callable[..., Any])
ConfigSource = Union[None, str, "os.PathLike[str]", Dict[str, Any], Config]


def with_connection_check(method: F) -> F:
    """Raise IBConnectionError at once (nothing sent) while not connected; on a CONNECTION-category
    failure of the call, wake the watchdog to check the socket now."""

    @functools.wraps(method)
    def wrapper(self: IBClient, *args: Any, **kwargs: Any) -> Any:
        manager = self._manager
        if not manager.is_connected():
            raise IBConnectionError(
                f"{method.__name__}: not connected (state {manager.state.name})",
                host=manager.config.host,
                port=manager.config.port,
            )
        try:
            return method(self, *args, **kwargs)
        except IBConnectionError as exc:
            manager.probe(f"{method.__name__} failed: {exc}")
            raise
        except IBRequestError as exc:
            if exc.category is ErrorCategory.CONNECTION:
                manager.probe(f"{method.__name__} failed: {exc}")
            raise

    return cast(F, wrapper)


class IBClient:
    """A resilient, synchronous client for TWS / IB Gateway.

    ``connect()`` blocks until the session is ready; afterwards a watchdog keeps it alive and
    reconnects with backoff. Every blocking call has a deadline.
    """

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        client_id: Optional[int] = None,
        config: ConfigSource = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: Optional[random.Random] = None,
    ) -> None:
        overrides = {k: v for k, v in (("host", host), ("port", port), ("client_id", client_id)) if v is not None}
        self.config: Config = load_config(config, **overrides)
        self._router = Router()
        self._manager = IBConnectionManager(self.config, sink=self._router, clock=clock, rng=rng)
        self._router.attach(self._manager)

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike[str]], **overrides: Any) -> IBClient:
        """Build a client from a YAML config file, with keyword overrides on top."""
        clock = overrides.pop("clock", SYSTEM_CLOCK)
        rng = overrides.pop("rng", None)
        return cls(config=load_config(path, **overrides), clock=clock, rng=rng)

    # ------------------------------------------------------------ connection

    def connect(self, timeout: Optional[float] = None) -> bool:
        """Connect, retrying with backoff per config; True once ready, False if it gave up
        (state ERROR) or ``timeout`` passed first (the watchdog then keeps trying)."""
        return self._manager.connect(timeout)

    def disconnect(self) -> None:
        """Close the session and join every thread this client started. Idempotent."""
        self._manager.disconnect()

    def is_connected(self) -> bool:
        return self._manager.is_connected()

    @property
    def state(self) -> ConnectionState:
        return self._manager.state

    def add_state_listener(self, fn: StateListener) -> None:
        """``fn(old, new, reason)`` on every transition; called on the dispatcher thread."""
        self._manager.add_state_listener(fn)

    def wait_for_state(self, *states: ConnectionState, timeout: float) -> bool:
        """Block until the state is one of ``states`` or ``timeout`` passes."""
        return self._manager.wait_for_state(tuple(states), timeout)

    def get_connection_status(self) -> Dict[str, Any]:
        status = self._manager.status()
        status.update(self._router.stats())
        return status

    def __enter__(self) -> IBClient:
        if not self.connect():
            raise IBConnectionError(
                f"could not connect: {self._manager.stats.last_error}",
                host=self.config.host,
                port=self.config.port,
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # -------------------------------------------------------------- requests

    def _timeout(self, timeout: Optional[float]) -> float:
        if timeout is None:
            return self.config.request_timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        return float(timeout)

    @with_connection_check
    def get_current_time(self, timeout: Optional[float] = None) -> int:
        """The gateway's clock, in epoch seconds."""
        deadline = self._timeout(timeout)
        pending = self._manager.register("current_time")
        self._manager.bridge.reqCurrentTime()
        return cast(int, self._manager.pending.wait(pending, deadline, "get_current_time"))
