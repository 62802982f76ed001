"""A recording sink for the bridge tests."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Tuple


class RecordingSink:
    """Records every callback as ``(name, args)``; ``wait_for(name)`` blocks with a deadline."""

    def __init__(self, raise_in: Tuple[str, ...] = ()) -> None:
        self.calls: List[Tuple[str, tuple]] = []
        self.closes: List[Tuple[int, str]] = []
        self._raise_in = raise_in
        self._cond = threading.Condition()
        self.on_close_hook: Callable[[int, str], None] = lambda gen, reason: None

    def _record(self, name: str, args: tuple) -> None:
        with self._cond:
            self.calls.append((name, args))
            self._cond.notify_all()
        if name in self._raise_in or "*" in self._raise_in:
            raise RuntimeError(f"sink failure in {name}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self._record(name, args)

    def error(self, req_id: int, code: int, text: str, advanced_json: str) -> None:
        self._record("error", (req_id, code, text, advanced_json))

    def on_connection_closed(self, generation: int, reason: str) -> None:
        self.on_close_hook(generation, reason)
        with self._cond:
            self.closes.append((generation, reason))
            self._cond.notify_all()

    def named(self, name: str) -> List[tuple]:
        with self._cond:
            return [args for n, args in self.calls if n == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> List[tuple]:
        with self._cond:
            self._cond.wait_for(lambda: len([1 for n, _ in self.calls if n == name]) >= count, timeout)
            return [args for n, args in self.calls if n == name]

    def wait_closes(self, count: int = 1, timeout: float = 10.0) -> List[Tuple[int, str]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.closes) >= count, timeout)
            return list(self.closes)
