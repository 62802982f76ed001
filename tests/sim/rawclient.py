"""A tiny recording client on the REAL ``ibapi`` (either line) for driving the simulator.

Every ``EWrapper`` callback is recorded as ``(name, args)`` into ``events``; ``error`` is
normalised to ``("error", (req_id, code, text))`` for both ``ibapi`` lines.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from ibapi.client import EClient
from ibapi.wrapper import EWrapper

ERROR_HAS_TIME = "errorTime" in inspect.signature(EWrapper.error).parameters
CANCEL_TAKES_ORDER_CANCEL = len(inspect.signature(EClient.cancelOrder).parameters) > 2
Event = Tuple[str, tuple]

_SKIP = {"error", "logAnswer", "commissionAndFeesReport"}


class RawClient(EWrapper, EClient):
    """Records callbacks; ``wait_for`` blocks (bounded) until a predicate over them holds."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self.events: List[Event] = []
        self.times: List[float] = []  # monotonic arrival time of each event
        self._cond = threading.Condition()
        self._run_thread: Optional[threading.Thread] = None
        self._reader_threads: List[threading.Thread] = []
        for name, _member in inspect.getmembers(EWrapper, inspect.isfunction):
            if name.startswith("_") or name in _SKIP or name in EClient.__dict__:
                continue
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self._record(name, args)

        return record

    def _record(self, name: str, args: tuple) -> None:
        with self._cond:
            self.events.append((name, args))
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def commissionAndFeesReport(self, report: Any) -> None:  # noqa: N802 - 10.x's name
        self._record("commissionReport", (report,))  # 9.81's name, so tests read the same

    def error(self, reqId: int, *args: Any) -> None:  # noqa: N803 - ibapi's name
        if ERROR_HAS_TIME:
            code, text = args[1], args[2]
        else:
            code, text = args[0], args[1]
        self._record("error", (reqId, int(code), str(text)))

    # ------------------------------------------------------------------ helpers

    def start(self, port: int, client_id: int = 0, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
        """Connect (in a daemon thread, bounded) and start ``run()``. True once ready
        (nextValidId and managedAccounts received)."""
        done = threading.Event()

        def connect() -> None:
            try:
                self.connect(host, port, client_id)
            finally:
                done.set()

        threading.Thread(target=connect, name="rawclient-connect", daemon=True).start()
        if not done.wait(timeout):
            return False
        if getattr(self, "reader", None) is not None:
            self._reader_threads.append(self.reader)
        if self.serverVersion() is None:
            return False  # no version reply: connect() gave up (refused, or closed early)
        # run() even if the socket is already gone: queued messages (e.g. 326) still decode
        self._run_thread = threading.Thread(target=self.run, name="rawclient-run", daemon=True)
        self._run_thread.start()
        try:
            self.wait_for(
                lambda: (self.has("nextValidId") and self.has("managedAccounts")) or self.has("connectionClosed"),
                timeout,
            )
        except TimeoutError:
            return False
        return self.has("nextValidId") and self.has("managedAccounts")

    def stop(self) -> None:
        """Disconnect and wait for the run and reader threads (bounded)."""
        self.hang_up()
        self.join()

    def hang_up(self) -> None:
        """Close the socket and let ``run()`` drain its queue and disconnect by itself.

        Calling ``disconnect()`` from here would reset the client while ``run()`` still
        decodes queued messages (10.x then fails on ``serverVersion() is None``).
        """
        conn = self.conn
        sock = getattr(conn, "socket", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv at once
            except OSError:
                pass
        if conn is not None:
            conn.disconnect()
        if self._run_thread is None and self.conn is not None:
            self.reset()  # run() never started: nothing else will

    def join(self) -> None:
        for thread in [self._run_thread, *self._reader_threads]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met; last events: {self.events[-8:]}")
                self._cond.wait(remaining)

    def named(self, name: str) -> List[tuple]:
        with self._cond:
            return [args for n, args in self.events if n == name]

    def has(self, name: str, pred: Callable[[tuple], bool] = lambda a: True) -> bool:
        return any(pred(a) for a in self.named(name))

    def errors(self) -> List[Tuple[int, int, str]]:
        return [tuple(a) for a in self.named("error")]  # type: ignore[misc]

    def error_codes(self) -> List[int]:
        return [code for _, code, _ in self.errors()]

    def wait_error(self, code: int, timeout: float = 10.0) -> Tuple[int, int, str]:
        self.wait_for(lambda: code in self.error_codes(), timeout)
        return next(e for e in self.errors() if e[1] == code)

    def wait_event(self, name: str, pred: Callable[[tuple], bool] = lambda a: True, timeout: float = 10.0) -> tuple:
        self.wait_for(lambda: self.has(name, pred), timeout)
        return next(a for a in self.named(name) if pred(a))

    def first_time(self, name: str, pred: Callable[[tuple], bool] = lambda a: True) -> float:
        """Arrival time of the first matching event (it must exist)."""
        with self._cond:
            return next(t for (n, a), t in zip(self.events, self.times) if n == name and pred(a))

    def names(self) -> List[str]:
        with self._cond:
            return [n for n, _ in self.events]

    def cancel_order(self, order_id: int) -> None:
        if CANCEL_TAKES_ORDER_CANCEL:
            from ibapi.order_cancel import OrderCancel  # 10.x only

            self.cancelOrder(order_id, OrderCancel())
        else:
            self.cancelOrder(order_id)
