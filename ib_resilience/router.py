"""The bridge's sink: routes each decoded callback to a pending request or to connection state.

Every method here runs on the reader thread and must never block: it resolves a future,
updates a counter, or hands work to the dispatcher.
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
from .requests import REQUEST_ID_BASE

if TYPE_CHECKING:
    from .connection_manager import IBConnectionManager
    from .operations import OrderIds
    from .order_tracker import OrderTracker

log = logging.getLogger("ib_resilience.router")

ErrorListener = Callable[[int, int, str, ErrorCategory], None]


class Router:
    """Callbacks in, futures and state out. No policy lives here."""

    def __init__(self) -> None:
        self.manager: Optional[IBConnectionManager] = None
        self.tracker: Optional[OrderTracker] = None
        self.order_ids: Optional[OrderIds] = None
        self.next_valid_id: Optional[int] = None
        self.accounts: List[str] = []
        self.error_listeners: List[ErrorListener] = []

    def attach(self, manager: IBConnectionManager, tracker: OrderTracker, order_ids: OrderIds) -> None:
        self.manager = manager
        self.tracker = tracker
        self.order_ids = order_ids

    # ----------------------------------------------------------- connection

    def on_connection_closed(self, generation: int, reason: str) -> None:
        if self.manager is not None:
            self.manager.on_connection_closed(generation, reason)
        if self.tracker is not None:
            self.tracker.notify()  # order waiters re-check and see the connection is gone

    def nextValidId(self, orderId: int) -> None:  # noqa: N802 - EWrapper names
        self.next_valid_id = orderId
        if self.order_ids is not None:
            self.order_ids.sync(orderId)

    def managedAccounts(self, accountsList: str) -> None:  # noqa: N802
        self.accounts = [a for a in accountsList.split(",") if a]

    def currentTime(self, time: int) -> None:  # noqa: N802
        manager = self.manager
        if manager is None:
            return
        manager.on_current_time()
        pending = manager.pending.oldest_of_kind("current_time")
        if pending is not None:
            manager.pending.resolve(pending.key, time)

    def error(self, req_id: int, code: int, text: str, advanced_json: str = "") -> None:
        category = classify(code, text)
        manager = self.manager
        if manager is not None:
            manager.stats.on_error(code, category.name, text)
            if code in UPSTREAM_CODES:
                manager.on_upstream(False)
            elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
                manager.on_upstream(True)
        level = logging.INFO if category is ErrorCategory.INFO else logging.WARNING
        log.log(level, "gateway %s %d (req %d): %s", category.name, code, req_id, text)
        if manager is not None and req_id >= 0 and category is not ErrorCategory.INFO:
            pending = manager.pending.get(req_id)
            if pending is not None:
                manager.pending.fail(req_id, exception_for(code, text, req_id))
        if self.tracker is not None and 0 < req_id < REQUEST_ID_BASE:
            self.tracker.on_error(req_id, code, text)
        for listener in list(self.error_listeners):
            try:
                listener(req_id, code, text, category)
            except Exception:
                log.exception("error listener %r raised; ignored", listener)

    # ------------------------------------------------------- request replies

    def _rows(self, req_id: int) -> Optional[List[Any]]:
        manager = self.manager
        if manager is None:
            return None
        pending = manager.pending.get(req_id)
        return pending.rows if pending is not None else None

    def _finish(self, req_id: int) -> None:
        manager = self.manager
        if manager is None:
            return
        pending = manager.pending.get(req_id)
        if pending is not None:
            manager.pending.resolve(req_id, list(pending.rows))

    def contractDetails(self, reqId: int, contractDetails: Any) -> None:  # noqa: N802
        rows = self._rows(reqId)
        if rows is not None:
            rows.append(contractDetails)

    def contractDetailsEnd(self, reqId: int) -> None:  # noqa: N802
        self._finish(reqId)

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:  # noqa: N802
        manager = self.manager
        if manager is None:
            return
        pending = manager.pending.get(reqId)
        if pending is not None:
            pending.data[tickType] = price

    def tickSnapshotEnd(self, reqId: int) -> None:  # noqa: N802
        manager = self.manager
        if manager is None:
            return
        pending = manager.pending.get(reqId)
        if pending is not None:
            manager.pending.resolve(reqId, dict(pending.data))

    # ---------------------------------------------------------------- orders

    def openOrder(self, orderId: int, contract: Any, order: Any, orderState: Any) -> None:  # noqa: N802
        if self.tracker is not None:
            self.tracker.on_open_order(orderId, contract, order, orderState)

    def orderStatus(  # noqa: N802
        self, orderId: int, status: str, filled: Any, remaining: Any, avgFillPrice: float, permId: int,
        parentId: int, lastFillPrice: float, clientId: int, whyHeld: str, mktCapPrice: float = 0.0,
    ) -> None:
        if self.tracker is not None:
            self.tracker.on_order_status(orderId, status, filled, remaining, avgFillPrice, permId, parentId, clientId)

    def execDetails(self, reqId: int, contract: Any, execution: Any) -> None:  # noqa: N802
        if self.tracker is not None:
            self.tracker.on_execution(execution.orderId, execution.execId)
        rows = self._rows(reqId)
        if rows is not None:
            rows.append((contract, execution))

    def execDetailsEnd(self, reqId: int) -> None:  # noqa: N802
        self._finish(reqId)

    def position(self, account: str, contract: Any, position: Any, avgCost: float) -> None:  # noqa: N802
        manager = self.manager
        if manager is None:
            return
        pending = manager.pending.oldest_of_kind("positions")
        if pending is not None:
            pending.rows.append((account, contract, float(position), float(avgCost)))

    def positionEnd(self) -> None:  # noqa: N802
        manager = self.manager
        if manager is None:
            return
        pending = manager.pending.oldest_of_kind("positions")
        if pending is not None:
            manager.pending.resolve(pending.key, list(pending.rows))

    def stats(self) -> Dict[str, Any]:
        return {"next_valid_id": self.next_valid_id, "accounts": list(self.accounts)}
