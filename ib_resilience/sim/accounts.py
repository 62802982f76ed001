"""Account requests: positions, account updates, account summary, account updates multi.

Every request that has an end marker gets it, even when there is nothing to report.
Subscriptions (positions, account updates) keep streaming updates after fills.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Dict, List, Set, Tuple

from .protocol import In, Out, quantity_field
from .wire import Field

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import _Session
    from .orders import OrderEngine, Position

STARTING_CASH = 1_000_000.0
SUMMARY_TAGS = (
    "AccountType", "NetLiquidation", "TotalCashValue", "SettledCash", "AccruedCash", "BuyingPower",
    "EquityWithLoanValue", "PreviousEquityWithLoanValue", "GrossPositionValue", "RegTEquity", "RegTMargin",
    "SMA", "InitMarginReq", "MaintMarginReq", "AvailableFunds", "ExcessLiquidity", "Cushion",
    "FullInitMarginReq", "FullMaintMarginReq", "FullAvailableFunds", "FullExcessLiquidity",
    "LookAheadNextChange", "LookAheadInitMarginReq", "LookAheadMaintMarginReq", "LookAheadAvailableFunds",
    "LookAheadExcessLiquidity", "HighestSeverity", "DayTradesRemaining", "Leverage",
)
LEDGER_KEYS = ("CashBalance", "TotalCashBalance", "NetLiquidationByCurrency", "RealizedPnL", "UnrealizedPnL",
               "StockMarketValue", "OptionMarketValue")


class AccountHandlers:
    """Account state derived from the order engine's fills (guarded by the gateway lock)."""

    def __init__(self, engine: OrderEngine) -> None:
        self.engine = engine
        self.gw = engine.gw
        self._cash: Dict[str, float] = {}
        self._position_subs: Set[int] = set()  # session serials
        self._account_subs: Dict[int, str] = {}  # session serial → account
        self._summary_subs: Dict[Tuple[int, int], Tuple[str, ...]] = {}

    def handlers(self) -> Dict[int, Callable[[_Session, List[str]], None]]:
        return {
            In.REQ_POSITIONS: self._on_req_positions,
            In.CANCEL_POSITIONS: self._on_cancel_positions,
            In.REQ_ACCT_DATA: self._on_req_account_updates,
            In.REQ_ACCOUNT_SUMMARY: self._on_req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self._on_cancel_account_summary,
            In.REQ_ACCOUNT_UPDATES_MULTI: self._on_req_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: lambda session, f: None,
        }

    def drop_session(self, serial: int) -> None:
        self._position_subs.discard(serial)
        self._account_subs.pop(serial, None)
        for key in [k for k in self._summary_subs if k[0] == serial]:
            del self._summary_subs[key]

    # ------------------------------------------------------------------ state

    def cash(self, account: str) -> float:
        return self._cash.get(account, STARTING_CASH)

    def on_trade(self, account: str, signed_shares: float, price: float, multiplier: float, commission: float) -> None:
        self._cash[account] = self.cash(account) - signed_shares * price * multiplier - commission

    def _market_value(self, pos: Position) -> Tuple[float, float]:
        """(market price, market value) of a position."""
        key = pos.contract.key
        inst = self.engine.market.instrument(key)
        price = self.engine.market.price(key) if inst is not None else 0.0
        mult = float(pos.contract.multiplier or 1)
        return price, pos.quantity * price * mult

    def values(self, account: str) -> Dict[str, float]:
        gross = stock = option = unrealized = realized = 0.0
        for acct, pos in self.engine.positions():
            if acct != account:
                continue
            _, value = self._market_value(pos)
            gross += abs(value)
            if pos.contract.sec_type == "OPT":
                option += value
            else:
                stock += value
            unrealized += value - pos.quantity * pos.avg_cost
            realized += pos.realized
        cash = self.cash(account)
        net = cash + stock + option
        init = gross * 0.25
        maint = gross * 0.2
        return {
            "NetLiquidation": net, "TotalCashValue": cash, "SettledCash": cash, "AccruedCash": 0.0,
            "BuyingPower": max(0.0, (net - init) * 4), "EquityWithLoanValue": net,
            "PreviousEquityWithLoanValue": net, "GrossPositionValue": gross, "RegTEquity": net,
            "RegTMargin": init, "SMA": net, "InitMarginReq": init, "MaintMarginReq": maint,
            "AvailableFunds": net - init, "ExcessLiquidity": net - maint,
            "Cushion": (net - maint) / net if net else 0.0, "FullInitMarginReq": init,
            "FullMaintMarginReq": maint, "FullAvailableFunds": net - init, "FullExcessLiquidity": net - maint,
            "LookAheadNextChange": 0.0, "LookAheadInitMarginReq": init, "LookAheadMaintMarginReq": maint,
            "LookAheadAvailableFunds": net - init, "LookAheadExcessLiquidity": net - maint,
            "HighestSeverity": 0.0, "DayTradesRemaining": -1.0, "Leverage": gross / net if net else 0.0,
            "CashBalance": cash, "TotalCashBalance": cash, "NetLiquidationByCurrency": net,
            "RealizedPnL": realized, "UnrealizedPnL": unrealized, "StockMarketValue": stock,
            "OptionMarketValue": option,
        }

    @staticmethod
    def _fmt(value: float) -> str:
        return f"{value:.2f}"

    # ------------------------------------------------------------------ streaming updates

    def on_position(self, account: str, pos: Position) -> None:
        for session in self.gw.all_ready_sessions():
            if session.serial in self._position_subs:
                self.gw.send(session, self._position_fields(account, pos))
            if self._account_subs.get(session.serial) == account:
                self.gw.send(session, self._portfolio_fields(account, pos))

    def on_fill(self, account: str) -> None:
        values = self.values(account)
        for session in self.gw.all_ready_sessions():
            if self._account_subs.get(session.serial) == account:
                for key in ("NetLiquidation", "TotalCashValue", "GrossPositionValue", "AvailableFunds"):
                    self.gw.send(session, [Out.ACCT_VALUE, 2, key, self._fmt(values[key]), "USD", account])
                self.gw.send(session, [Out.ACCT_UPDATE_TIME, 1, time.strftime("%H:%M", time.gmtime())])

    # ------------------------------------------------------------------ layouts

    @staticmethod
    def _position_fields(account: str, pos: Position) -> List[Field]:
        c = pos.contract
        return [Out.POSITION_DATA, 3, account, c.con_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right,
                c.multiplier, c.exchange, c.currency, c.local_symbol, c.trading_class, quantity_field(pos.quantity),
                round(pos.avg_cost, 6)]

    def _portfolio_fields(self, account: str, pos: Position) -> List[Field]:
        c = pos.contract
        price, value = self._market_value(pos)
        unrealized = value - pos.quantity * pos.avg_cost
        inst = self.engine.market.instrument(c.key)
        primary = inst.primary_exchange if inst is not None else ""
        return [Out.PORTFOLIO_VALUE, 8, c.con_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right,
                c.multiplier, primary, c.currency, c.local_symbol, c.trading_class, quantity_field(pos.quantity), price,
                round(value, 2), round(pos.avg_cost, 6), round(unrealized, 2), round(pos.realized, 2), account]

    # ------------------------------------------------------------------ handlers

    def _on_req_positions(self, session: _Session, f: List[str]) -> None:
        self._position_subs.add(session.serial)
        for account, pos in self.engine.positions():
            self.gw.send(session, self._position_fields(account, pos))
        self.gw.send(session, [Out.POSITION_END, 1])

    def _on_cancel_positions(self, session: _Session, f: List[str]) -> None:
        self._position_subs.discard(session.serial)

    def _on_req_account_updates(self, session: _Session, f: List[str]) -> None:
        subscribe = f[2] not in ("0", "", "false", "False")
        account = f[3] if f[3] in self.gw.accounts else self.gw.accounts[0]
        if not subscribe:
            self._account_subs.pop(session.serial, None)
            return
        self._account_subs[session.serial] = account
        values = self.values(account)
        self.gw.send(session, [Out.ACCT_VALUE, 2, "AccountCode", account, "", account])
        self.gw.send(session, [Out.ACCT_VALUE, 2, "AccountType", "INDIVIDUAL", "", account])
        for key, value in values.items():
            self.gw.send(session, [Out.ACCT_VALUE, 2, key, self._fmt(value), "USD", account])
        for acct, pos in self.engine.positions():
            if acct == account:
                self.gw.send(session, self._portfolio_fields(account, pos))
        self.gw.send(session, [Out.ACCT_UPDATE_TIME, 1, time.strftime("%H:%M", time.gmtime())])
        self.gw.send(session, [Out.ACCT_DOWNLOAD_END, 1, account])

    def _on_req_account_summary(self, session: _Session, f: List[str]) -> None:
        req_id, tags_text = int(f[2]), f[4]
        wanted: List[str] = []
        for tag in (t.strip() for t in tags_text.split(",")):
            if tag.startswith("$LEDGER"):
                wanted.extend(LEDGER_KEYS)
            elif tag in SUMMARY_TAGS:
                wanted.append(tag)
        self._summary_subs[(session.serial, req_id)] = tuple(wanted)
        for account in self.gw.accounts:
            values = self.values(account)
            for tag in wanted:
                if tag == "AccountType":
                    self.gw.send(session, [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, "INDIVIDUAL", ""])
                else:
                    self.gw.send(session, [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag,
                                           self._fmt(values[tag]), "USD"])
        self.gw.send(session, [Out.ACCOUNT_SUMMARY_END, 1, req_id])

    def _on_cancel_account_summary(self, session: _Session, f: List[str]) -> None:
        self._summary_subs.pop((session.serial, int(f[2])), None)

    def _on_req_updates_multi(self, session: _Session, f: List[str]) -> None:
        req_id, account, model = int(f[2]), f[3], f[4]
        accounts = [account] if account in self.gw.accounts else list(self.gw.accounts)
        for acct in accounts:
            for key, value in self.values(acct).items():
                self.gw.send(session, [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, acct, model, key,
                                       self._fmt(value), "USD"])
        self.gw.send(session, [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id])
