"""Order and contract builders: pure functions returning official ``ibapi`` objects.

Nothing here does I/O. Every argument is validated first, so that a bad call raises
``ValueError`` with a clear message before anything could be sent.

Both ``ibapi`` lines are supported: 10.x holds ``Order.totalQuantity`` as a ``Decimal``, 9.81
as a number; either way a whole quantity is encoded as an integer string (``"100"``, never
``"100.0"``). Every order sets ``eTradeOnly`` and ``firmQuoteOnly`` to False: 9.81 defaults
them to True and current gateways reject that (10268 / 10269).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import uuid
from decimal import Decimal
from typing import Any, Optional, Sequence, Tuple, Union

from ibapi.contract import ComboLeg, Contract
from ibapi.order import Order

try:  # 10.x only
    from ibapi.const import UNSET_DECIMAL as _UNSET_DECIMAL  # noqa: F401

    DECIMAL_QUANTITIES = True
except ImportError:  # 9.81
    DECIMAL_QUANTITIES = False

__all__ = [
    "ACTIONS",
    "TIFS",
    "build_bracket",
    "build_limit_order",
    "build_market_order",
    "build_strangle",
    "check_limits",
    "combo_contract",
    "new_order_ref",
    "opposite_action",
    "option_contract",
    "stock_contract",
    "strangle_contracts",
]

ACTIONS = ("BUY", "SELL")
TIFS = ("DAY", "GTC", "IOC", "GTD", "OPG", "FOK", "DTC")
OCA_CANCEL_WITH_BLOCK = 1  # when one child fills, cancel the other

Number = Union[int, float, Decimal]

_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9._\-]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MULTIPLIER = re.compile(r"^[0-9]+(\.[0-9]+)?$")


# --- validation helpers -------------------------------------------------------------------------


def _text(value: Any, name: str) -> str:
    """A non-empty printable-ASCII string without surrounding blanks (ibapi rejects others)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not value or value != value.strip():
        raise ValueError(f"{name} must be non-empty without leading/trailing blanks, got {value!r}")
    if not _PRINTABLE.match(value):
        raise ValueError(f"{name} must be printable ASCII, got {value!r}")
    return value


def _token(value: Any, name: str) -> str:
    value = _text(value, name)
    if not _TOKEN.match(value):
        raise ValueError(f"{name} may hold only letters, digits, '.', '_' and '-', got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _positive(value: Any, name: str) -> float:
    result = _number(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result


def _whole(value: Any, name: str) -> int:
    result = _positive(value, name)
    if result != int(result):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(result)


def _order_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _action(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in ACTIONS:
        raise ValueError(f"action must be 'BUY' or 'SELL', got {value!r}")
    return value.upper()


def _tif(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in TIFS:
        raise ValueError(f"tif must be one of {', '.join(TIFS)}, got {value!r}")
    return value.upper()


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise ValueError(f"currency must be a 3-letter upper-case code such as 'USD', got {value!r}")
    return value


def _quantity_value(quantity: float) -> Any:
    """``totalQuantity`` for the installed line, whole numbers encoding as ``"100"``."""
    whole = quantity == int(quantity)
    if DECIMAL_QUANTITIES:
        return Decimal(int(quantity)) if whole else Decimal(repr(quantity))
    return int(quantity) if whole else quantity


def opposite_action(action: str) -> str:
    """``"SELL"`` for ``"BUY"`` and the reverse."""
    return "SELL" if _action(action) == "BUY" else "BUY"


def new_order_ref(prefix: str = "ibr") -> str:
    """A unique idempotency key for ``Order.orderRef``: ``prefix`` + 16 hex digits."""
    _token(prefix, "prefix")
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --- contracts ------------------------------------------------------------------------------


def stock_contract(symbol: str, exchange: str = "SMART", currency: str = "USD") -> Contract:
    """A stock (``STK``) contract."""
    contract = Contract()
    contract.symbol = _text(symbol, "symbol")
    contract.secType = "STK"
    contract.exchange = _token(exchange, "exchange")
    contract.currency = _currency(currency)
    return contract


def _expiry(value: Any) -> str:
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    if not isinstance(value, str) or not re.match(r"^\d{6}(\d{2})?$", value):
        raise ValueError(f"expiry must be 'YYYYMMDD', 'YYYYMM' or a date, got {value!r}")
    try:
        _dt.datetime.strptime(value, "%Y%m%d" if len(value) == 8 else "%Y%m")
    except ValueError:
        raise ValueError(f"expiry is not a real date: {value!r}") from None
    return value


def _right(value: Any) -> str:
    rights = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
    if not isinstance(value, str) or value.upper() not in rights:
        raise ValueError(f"right must be 'C' or 'P' (or 'CALL' / 'PUT'), got {value!r}")
    return rights[value.upper()]


def option_contract(
    symbol: str,
    expiry: Union[str, _dt.date],
    strike: Number,
    right: str,
    exchange: str = "SMART",
    currency: str = "USD",
    multiplier: str = "100",
) -> Contract:
    """An option (``OPT``) contract; ``expiry`` is ``YYYYMMDD`` (or ``YYYYMM``, or a date)."""
    contract = Contract()
    contract.symbol = _text(symbol, "symbol")
    contract.secType = "OPT"
    contract.lastTradeDateOrContractMonth = _expiry(expiry)
    contract.strike = _positive(strike, "strike")
    contract.right = _right(right)
    if not isinstance(multiplier, str) or not _MULTIPLIER.match(multiplier):
        raise ValueError(f"multiplier must be a numeric string such as '100', got {multiplier!r}")
    contract.multiplier = multiplier
    contract.exchange = _token(exchange, "exchange")
    contract.currency = _currency(currency)
    return contract


def strangle_contracts(
    symbol: str,
    expiry: Union[str, _dt.date],
    call_strike: Number,
    put_strike: Number,
    exchange: str = "SMART",
    currency: str = "USD",
    multiplier: str = "100",
) -> Tuple[Contract, Contract]:
    """The (call, put) legs of a strangle, to be qualified; the call strike must be higher."""
    call = _positive(call_strike, "call_strike")
    put = _positive(put_strike, "put_strike")
    if not call > put:
        raise ValueError(f"a strangle needs call_strike > put_strike, got call {call_strike} and put {put_strike}")
    return (
        option_contract(symbol, expiry, call, "C", exchange, currency, multiplier),
        option_contract(symbol, expiry, put, "P", exchange, currency, multiplier),
    )


def combo_contract(
    symbol: str,
    legs: Sequence[Tuple[int, str, int]],
    exchange: str = "SMART",
    currency: str = "USD",
) -> Contract:
    """A ``BAG`` combo of qualified legs given as ``(con_id, action, ratio)``."""
    if not legs or len(legs) < 2:
        raise ValueError("a combo needs at least two legs")
    seen = set()
    contract = Contract()
    contract.symbol = _text(symbol, "symbol")
    contract.secType = "BAG"
    contract.exchange = _token(exchange, "exchange")
    contract.currency = _currency(currency)
    contract.comboLegs = []
    for i, leg in enumerate(legs):
        if not isinstance(leg, (tuple, list)) or len(leg) != 3:
            raise ValueError(f"leg {i} must be (con_id, action, ratio), got {leg!r}")
        con_id, action, ratio = leg
        _order_id(con_id, f"leg {i} con_id")
        if con_id in seen:
            raise ValueError(f"leg {i}: con_id {con_id} appears twice")
        seen.add(con_id)
        combo_leg = ComboLeg()
        combo_leg.conId = con_id
        combo_leg.action = _action(action)
        combo_leg.ratio = _order_id(ratio, f"leg {i} ratio")
        combo_leg.exchange = contract.exchange
        contract.comboLegs.append(combo_leg)
    return contract


# --- orders ---------------------------------------------------------------------------------


def _base_order(action: str, quantity: Any, order_type: str, order_ref: str, tif: str) -> Order:
    order = Order()
    order.action = _action(action)
    order.totalQuantity = _quantity_value(_positive(quantity, "quantity"))
    order.orderType = order_type
    order.orderRef = _token(order_ref, "order_ref")
    order.tif = _tif(tif)
    # 9.81 defaults both to True and current gateways reject that (10268 / 10269); 10.x no
    # longer sends them, so setting them is harmless there.
    order.eTradeOnly = False
    order.firmQuoteOnly = False
    order.transmit = True
    return order


def build_market_order(action: str, quantity: Number, order_ref: str, tif: str = "DAY") -> Order:
    """A market (``MKT``) order."""
    return _base_order(action, quantity, "MKT", order_ref, tif)


def build_limit_order(action: str, quantity: Number, limit_price: Number, order_ref: str, tif: str = "DAY") -> Order:
    """A limit (``LMT``) order at a positive, finite price."""
    order = _base_order(action, quantity, "LMT", order_ref, tif)
    order.lmtPrice = _positive(limit_price, "limit_price")
    return order


def build_bracket(
    action: str,
    quantity: Number,
    entry_price: Optional[Number],
    take_profit_price: Number,
    stop_loss_price: Number,
    *,
    parent_id: int,
    order_ref: str,
    tif: str = "DAY",
    oca_group: Optional[str] = None,
) -> Tuple[Order, Order, Order]:
    """(parent, take_profit, stop_loss) with order ids ``parent_id``, ``+1``, ``+2``.

    The entry is LMT at ``entry_price`` (MKT when None); the take-profit LMT and the
    stop-loss STP have the opposite action, ``parentId = parent_id`` and one OCA group. The
    parent and take-profit have ``transmit=False``; the stop-loss, sent last, transmits all
    three. A BUY needs stop < entry < take-profit, a SELL the reverse. Order refs are
    ``order_ref`` (parent), ``order_ref + "-tp"`` and ``order_ref + "-sl"``.
    """
    side = _action(action)
    qty = _positive(quantity, "quantity")
    take_profit = _positive(take_profit_price, "take_profit_price")
    stop_loss = _positive(stop_loss_price, "stop_loss_price")
    entry = None if entry_price is None else _positive(entry_price, "entry_price")
    parent_id = _order_id(parent_id, "parent_id")
    order_ref = _token(order_ref, "order_ref")
    oca = f"{order_ref}-oca" if oca_group is None else _token(oca_group, "oca_group")
    _check_bracket_prices(side, entry, take_profit, stop_loss)

    if entry is None:
        parent = build_market_order(side, qty, order_ref, tif)
    else:
        parent = build_limit_order(side, qty, entry, order_ref, tif)
    parent.orderId = parent_id
    parent.transmit = False

    exit_side = opposite_action(side)
    tp = build_limit_order(exit_side, qty, take_profit, f"{order_ref}-tp", tif)
    sl = _base_order(exit_side, qty, "STP", f"{order_ref}-sl", tif)
    sl.auxPrice = stop_loss
    for offset, child in ((1, tp), (2, sl)):
        child.orderId = parent_id + offset
        child.parentId = parent_id
        child.ocaGroup = oca
        child.ocaType = OCA_CANCEL_WITH_BLOCK
    tp.transmit = False
    sl.transmit = True  # the last child sends the whole bracket
    return parent, tp, sl


def _check_bracket_prices(side: str, entry: Optional[float], take_profit: float, stop_loss: float) -> None:
    if side == "BUY":
        if entry is None:
            if not stop_loss < take_profit:
                raise ValueError(
                    f"a BUY bracket needs stop_loss_price < take_profit_price, got stop {stop_loss} and take-profit {take_profit}"
                )
        elif not stop_loss < entry < take_profit:
            raise ValueError(
                "a BUY bracket needs stop_loss_price < entry_price < take_profit_price, "
                f"got stop {stop_loss}, entry {entry}, take-profit {take_profit}"
            )
    else:
        if entry is None:
            if not take_profit < stop_loss:
                raise ValueError(
                    f"a SELL bracket needs take_profit_price < stop_loss_price, got take-profit {take_profit} and stop {stop_loss}"
                )
        elif not take_profit < entry < stop_loss:
            raise ValueError(
                "a SELL bracket needs take_profit_price < entry_price < stop_loss_price, "
                f"got take-profit {take_profit}, entry {entry}, stop {stop_loss}"
            )


def build_strangle(
    symbol: str,
    call_con_id: int,
    put_con_id: int,
    action: str,
    quantity: Number,
    limit_price: Optional[Number] = None,
    *,
    order_ref: str,
    exchange: str = "SMART",
    currency: str = "USD",
    tif: str = "DAY",
) -> Tuple[Contract, Order]:
    """A strangle as one ``BAG`` combo order on the two qualified legs.

    Both legs are ``BUY`` ratio 1 in the combo; the order's ``action`` says whether the
    strangle is bought or sold (SELL = short strangle). LMT at ``limit_price`` (the price of
    one combo, positive) or MKT when None. ``quantity`` is a whole number of combos.
    For two single-leg orders instead, use :func:`build_limit_order` /
    :func:`build_market_order` per leg.
    """
    side = _action(action)
    qty = _whole(quantity, "quantity")
    _order_id(call_con_id, "call_con_id")
    _order_id(put_con_id, "put_con_id")
    if call_con_id == put_con_id:
        raise ValueError(f"call_con_id and put_con_id must differ, both are {call_con_id}")
    contract = combo_contract(symbol, [(call_con_id, "BUY", 1), (put_con_id, "BUY", 1)], exchange, currency)
    if limit_price is None:
        order = build_market_order(side, qty, order_ref, tif)
    else:
        order = build_limit_order(side, qty, limit_price, order_ref, tif)
    return contract, order


def check_limits(quantity: Number, price: Optional[Number], safety: Any, *, multiplier: Number = 1) -> None:
    """Reject an order over ``safety.max_order_quantity`` or ``safety.max_order_notional``.

    ``safety`` is a :class:`~ib_resilience.config.SafetySettings`; notional is
    ``quantity × price × multiplier``. With a notional limit configured, ``price`` (a
    reference price for a market order) is required.
    """
    qty = _positive(quantity, "quantity")
    max_qty = safety.max_order_quantity
    if max_qty is not None and qty > max_qty:
        raise ValueError(f"quantity {quantity} exceeds max_order_quantity {max_qty}")
    max_notional = safety.max_order_notional
    if max_notional is None:
        return
    if price is None:
        raise ValueError("max_order_notional is set: a (reference) price is needed to check the order")
    notional = qty * _positive(price, "price") * _positive(multiplier, "multiplier")
    if notional > max_notional:
        raise ValueError(f"order notional {notional:g} exceeds max_order_notional {max_notional:g}")
