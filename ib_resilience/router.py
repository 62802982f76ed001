"""The bridge's sink: routes each decoded callback to a pending request, the order book, a
market data stream, or connection state.

Every method here runs on the reader thread and must never block: it resolves a future,
updates a record, or hands work to the dispatcher or the watchdog.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .error_codes import (
    RESTORED_DATA_KEPT,
    RESTORED_DATA_LOST,
    UPSTREAM_CODES,
    ErrorCategory,
    classify,
    exception_for,
)
from .errors import IBConnectionError
from .requests import REQUEST_ID_BASE

if TYPE_CHECKING:
    from .connection_manager import IBConnectionManager
    from .operations import OrderIds
    from .order_tracker import OrderTracker
    from .subscriptions import SubscriptionManager

log = logging.getLogger("ib_resilience.router")


class Router:
    """Callbacks in, futures and state out. No policy lives here. Wire with :meth:`attach`
    before the bridge opens a connection."""

    manager: IBConnectionManager
    tracker: OrderTracker
    order_ids: OrderIds
    subs: SubscriptionManager

    def __init__(self) -> None:
        self.next_valid_id: Optional[int] = None
        self.accounts: List[str] = []
        self.sync_exec_req_id: Optional[int] = None  # the executions request of the last re-sync

    def attach(
        self, manager: IBConnectionManager, tracker: OrderTracker, order_ids: OrderIds, subs: SubscriptionManager
    ) -> None:
        self.manager = manager
        self.tracker = tracker
        self.order_ids = order_ids
        self.subs = subs

    # ----------------------------------------------------------- connection

    def on_connection_closed(self, generation: int, reason: str) -> None:
        self.manager.on_connection_closed(generation, reason)
        self.subs.on_session_lost()
        self.tracker.notify()  # order waiters re-check and see the connection is gone

    def nextValidId(self, orderId: int) -> None:  # noqa: N802 - EWrapper names
        self.next_valid_id = orderId
        self.order_ids.sync(orderId)

    def managedAccounts(self, accountsList: str) -> None:  # noqa: N802
        self.accounts = [a for a in accountsList.split(",") if a]

    def currentTime(self, time: int) -> None:  # noqa: N802
        manager = self.manager
        manager.on_current_time()
        manager.pending.resolve_oldest("current_time", time)

    def error(self, req_id: int, code: int, text: str, advanced_json: str = "") -> None:
        category = classify(code, text)
        manager = self.manager
        manager.stats.on_error(code, category.name, text)
        level = logging.INFO if category is ErrorCategory.INFO else logging.WARNING
        log.log(level, "gateway %s %d (req %d): %s", category.name, code, req_id, text)
        if code in UPSTREAM_CODES:
            manager.on_upstream(False)
            self.subs.on_upstream_lost()
        elif code == RESTORED_DATA_LOST:
            manager.on_upstream(True)
            manager.call_soon(lambda: self.subs.restore_all("1101: connectivity restored, data lost"))
        elif code == RESTORED_DATA_KEPT:
            manager.on_upstream(True)
        if req_id >= 0:
            if self.subs.on_error(req_id, code, text):
                pass
            elif category is not ErrorCategory.INFO and manager.pending.get(req_id) is not None:
                manager.pending.fail(req_id, self._exception(code, text, req_id, category))
            elif 0 < req_id < REQUEST_ID_BASE:
                self.tracker.on_error(req_id, code, text)

    @staticmethod
    def _exception(code: int, text: str, req_id: int, category: ErrorCategory) -> Exception:
        """What a pending request fails with: a CONNECTION-category code (504 not connected, a
        5xx send failure) is an IBConnectionError, so ``except ConnectionError`` catches it."""
        if category is ErrorCategory.CONNECTION:
            return IBConnectionError(f"request {req_id} failed: {code} {text}", code=code)
        return exception_for(code, text, req_id)

    # ------------------------------------------------------- request replies

    def _rows(self, req_id: int) -> Optional[List[Any]]:
        pending = self.manager.pending.get(req_id)
        return pending.rows if pending is not None else None

    def _finish(self, req_id: int) -> None:
        pending = self.manager.pending.get(req_id)
        if pending is not None:
            self.manager.pending.resolve(req_id, list(pending.rows))

    def contractDetails(self, reqId: int, contractDetails: Any) -> None:  # noqa: N802
        rows = self._rows(reqId)
        if rows is not None:
            rows.append(contractDetails)

    def contractDetailsEnd(self, reqId: int) -> None:  # noqa: N802
        self._finish(reqId)

    # ----------------------------------------------------------- market data

    @property
    def claim_tick(self) -> Callable[[int, int, Any, Any], bool]:
        """The fast path's tick claim (read once per connection): ticks of our streaming
        subscriptions go straight to them; ``tickPrice``/``tickSize`` below get the rest."""
        return self.subs.claim_tick

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:  # noqa: N802
        if self.subs.on_tick(reqId, tickType, price):
            return
        pending = self.manager.pending.get(reqId)
        if pending is not None:
            pending.data[tickType] = price

    def tickSize(self, reqId: int, tickType: int, size: Any) -> None:  # noqa: N802
        self.subs.on_tick(reqId, tickType, size)

    def tickReqParams(self, tickerId: int, minTick: float, bboExchange: str, snapshotPermissions: int) -> None:  # noqa: N802
        self.subs.on_accepted(tickerId)

    def marketDataType(self, reqId: int, marketDataType: int) -> None:  # noqa: N802
        self.subs.on_accepted(reqId)

    def tickSnapshotEnd(self, reqId: int) -> None:  # noqa: N802
        pending = self.manager.pending.get(reqId)
        if pending is not None:
            self.manager.pending.resolve(reqId, dict(pending.data))

    # ---------------------------------------------------------------- orders

    def openOrder(self, orderId: int, contract: Any, order: Any, orderState: Any) -> None:  # noqa: N802
        self.tracker.on_open_order(orderId, contract, order, orderState)

    def openOrderEnd(self) -> None:  # noqa: N802
        self.tracker.sync_end("open")

    def completedOrder(self, contract: Any, order: Any, orderState: Any) -> None:  # noqa: N802
        self.tracker.on_completed_order(contract, order, orderState)

    def completedOrdersEnd(self) -> None:  # noqa: N802
        self.tracker.sync_end("completed")

    def orderStatus(  # noqa: N802
        self, orderId: int, status: str, filled: Any, remaining: Any, avgFillPrice: float, permId: int,
        parentId: int, lastFillPrice: float, clientId: int, whyHeld: str, mktCapPrice: float = 0.0,
    ) -> None:
        self.tracker.on_order_status(orderId, status, filled, remaining, avgFillPrice, permId, parentId, clientId)

    def execDetails(self, reqId: int, contract: Any, execution: Any) -> None:  # noqa: N802
        self.tracker.on_execution(execution.orderId, execution.execId)
        rows = self._rows(reqId)
        if rows is not None:
            rows.append((contract, execution))

    def execDetailsEnd(self, reqId: int) -> None:  # noqa: N802
        if reqId == self.sync_exec_req_id:
            self.tracker.sync_end("executions")
        self._finish(reqId)

    def position(self, account: str, contract: Any, position: Any, avgCost: float) -> None:  # noqa: N802
        pending = self.manager.pending.oldest_of_kind("positions")
        if pending is not None:
            pending.rows.append((account, contract, float(position), float(avgCost)))

    def positionEnd(self) -> None:  # noqa: N802
        pending = self.manager.pending.oldest_of_kind("positions")
        if pending is not None:
            self.manager.pending.resolve(pending.key, list(pending.rows))

    def stats(self) -> Dict[str, Any]:
        return {"next_valid_id": self.next_valid_id, "accounts": list(self.accounts)}
