"""Connection states and the table of allowed transitions."""

from __future__ import annotations

import enum
from typing import FrozenSet, Mapping


class ConnectionState(enum.Enum):
    """Where the connection to the gateway stands."""

    DISCONNECTED = "DISCONNECTED"  # never connected, or closed by the user
    CONNECTING = "CONNECTING"  # connect() in progress, no session yet
    CONNECTED = "CONNECTED"  # ready: next valid id and managed accounts received
    RECONNECTING = "RECONNECTING"  # lost an established session, recovering by itself
    ERROR = "ERROR"  # gave up: attempts exhausted or a permanent failure; connect() may be called again


S = ConnectionState

ALLOWED_TRANSITIONS: Mapping[ConnectionState, FrozenSet[ConnectionState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING}),
    S.CONNECTING: frozenset({S.CONNECTED, S.ERROR, S.DISCONNECTED}),
    S.CONNECTED: frozenset({S.RECONNECTING, S.DISCONNECTED, S.ERROR}),
    S.RECONNECTING: frozenset({S.CONNECTED, S.ERROR, S.DISCONNECTED}),
    S.ERROR: frozenset({S.CONNECTING, S.DISCONNECTED}),
}


class InvalidTransition(RuntimeError):
    """A transition outside the table was attempted: a bug in this library, never user error."""


def check_transition(old: ConnectionState, new: ConnectionState) -> None:
    if new not in ALLOWED_TRANSITIONS[old]:
        raise InvalidTransition(f"connection state {old.name} -> {new.name} is not allowed")
