"""A recording EWrapper and a normaliser that makes callback arguments comparable by type and
value (``TickAttrib`` by its attributes)."""

from __future__ import annotations

import inspect
from typing import Any, List, Tuple

from ibapi.wrapper import EWrapper


def norm(value: Any) -> Any:
    if isinstance(value, (int, float, str, bytes, bool)) or value is None:
        return (type(value).__name__, repr(value))
    if type(value).__name__ == "Decimal":
        return ("Decimal", repr(value))
    return (type(value).__name__, tuple(sorted((k, norm(v)) for k, v in vars(value).items())))


class RecordingWrapper(EWrapper):
    """Every public EWrapper method records ``(name, normalised args)``."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        self.calls: List[Tuple[str, tuple]] = []


def _recorder(name: str) -> Any:
    def record(self: RecordingWrapper, *args: Any) -> None:
        self.calls.append((name, tuple(norm(a) for a in args)))

    record.__name__ = name
    return record


for _name, _ in inspect.getmembers(EWrapper, inspect.isfunction):
    if not _name.startswith("_") and _name != "logAnswer":
        setattr(RecordingWrapper, _name, _recorder(_name))
