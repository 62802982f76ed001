"""The order engine: booking, validation, matching against the simulated market, fills.

Runs under the gateway lock (handlers on the loop thread; price moves from the ticker thread
or ``set_price``). Orders, executions, positions and per-client-id order id high-water marks
live here and survive connection drops and ``restart``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from . import protocol as P
from .accounts import AccountHandlers
from .market import Instrument
from .protocol import In, Out
from .wire import Field, encode_frame

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import FakeGateway, _Session

log = logging.getLogger("ib_resilience.sim.orders")

UNSET_DOUBLE_TEXT = "1.7976931348623157E308"
_UNSET_SPELLINGS = ("", "1.7976931348623157e+308", "1.7976931348623157E308")
OPEN_STATUSES = ("PreSubmitted", "Submitted")
SUPPORTED_TYPES = ("MKT", "LMT", "STP", "STP LMT")


def _price(text: str) -> Optional[float]:
    return None if text in _UNSET_SPELLINGS else float(text)


@dataclass(frozen=True)
class Leg:
    con_id: int
    ratio: int
    action: str
    key: str  # the leg's price key (local symbol for options)


@dataclass(frozen=True)
class ContractSpec:
    """The contract of an order, as the gateway resolved it."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = "SMART"
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""
    legs: Tuple[Leg, ...] = ()

    @property
    def key(self) -> str:
        if self.sec_type == "BAG":
            return "BAG"
        return self.symbol if self.sec_type == "STK" else self.local_symbol


@dataclass(frozen=True)
class Fill:
    exec_id: str
    time: str
    quantity: float
    price: float
    commission: float


@dataclass(frozen=True)
class OrderRecord:
    """A snapshot of one order as the gateway saw it (``gw.orders``)."""

    client_id: int
    order_id: int
    perm_id: int
    order_ref: str
    contract: ContractSpec
    action: str
    quantity: float
    order_type: str
    lmt_price: Optional[float]
    aux_price: Optional[float]
    tif: str
    parent_id: int
    oca_group: str
    transmit: bool
    account: str
    status: str
    filled: float
    avg_fill_price: float
    fills: Tuple[Fill, ...]
    error: Optional[int] = None  # the rejecting error code, for rejected messages
    modifications: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES or self.status == "Inactive"

    @property
    def symbol(self) -> str:
        return self.contract.symbol

    @property
    def prices(self) -> Tuple[Optional[float], Optional[float]]:
        return (self.lmt_price, self.aux_price)


_RECORD_FIELDS = tuple(f.name for f in fields(OrderRecord))


@dataclass
class _Order:
    client_id: int
    order_id: int
    perm_id: int
    order_ref: str
    contract: ContractSpec
    action: str
    quantity: float
    order_type: str
    lmt_price: Optional[float]
    aux_price: Optional[float]
    tif: str
    parent_id: int
    oca_group: str
    transmit: bool
    account: str
    outside_rth: bool = False
    status: str = "Inactive"  # Inactive until transmitted (bracket children wait for the last)
    triggered: bool = False  # a stop has been triggered
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    fills: List[Fill] = field(default_factory=list)
    error: Optional[int] = None
    modifications: int = 0
    completed_time: str = ""

    def record(self) -> OrderRecord:
        values = {name: getattr(self, name) for name in _RECORD_FIELDS}
        values["fills"] = tuple(self.fills)
        return OrderRecord(**values)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled)


@dataclass
class Execution:
    order: _Order
    contract: ContractSpec
    exec_id: str
    time: str
    side: str  # BOT / SLD
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission: float


@dataclass
class Position:
    contract: ContractSpec
    quantity: float = 0.0
    avg_cost: float = 0.0
    realized: float = 0.0


class OrderEngine:
    """Books and fills orders; emits the messages a gateway sends about them."""

    def __init__(self, gw: FakeGateway, seed: int = 7) -> None:
        self.gw = gw
        self.market = gw.market
        self._hwm: Dict[int, int] = {}  # client id → highest order id used
        self._orders: List[_Order] = []  # every booked order, arrival order
        self._live: List[_Order] = []  # booked orders not yet done (pruned lazily), for matching
        self._records: List[object] = []  # _Order (live) or OrderRecord (rejected), arrival order
        self._by_id: Dict[Tuple[int, int], _Order] = {}
        self._executions: List[Execution] = []
        self._positions: Dict[Tuple[str, int], Position] = {}
        self._next_perm = 1_000_000 + (seed % 1000) * 10_000
        self._next_exec = 1
        self._holding = False
        self._held: List[Tuple[int, bytes]] = []  # (session serial, frames) while acks are held
        self.accounts = AccountHandlers(self)

    # ------------------------------------------------------------------ wiring

    def handlers(self) -> Dict[int, Callable[[_Session, List[str]], None]]:
        table: Dict[int, Callable[[_Session, List[str]], None]] = {
            In.PLACE_ORDER: self._on_place_order,
            In.CANCEL_ORDER: self._on_cancel_order,
            In.REQ_GLOBAL_CANCEL: self._on_global_cancel,
            In.REQ_OPEN_ORDERS: self._on_req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self._on_req_all_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self._on_req_auto_open_orders,
            In.REQ_COMPLETED_ORDERS: self._on_req_completed_orders,
            In.REQ_EXECUTIONS: self._on_req_executions,
        }
        table.update(self.accounts.handlers())
        return table

    def next_valid_id(self, client_id: int) -> int:
        return max(self._hwm.get(client_id, 0) + 1, self.gw.first_order_id)

    def on_session_ready(self, session: _Session) -> None:
        """A gateway re-sends this client id's open orders right after the startup burst."""
        for order in self._live_orders():
            if order.client_id == session.client_id and order.is_open:
                self.gw.send(session, self._open_order_fields(order))
                self.gw.send(session, self._order_status_fields(order))

    def on_session_closed(self, session: _Session) -> None:
        self._held = [(serial, data) for serial, data in self._held if serial != session.serial]
        self.accounts.drop_session(session.serial)

    def hold_acks(self, hold: bool) -> None:
        self._holding = hold
        if not hold:
            held, self._held = self._held, []
            sessions = {s.serial: s for s in self.gw.all_ready_sessions()}
            for serial, data in held:
                if serial in sessions:
                    self.gw.enqueue_bytes(sessions[serial], data)

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> List[OrderRecord]:
        return [r.record() if isinstance(r, _Order) else r for r in self._records]  # type: ignore[union-attr,misc]

    def positions_snapshot(self) -> Dict[Tuple[str, str], float]:
        out: Dict[Tuple[str, str], float] = {}
        for (account, _), pos in self._positions.items():
            out[(account, pos.contract.key)] = pos.quantity
        return out

    def positions(self) -> List[Tuple[str, Position]]:
        return [(account, pos) for (account, _), pos in self._positions.items()]

    def executions(self) -> List[Execution]:
        return list(self._executions)

    # ------------------------------------------------------------------ emitting

    def _emit(self, order: _Order, frames: Sequence[Sequence[Field]]) -> None:
        """Send frames about ``order`` to its owner's live sessions (or hold them)."""
        data = b"".join(encode_frame(f) for f in frames)
        for f in frames:
            if f and f[0] == Out.ERR_MSG:
                self.gw.count_error(int(f[3]))  # type: ignore[arg-type]
        for session in self.gw.sessions_for_client(order.client_id):
            if self._holding:
                self._held.append((session.serial, data))
            else:
                self.gw.enqueue_bytes(session, data)

    def _reject(self, session: _Session, order_id: int, code: int, text: str, record: OrderRecord) -> None:
        self.gw.send(session, P.err_msg(order_id, code, text))
        self._records.append(replace(record, status="Rejected", error=code))
        log.info("order %d from client %s rejected with %d", order_id, session.client_id, code)

    # ------------------------------------------------------------------ placing

    def _parse_contract(self, f: List[str]) -> Tuple[Optional[ContractSpec], int]:
        """Resolve the contract of a PLACE_ORDER; returns (spec or None, index after hidden)."""
        con_id = int(f[2] or 0)
        symbol, sec_type, expiry = f[3], f[4], f[5]
        strike = _price(f[6]) or 0.0
        right, exchange, currency, local = f[7], f[9], f[11], f[12]
        i = 35
        if sec_type == "BAG":
            n = int(f[i] or 0)
            i += 1
            legs = []
            ok = True
            for _ in range(n):
                leg_con, ratio, action = int(f[i]), int(f[i + 1]), f[i + 2]
                i += 8
                inst = self.market.by_con_id(leg_con)
                if inst is None:
                    ok = False
                    continue
                legs.append(Leg(leg_con, ratio, action, inst.key))
            n_prices = int(f[i] or 0)
            i += 1 + n_prices
            n_params = int(f[i] or 0)
            i += 1 + 2 * n_params
            if not ok or not legs:
                return None, i
            return ContractSpec(0, symbol, "BAG", exchange=exchange or "SMART", currency=currency or "USD",
                                legs=tuple(legs)), i
        found = self.market.resolve(con_id, symbol, sec_type, expiry=expiry, strike=strike, right=right,
                                    local_symbol=local)
        if len(found) != 1:
            return None, i
        return self._spec(found[0]), i

    @staticmethod
    def _spec(inst: Instrument) -> ContractSpec:
        return ContractSpec(
            con_id=inst.con_id,
            symbol=inst.symbol,
            sec_type=inst.sec_type,
            expiry=inst.expiry,
            strike=inst.strike,
            right=inst.right,
            multiplier=inst.multiplier,
            exchange=inst.exchange,
            currency=inst.currency,
            local_symbol=inst.local_symbol,
            trading_class=inst.trading_class,
        )

    def _on_place_order(self, session: _Session, f: List[str]) -> None:
        client_id = session.client_id
        assert client_id is not None
        order_id = int(f[1])
        spec, i = self._parse_contract(f)
        account = f[23] if f[23] in self.gw.accounts else self.gw.accounts[0]
        draft = _Order(
            client_id=client_id,
            order_id=order_id,
            perm_id=0,
            order_ref=f[26],
            contract=spec or ContractSpec(int(f[2] or 0), f[3], f[4]),
            action=f[16].upper(),
            quantity=float(f[17] or 0),
            order_type=f[18].upper(),
            lmt_price=_price(f[19]),
            aux_price=_price(f[20]),
            tif=(f[21] or "DAY").upper(),
            oca_group=f[22],
            account=account,
            transmit=f[27] != "0",
            parent_id=int(f[28] or 0),
            outside_rth=f[33] == "1",
        )
        existing = self._by_id.get((client_id, order_id))
        if existing is not None and (existing.is_open or existing.status == "Inactive"):
            self._modify(session, existing, draft)
            return
        record = draft.record()
        if order_id <= self._hwm.get(client_id, 0):
            self._reject(session, order_id, 103, P.ERROR_TEXTS[103], record)
            return
        self._hwm[client_id] = order_id  # a rejected id is still used
        e_trade_only, firm_quote_only = f[i + 18], f[i + 19]
        if e_trade_only == "1":
            self._reject(session, order_id, 10268, P.ERROR_TEXTS[10268], record)
            return
        if firm_quote_only == "1":
            self._reject(session, order_id, 10269, P.ERROR_TEXTS[10269], record)
            return
        if spec is None:
            self._reject(session, order_id, 200, P.ERROR_TEXTS[200], record)
            return
        problem = self._validate(draft)
        if problem is not None:
            code, text = problem
            self._reject(session, order_id, code, text, record)
            return
        draft.perm_id = self._next_perm
        self._next_perm += 1
        self._orders.append(draft)
        self._live.append(draft)
        self._records.append(draft)
        self._by_id[(client_id, order_id)] = draft
        log.info("order %d/%d booked: %s %s %s %s", client_id, order_id, draft.action, P.quantity_field(draft.quantity),
                 draft.contract.key, draft.order_type)
        if draft.transmit:
            self._transmit_family(draft)
        self.gw.notify()

    def _validate(self, order: _Order) -> Optional[Tuple[int, str]]:
        if order.quantity <= 0:
            return 434, "The order size cannot be zero"
        if order.action not in ("BUY", "SELL", "SSHORT"):
            return 321, f"Error validating request:-'bN' : cause - Invalid side {order.action}"
        if order.order_type not in SUPPORTED_TYPES:
            return 387, f"Unsupported order type {order.order_type} (simulator)"
        if order.order_type in ("LMT", "STP LMT") and order.lmt_price is None:
            return 321, "Error validating request:-'bO' : cause - Limit price is missing"
        if order.order_type in ("STP", "STP LMT") and order.aux_price is None:
            return 321, "Error validating request:-'bO' : cause - Stop price is missing"
        if order.parent_id:
            parent = self._by_id.get((order.client_id, order.parent_id))
            if parent is None or parent.status in ("Cancelled", "ApiCancelled"):
                return 135, f"Can't find order with id ={order.parent_id}"
        return None

    def _modify(self, session: _Session, order: _Order, draft: _Order) -> None:
        order.quantity = draft.quantity
        order.lmt_price = draft.lmt_price
        order.aux_price = draft.aux_price
        order.tif = draft.tif
        order.order_ref = draft.order_ref or order.order_ref
        order.modifications += 1
        log.info("order %d/%d modified", order.client_id, order.order_id)
        if draft.transmit and order.status == "Inactive":
            self._transmit_family(order)
        elif order.is_open:
            self._emit(order, [self._open_order_fields(order), self._order_status_fields(order)])
            self._match(order)

    def _family(self, order: _Order) -> List[_Order]:
        root_id = order.parent_id or order.order_id
        return [
            o
            for o in self._live_orders()
            if o.client_id == order.client_id and (o.order_id == root_id or o.parent_id == root_id)
        ]

    def _transmit_family(self, order: _Order) -> None:
        """Transmit ``order`` and every untransmitted order of its bracket, parent first."""
        family = sorted(self._family(order), key=lambda o: (o.parent_id != 0, o.order_id))
        for o in family:
            if o.status != "Inactive":
                continue
            parent = self._by_id.get((o.client_id, o.parent_id)) if o.parent_id else None
            # children wait (PreSubmitted) until their parent has filled
            o.status = "PreSubmitted" if parent is not None and parent.status != "Filled" else "Submitted"
            self._emit(o, [self._open_order_fields(o), self._order_status_fields(o)])
        for o in family:
            if o.is_open:
                self._match(o)

    # ------------------------------------------------------------------ matching

    def _live_orders(self) -> List[_Order]:
        """Orders still working or waiting (Inactive, PreSubmitted, Submitted), arrival order."""
        self._live = [o for o in self._live if o.is_open or o.status == "Inactive"]
        return self._live

    def on_price(self, key: str) -> None:
        for order in list(self._live_orders()):
            if order.status != "Submitted":
                continue
            keys = [leg.key for leg in order.contract.legs] if order.contract.legs else [order.contract.key]
            if key in keys:
                self._match(order)

    def _market_price(self, order: _Order) -> float:
        if order.contract.legs:
            total = 0.0
            for leg in order.contract.legs:
                sign = 1 if leg.action == "BUY" else -1
                total += sign * leg.ratio * self.market.price(leg.key)
            return round(total, 2)
        return self.market.price(order.contract.key)

    def _match(self, order: _Order) -> None:
        if order.status != "Submitted":
            return
        price = self._market_price(order)
        buy = order.action == "BUY"
        fill_price: Optional[float] = None
        kind = order.order_type
        if kind in ("STP", "STP LMT") and not order.triggered:
            stop = order.aux_price or 0.0
            if (buy and price >= stop) or (not buy and price <= stop):
                order.triggered = True
        if kind == "MKT" or (kind == "STP" and order.triggered):
            fill_price = price
        elif kind == "LMT" or (kind == "STP LMT" and order.triggered):
            limit = order.lmt_price or 0.0
            if (buy and price <= limit) or (not buy and price >= limit):
                fill_price = min(price, limit) if buy else max(price, limit)
        if fill_price is not None:
            self._fill(order, fill_price)
        elif order.tif in ("IOC", "FOK") and order.status == "Submitted":
            self._cancel(order, reason="IOC")

    def force_fill(self, order_id: int, client_id: Optional[int], price: Optional[float]) -> None:
        for order in self._orders:
            if order.order_id == order_id and (client_id is None or order.client_id == client_id):
                if order.is_open:
                    self._fill(order, price if price is not None else self._market_price(order))
                return
        raise KeyError(f"no order {order_id}")

    def _fill(self, order: _Order, price: float) -> None:
        qty = order.remaining
        now = time.strftime("%Y%m%d  %H:%M:%S", time.gmtime())
        legs = order.contract.legs
        side = "BOT" if order.action == "BUY" else "SLD"
        frames: List[List[Field]] = []
        commissions: List[List[Field]] = []
        total_commission = 0.0
        exec_targets: List[Tuple[ContractSpec, float, float, str]] = []
        if legs:
            for leg in legs:
                inst = self.market.instrument(leg.key)
                assert inst is not None
                leg_buy = (leg.action == "BUY") == (order.action == "BUY")
                exec_targets.append((self._spec(inst), qty * leg.ratio, self.market.price(leg.key),
                                     "BOT" if leg_buy else "SLD"))
        else:
            exec_targets.append((order.contract, qty, price, side))
        for contract, shares, exec_price, exec_side in exec_targets:
            exec_id = f"{0x0000E0D5 + self._next_exec:08x}.{order.perm_id:08x}.01.01"
            self._next_exec += 1
            commission = self._commission(contract, shares)
            total_commission += commission
            execution = Execution(order, contract, exec_id, now, exec_side, shares, exec_price,
                                  cum_qty=shares, avg_price=exec_price, commission=commission)
            self._executions.append(execution)
            order.fills.append(Fill(exec_id, now, shares, exec_price, commission))
            frames.append(self.execution_fields(-1, execution))
            commissions.append(self.commission_fields(execution))
            signed = shares if exec_side == "BOT" else -shares
            self._update_position(order.account, contract, signed, exec_price)
            self.accounts.on_trade(order.account, signed, exec_price, float(contract.multiplier or 1), commission)
        order.avg_fill_price = price
        order.last_fill_price = price
        order.filled = order.quantity
        order.status = "Filled"
        order.completed_time = now
        log.info("order %d/%d filled %s @ %s", order.client_id, order.order_id, P.quantity_field(qty), price)
        frames.append(self._open_order_fields(order))
        frames.append(self._order_status_fields(order))
        self._emit(order, frames + commissions)
        self.accounts.on_fill(order.account)
        # consequences: bracket children go live, OCA siblings and bracket siblings are cancelled
        for child in list(self._live_orders()):
            if child.client_id == order.client_id and child.parent_id == order.order_id and child.status == "PreSubmitted":
                child.status = "Submitted"
                self._emit(child, [self._order_status_fields(child)])
        for other in self._oca_siblings(order):
            self._cancel(other, reason="OCA")
        for child in list(self._live_orders()):
            if child.client_id == order.client_id and child.parent_id == order.order_id and child.is_open:
                self._match(child)

    def _oca_siblings(self, order: _Order) -> List[_Order]:
        out = []
        for o in self._live_orders():
            if o is order or not o.is_open:
                continue
            if order.oca_group and o.oca_group == order.oca_group and o.account == order.account:
                out.append(o)
            elif order.parent_id and o.client_id == order.client_id and o.parent_id == order.parent_id:
                out.append(o)  # bracket children are one-cancels-all
        return out

    @staticmethod
    def _commission(contract: ContractSpec, shares: float) -> float:
        if contract.sec_type == "OPT":
            return round(max(1.0, 0.65 * shares), 2)
        return round(max(1.0, 0.005 * shares), 2)

    def _update_position(self, account: str, contract: ContractSpec, delta: float, price: float) -> None:
        key = (account, contract.con_id)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = Position(contract)
        mult = float(contract.multiplier or 1)
        new_qty = pos.quantity + delta
        if pos.quantity == 0 or (pos.quantity > 0) == (delta > 0):
            total = pos.avg_cost * abs(pos.quantity) + price * mult * abs(delta)
            pos.avg_cost = total / abs(new_qty) if new_qty else 0.0
        else:
            closed = min(abs(delta), abs(pos.quantity))
            sign = 1 if pos.quantity > 0 else -1
            pos.realized += sign * closed * (price * mult - pos.avg_cost)
            if abs(delta) > abs(pos.quantity):
                pos.avg_cost = price * mult
        pos.quantity = new_qty
        self.accounts.on_position(account, pos)

    # ------------------------------------------------------------------ cancelling

    def _cancel(self, order: _Order, reason: str) -> None:
        order.status = "Cancelled"
        order.completed_time = time.strftime("%Y%m%d %H:%M:%S", time.gmtime())
        log.info("order %d/%d cancelled (%s)", order.client_id, order.order_id, reason)
        self._emit(order, [
            P.err_msg(order.order_id, 202, P.ERROR_TEXTS[202]),
            self._order_status_fields(order),
        ])
        for child in list(self._live_orders()):
            if child.client_id == order.client_id and child.parent_id == order.order_id and (
                child.is_open or child.status == "Inactive"
            ):
                self._cancel(child, reason="parent cancelled")

    def _on_cancel_order(self, session: _Session, f: List[str]) -> None:
        order_id = int(f[2])
        order = self._by_id.get((session.client_id or 0, order_id))
        if order is None:
            # only the owning client id may cancel: anyone else gets "not found"
            self.gw.send(session, P.err_msg(order_id, 10147, P.ERROR_TEXTS[10147].format(order_id=order_id)))
            return
        if not (order.is_open or order.status == "Inactive"):
            self.gw.send(session, P.err_msg(
                order_id, 10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {order.status}.",
            ))
            return
        self._cancel(order, reason="client request")
        self.gw.notify()

    def _on_global_cancel(self, session: _Session, f: List[str]) -> None:
        for order in list(self._live_orders()):
            if order.is_open or order.status == "Inactive":
                self._cancel(order, reason="global cancel")

    # ------------------------------------------------------------------ order queries

    def _on_req_open_orders(self, session: _Session, f: List[str]) -> None:
        for order in self._live_orders():
            if order.is_open and order.client_id == session.client_id:
                self.gw.send(session, self._open_order_fields(order))
                self.gw.send(session, self._order_status_fields(order))
        self.gw.send(session, [Out.OPEN_ORDER_END, 1])

    def _on_req_all_open_orders(self, session: _Session, f: List[str]) -> None:
        for order in self._live_orders():
            if order.is_open:
                self.gw.send(session, self._open_order_fields(order))
                self.gw.send(session, self._order_status_fields(order))
        self.gw.send(session, [Out.OPEN_ORDER_END, 1])

    def _on_req_auto_open_orders(self, session: _Session, f: List[str]) -> None:
        if session.client_id != 0:
            self.gw.send(session, P.err_msg(-1, 321, "Error validating request:-'a3' : cause - Auto bind "
                                            "is only available for client id 0"))

    def _on_req_completed_orders(self, session: _Session, f: List[str]) -> None:
        for order in self._orders:
            if order.status in ("Filled", "Cancelled"):
                self.gw.send(session, self._completed_order_fields(order))
        self.gw.send(session, [Out.COMPLETED_ORDERS_END])

    def _on_req_executions(self, session: _Session, f: List[str]) -> None:
        req_id = int(f[2])
        client_filter = int(f[3] or 0)
        acct, since, symbol, sec_type, exchange, side = f[4], f[5], f[6], f[7], f[8], f[9]
        out: List[List[Field]] = []
        commissions: List[List[Field]] = []
        for ex in self._executions:
            if client_filter and ex.order.client_id != client_filter:
                continue
            if acct and ex.order.account != acct:
                continue
            if symbol and ex.contract.symbol != symbol:
                continue
            if sec_type and ex.contract.sec_type != sec_type:
                continue
            if side and side.upper() not in (ex.side, {"BOT": "BUY", "SLD": "SELL"}[ex.side]):
                continue
            if since and ex.time.replace("  ", " ") < since.replace("-", " ").strip():
                continue
            _ = exchange  # every simulated execution is on SMART's venues
            out.append(self.execution_fields(req_id, ex))
            commissions.append(self.commission_fields(ex))
        for frame, commission in zip(out, commissions):
            self.gw.send(session, frame)
            self.gw.send(session, commission)
        self.gw.send(session, [Out.EXECUTION_DATA_END, 1, req_id])

    # ------------------------------------------------------------------ layouts

    @staticmethod
    def _contract_fields(c: ContractSpec) -> List[Field]:
        """conId, symbol, secType, ltd, strike, right, multiplier, exchange, currency, localSymbol, tradingClass."""
        return [c.con_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right, c.multiplier, c.exchange,
                c.currency, c.local_symbol, c.trading_class]

    @staticmethod
    def _combo_fields(order: _Order) -> List[Field]:
        legs = order.contract.legs
        out: List[Field] = [",".join(f"{leg.con_id}|{leg.ratio}" for leg in legs), len(legs)]
        for leg in legs:
            out += [leg.con_id, leg.ratio, leg.action, "SMART", 0, 0, "", -1]
        out += [0]  # orderComboLegs: no per-leg prices
        out += [0]  # smartComboRoutingParams
        return out

    def _open_order_fields(self, o: _Order) -> List[Field]:
        c = o.contract
        lmt: Field = o.lmt_price if o.lmt_price is not None else ""
        aux: Field = o.aux_price if o.aux_price is not None else ""
        return [
            Out.OPEN_ORDER, o.order_id,
            *self._contract_fields(c),
            o.action, P.quantity_field(o.quantity), o.order_type, lmt, aux, o.tif, o.oca_group, o.account, "", 0,
            o.order_ref, o.client_id, o.perm_id, o.outside_rth, False, 0, "",
            "",  # sharesAllocation
            "", "", "", "",  # faGroup, faMethod, faPercentage, faProfile
            "", "", "", "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm
            0, "", -1,  # shortSaleSlot, designatedLocation, exemptCode
            0, "", "", "", "", "",  # auctionStrategy, startingPrice, stockRefPrice, delta, ranges
            0, False, False, False, "", 0,  # displaySize, blockOrder, sweepToFill, allOrNone, minQty, ocaType
            False, False, "",  # eTradeOnly, firmQuoteOnly, nbboPriceCap
            o.parent_id, 0,  # parentId, triggerMethod
            "", 0, "", "",  # volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
            False, 0, "", "", "", "",  # continuousUpdate, referencePriceType, trailStop, trailingPct, basisPoints x2
            *self._combo_fields(o),
            "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
            "",  # hedgeType
            False, "", "", False,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
            False,  # deltaNeutralContract present
            "",  # algoStrategy
            False, False, o.status,  # solicited, whatIf, status
            "", "", "", "", "", "", "", "", "",  # margins
            "", "", "", "", "",  # commission, minCommission, maxCommission, commissionCurrency, warningText
            False, False,  # randomizeSize, randomizePrice
            0,  # conditions
            "", UNSET_DOUBLE_TEXT, UNSET_DOUBLE_TEXT, UNSET_DOUBLE_TEXT, UNSET_DOUBLE_TEXT, UNSET_DOUBLE_TEXT,
            UNSET_DOUBLE_TEXT, 0,  # adjusted order params
            "", "", "",  # soft dollar tier
            UNSET_DOUBLE_TEXT,  # cashQty
            False, False, False, False,  # dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpTo.., usePriceMgmtAlgo
        ]

    def _completed_order_fields(self, o: _Order) -> List[Field]:
        c = o.contract
        lmt: Field = o.lmt_price if o.lmt_price is not None else ""
        aux: Field = o.aux_price if o.aux_price is not None else ""
        return [
            Out.COMPLETED_ORDER,
            *self._contract_fields(c),
            o.action, P.quantity_field(o.quantity), o.order_type, lmt, aux, o.tif, o.oca_group, o.account, "", 0,
            o.order_ref, o.perm_id, o.outside_rth, False, 0, "",
            "", "", "", "",  # FA params
            "", "", "", "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm
            0, "", -1,  # short sale params
            "", "", "",  # box order params
            "", "",  # peg to stock / vol ranges
            0, False, False, "", 0, 0,  # displaySize, sweepToFill, allOrNone, minQty, ocaType, triggerMethod
            "", 0, "", "", False, 0,  # vol order params (no delta-neutral), continuousUpdate, referencePriceType
            "", "",  # trailStopPrice, trailingPercent
            *self._combo_fields(o),
            "", "", "",  # scale params
            "",  # hedgeType
            "", "",  # clearing
            False,  # notHeld
            False,  # delta neutral contract
            "",  # algoStrategy
            False,  # solicited
            o.status,
            False, False,  # randomize
            0,  # conditions
            UNSET_DOUBLE_TEXT, UNSET_DOUBLE_TEXT,  # trailStopPrice, lmtPriceOffset
            UNSET_DOUBLE_TEXT,  # cashQty
            False, False,  # dontUseAutoPriceForHedge, isOmsContainer
            "", P.quantity_field(o.filled), 0, False, "", False, False,  # autoCancelDate .. routeMarketableToBbo
            0,  # parentPermId
            o.completed_time, o.status,  # completedTime, completedStatus
        ]

    @staticmethod
    def _order_status_fields(o: _Order) -> List[Field]:
        return [Out.ORDER_STATUS, o.order_id, o.status, P.quantity_field(o.filled), P.quantity_field(o.remaining), o.avg_fill_price,
                o.perm_id, o.parent_id, o.last_fill_price, o.client_id, "", 0.0]

    def execution_fields(self, req_id: int, ex: Execution) -> List[Field]:
        c = ex.contract
        return [
            Out.EXECUTION_DATA, req_id, ex.order.order_id,
            *self._contract_fields(c),
            ex.exec_id, ex.time, ex.order.account, "ISLAND" if c.sec_type == "STK" else "CBOE", ex.side,
            P.quantity_field(ex.shares), ex.price, ex.order.perm_id, ex.order.client_id, 0, P.quantity_field(ex.cum_qty), ex.avg_price,
            ex.order.order_ref, "", "", "", 2,
        ]

    @staticmethod
    def commission_fields(ex: Execution) -> List[Field]:
        return [Out.COMMISSION_REPORT, 1, ex.exec_id, ex.commission, "USD", UNSET_DOUBLE_TEXT,
                UNSET_DOUBLE_TEXT, 0]
