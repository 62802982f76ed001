"""The simulated market: a contract catalogue, option chains and a seeded random walk per symbol.

Also the market-data requests (contract details, market data, market data type). Handlers run
on the gateway loop thread with the gateway lock held.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from . import protocol as P
from .protocol import In, Out, TickType
from .wire import Field, encode_frame

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import FakeGateway, _Session

# symbol → (start price, primary exchange, long name)
DEFAULT_SYMBOLS: Dict[str, Tuple[float, str, str]] = {
    "AAPL": (190.0, "NASDAQ", "APPLE INC"),
    "MSFT": (410.0, "NASDAQ", "MICROSOFT CORP"),
    "SPY": (520.0, "ARCA", "SPDR S&P 500 ETF TRUST"),
    "QQQ": (440.0, "NASDAQ", "INVESCO QQQ TRUST SERIES 1"),
    "AMZN": (180.0, "NASDAQ", "AMAZON.COM INC"),
    "GOOGL": (160.0, "NASDAQ", "ALPHABET INC-CL A"),
    "META": (480.0, "NASDAQ", "META PLATFORMS INC-CLASS A"),
    "NVDA": (120.0, "NASDAQ", "NVIDIA CORP"),
    "TSLA": (240.0, "NASDAQ", "TESLA INC"),
    "JPM": (200.0, "NYSE", "JPMORGAN CHASE & CO"),
    "IWM": (210.0, "ARCA", "ISHARES RUSSELL 2000 ETF"),
    "XOM": (115.0, "NYSE", "EXXON MOBIL CORP"),
}

MAX_MARKET_DATA_LINES = 100
_STOCK_ORDER_TYPES = "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,DAY,GTC,LIT,LMT,MIT,MKT,MOC,MTL,STP,STPLMT,TRAIL"
_OPTION_ORDER_TYPES = "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,DAY,GTC,LMT,MKT,STP,STPLMT"
# delayed tick ids used when the client asked for market data type 3 or 4
_DELAYED = {TickType.BID: 66, TickType.ASK: 67, TickType.LAST: 68, TickType.VOLUME: 74, TickType.CLOSE: 75}
_DELAYED_SIZES = {TickType.BID_SIZE: 69, TickType.ASK_SIZE: 70, TickType.LAST_SIZE: 71}


@dataclass(frozen=True)
class Instrument:
    """One tradable contract of the catalogue."""

    con_id: int
    symbol: str
    sec_type: str  # STK or OPT
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    long_name: str
    expiry: str = ""  # YYYYMMDD for options
    strike: float = 0.0
    right: str = ""  # C or P
    multiplier: str = ""
    under_con_id: int = 0
    min_tick: float = 0.01

    @property
    def key(self) -> str:
        """The price key: the symbol for stocks, the local symbol for options."""
        return self.symbol if self.sec_type == "STK" else self.local_symbol


@dataclass
class Quote:
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    last_size: int
    volume: int
    close: float


@dataclass
class Subscription:
    session_serial: int
    req_id: int
    key: str
    snapshot: bool
    data_type: int = 1
    legs: List[Tuple[str, int]] = field(default_factory=list)  # BAG: (key, signed ratio)


def _con_id(text: str) -> int:
    return 100_000 + zlib.crc32(text.encode()) % 900_000_000


def _round_tick(price: float, tick: float = 0.01) -> float:
    return round(round(price / tick) * tick, 2)


def third_fridays(start: _dt.date, count: int) -> List[str]:
    """The next ``count`` monthly expiries (third Fridays) on or after ``start``, as YYYYMMDD."""
    out: List[str] = []
    year, month = start.year, start.month
    while len(out) < count:
        first = _dt.date(year, month, 1)
        friday = first + _dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        if friday >= start:
            out.append(friday.strftime("%Y%m%d"))
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return out


def strike_step(price: float) -> float:
    if price < 50:
        return 1.0
    if price < 200:
        return 2.5
    return 5.0


class Market:
    """Catalogue, prices and market-data subscriptions (guarded by the gateway lock)."""

    def __init__(
        self,
        seed: int = 7,
        symbols: Optional[Sequence[str]] = None,
        tick_interval: float = 0.25,
        expiries: int = 3,
        strikes_each_side: int = 5,
        today: Optional[_dt.date] = None,
    ) -> None:
        self.seed = seed
        self.tick_interval = tick_interval
        self.extra_tick_rate = 0
        self._today = today or _dt.date.today()
        self._instruments: Dict[int, Instrument] = {}
        self._by_key: Dict[str, Instrument] = {}
        self._stocks: Dict[str, Instrument] = {}
        self._quotes: Dict[str, Quote] = {}
        self._rngs: Dict[str, random.Random] = {}
        self._subs: Dict[Tuple[int, int], Subscription] = {}
        self._burst_seq = 0
        # Symbols whose live data the account is not subscribed to: a live request gets 354,
        # a delayed one (market data type 3/4) is served delayed ticks.
        self.unsubscribed: Set[str] = set()
        names = list(symbols) if symbols is not None else list(DEFAULT_SYMBOLS)
        for sym in names:
            start, primary, long_name = DEFAULT_SYMBOLS.get(sym, (100.0, "NASDAQ", f"{sym} SIMULATED"))
            self._add_stock(sym, start, primary, long_name)
            self._add_chain(sym, start, expiries, strikes_each_side)

    # ------------------------------------------------------------ catalogue

    def rng_for(self, name: str) -> random.Random:
        if name not in self._rngs:
            self._rngs[name] = random.Random((self.seed << 32) ^ zlib.crc32(name.encode()))
        return self._rngs[name]

    def _add(self, inst: Instrument, price: float) -> None:
        self._instruments[inst.con_id] = inst
        self._by_key[inst.key] = inst
        rng = self.rng_for("quote:" + inst.key)
        spread = max(inst.min_tick, _round_tick(price * 0.0002))
        self._quotes[inst.key] = Quote(
            bid=_round_tick(price - spread),
            ask=_round_tick(price + spread),
            last=_round_tick(price),
            bid_size=rng.randint(1, 20) * 100,
            ask_size=rng.randint(1, 20) * 100,
            last_size=rng.randint(1, 5) * 100,
            volume=rng.randint(1000, 50000) * 100,
            close=_round_tick(price),
        )

    def _add_stock(self, sym: str, price: float, primary: str, long_name: str) -> None:
        inst = Instrument(
            con_id=_con_id("STK:" + sym),
            symbol=sym,
            sec_type="STK",
            exchange="SMART",
            primary_exchange=primary,
            currency="USD",
            local_symbol=sym,
            trading_class="NMS" if primary == "NASDAQ" else sym,
            long_name=long_name,
        )
        self._stocks[sym] = inst
        self._add(inst, price)

    def _add_chain(self, sym: str, price: float, expiries: int, each_side: int) -> None:
        under = self._stocks[sym]
        step = strike_step(price)
        atm = round(price / step) * step
        for expiry in third_fridays(self._today + _dt.timedelta(days=1), expiries):
            for i in range(-each_side, each_side + 1):
                strike = round(atm + i * step, 2)
                for right in ("C", "P"):
                    local = f"{sym:<6}{expiry[2:]}{right}{int(round(strike * 1000)):08d}"
                    inst = Instrument(
                        con_id=_con_id(local),
                        symbol=sym,
                        sec_type="OPT",
                        exchange="SMART",
                        primary_exchange="",
                        currency="USD",
                        local_symbol=local,
                        trading_class=sym,
                        long_name=under.long_name,
                        expiry=expiry,
                        strike=strike,
                        right=right,
                        multiplier="100",
                        under_con_id=under.con_id,
                    )
                    self._add(inst, self._option_price(price, strike, right, expiry))

    def _option_price(self, spot: float, strike: float, right: str, expiry: str) -> float:
        days = max(1, (_dt.datetime.strptime(expiry, "%Y%m%d").date() - self._today).days)
        intrinsic = max(0.0, spot - strike) if right == "C" else max(0.0, strike - spot)
        time_value = spot * 0.25 * math.sqrt(days / 365.0) * 0.4 * math.exp(-abs(spot - strike) / (spot * 0.1))
        return max(0.05, _round_tick(intrinsic + time_value))

    @property
    def symbols(self) -> List[str]:
        return list(self._stocks)

    def instrument(self, key: str) -> Optional[Instrument]:
        return self._by_key.get(key)

    def by_con_id(self, con_id: int) -> Optional[Instrument]:
        return self._instruments.get(con_id)

    def expiries(self, symbol: str) -> List[str]:
        return sorted({i.expiry for i in self._instruments.values() if i.symbol == symbol and i.sec_type == "OPT"})

    def resolve(self, con_id: int, symbol: str, sec_type: str, expiry: str = "", strike: float = 0.0,
                right: str = "", local_symbol: str = "") -> List[Instrument]:
        """Contracts matching a (possibly partial) contract description."""
        if con_id:
            inst = self._instruments.get(con_id)
            return [inst] if inst else []
        if local_symbol and local_symbol in self._by_key:
            return [self._by_key[local_symbol]]
        sec_type = sec_type or "STK"
        if sec_type == "STK":
            inst = self._stocks.get(symbol)
            return [inst] if inst else []
        if sec_type not in ("OPT", "FOP") and sec_type != "OPT":
            return []
        right = {"CALL": "C", "PUT": "P"}.get(right.upper(), right.upper())
        out = []
        for inst in self._instruments.values():
            if inst.sec_type != "OPT" or inst.symbol != symbol:
                continue
            if expiry and not inst.expiry.startswith(expiry):
                continue
            if strike and abs(inst.strike - strike) > 1e-6:
                continue
            if right and inst.right != right:
                continue
            out.append(inst)
        out.sort(key=lambda i: (i.expiry, i.strike, i.right))
        return out

    # ------------------------------------------------------------ prices

    def quote(self, key: str) -> Quote:
        return self._quotes[key]

    def price(self, key: str) -> float:
        return self._quotes[key].last

    def set_price(self, key: str, price: float) -> None:
        if key not in self._quotes:
            raise KeyError(f"unknown symbol {key!r}")
        inst = self._by_key[key]
        q = self._quotes[key]
        half = max(inst.min_tick, _round_tick(price * 0.0002))
        q.last = _round_tick(price)
        q.bid = _round_tick(price - half)
        q.ask = _round_tick(price + half)
        q.volume += q.last_size

    def step(self) -> List[str]:
        """One random-walk step for every stock; returns the keys whose quote changed."""
        changed = []
        for sym in self._stocks:
            rng = self.rng_for("walk:" + sym)
            q = self._quotes[sym]
            new = max(0.01, q.last * math.exp(rng.gauss(0.0, 0.0005)))
            self.set_price(sym, new)
            q.bid_size = rng.randint(1, 20) * 100
            q.ask_size = rng.randint(1, 20) * 100
            q.last_size = rng.randint(1, 5) * 100
            changed.append(sym)
        return changed

    # ------------------------------------------------------------ subscriptions

    def silence(self, key: str) -> int:
        """Stop streaming ``key`` to every client without telling them; how many streams."""
        doomed = [k for k, sub in self._subs.items() if not sub.snapshot and sub.key == key]
        for k in doomed:
            del self._subs[k]
        return len(doomed)

    def subscriptions_for(self, key: str) -> List[Subscription]:
        return [s for s in self._subs.values() if not s.snapshot and (s.key == key or any(k == key for k, _ in s.legs))]

    def streaming_subscriptions(self) -> List[Subscription]:
        return [s for s in self._subs.values() if not s.snapshot]

    def drop_session(self, serial: int) -> None:
        for k in [k for k in self._subs if k[0] == serial]:
            del self._subs[k]

    def drop_all_subscriptions(self) -> None:
        self._subs.clear()

    def subscription_count(self) -> int:
        return len(self._subs)

    def _tick_id(self, tick: int, data_type: int) -> int:
        if data_type in (3, 4):
            return _DELAYED.get(tick, _DELAYED_SIZES.get(tick, tick))
        return tick

    def _bag_quote(self, sub: Subscription) -> Quote:
        bid = ask = last = 0.0
        for key, ratio in sub.legs:
            q = self._quotes[key]
            if ratio > 0:
                bid += ratio * q.bid
                ask += ratio * q.ask
            else:
                bid += ratio * q.ask
                ask += ratio * q.bid
            last += ratio * q.last
        return Quote(round(bid, 2), round(ask, 2), round(last, 2), 1, 1, 1, 0, round(last, 2))

    def quote_for(self, sub: Subscription) -> Quote:
        return self._bag_quote(sub) if sub.legs else self._quotes[sub.key]

    def quote_frames(self, sub: Subscription) -> bytes:
        """TICK_PRICE bid/ask/last (each carrying its size) and TICK_SIZE volume, as bytes."""
        q = self.quote_for(sub)
        t = sub.data_type
        frames = [
            [Out.TICK_PRICE, 6, sub.req_id, self._tick_id(TickType.BID, t), q.bid, q.bid_size, 0],
            [Out.TICK_PRICE, 6, sub.req_id, self._tick_id(TickType.ASK, t), q.ask, q.ask_size, 0],
            [Out.TICK_PRICE, 6, sub.req_id, self._tick_id(TickType.LAST, t), q.last, q.last_size, 0],
            [Out.TICK_SIZE, 6, sub.req_id, self._tick_id(TickType.VOLUME, t), q.volume],
        ]
        return b"".join(encode_frame(f) for f in frames)

    def burst_frames(self, sub: Subscription, count: int) -> bytes:
        """``count`` LAST ticks for one subscription, encoded in one go (throughput mode)."""
        q = self.quote_for(sub)
        tick = self._tick_id(TickType.LAST, sub.data_type)
        head = f"{Out.TICK_PRICE}\0006\0{sub.req_id}\0{tick}\0"
        parts = []
        for _ in range(count):
            self._burst_seq += 1
            price = q.last + ((self._burst_seq % 7) - 3) * 0.01
            parts.append(f"{head}{price:.2f}\0{q.last_size}\0000\0".encode())
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)

    # ------------------------------------------------------------ handlers

    def handlers(self, gw: FakeGateway) -> Dict[int, Callable[[_Session, List[str]], None]]:
        def on_contract_details(session: _Session, f: List[str]) -> None:
            req_id = int(f[2])
            con_id = int(f[3] or 0)
            strike = float(f[7]) if f[7] not in ("", "1.7976931348623157e+308") else 0.0
            found = self.resolve(con_id, f[4], f[5], expiry=f[6], strike=strike, right=f[8], local_symbol=f[13])
            if not found:
                gw.send(session, P.err_msg(req_id, 200, P.ERROR_TEXTS[200]))
                return
            for inst in found:
                gw.send(session, self.contract_data(req_id, inst))
            gw.send(session, [Out.CONTRACT_DATA_END, 1, req_id])

        def on_mkt_data(session: _Session, f: List[str]) -> None:
            req_id = int(f[2])
            con_id = int(f[3] or 0)
            symbol, sec_type = f[4], f[5]
            strike = float(f[7]) if f[7] not in ("", "1.7976931348623157e+308") else 0.0
            i = 15
            legs: List[Tuple[str, int]] = []
            if sec_type == "BAG":
                n = int(f[i] or 0)
                i += 1
                for _ in range(n):
                    leg = self.by_con_id(int(f[i]))
                    ratio = int(f[i + 1])
                    action = f[i + 2]
                    i += 4
                    if leg is None:
                        gw.send(session, P.err_msg(req_id, 200, P.ERROR_TEXTS[200]))
                        return
                    legs.append((leg.key, ratio if action == "BUY" else -ratio))
            dnc = f[i] not in ("", "0")
            i += 4 if dnc else 1
            snapshot = f[i + 1] == "1"
            if sec_type == "BAG":
                if not legs:
                    gw.send(session, P.err_msg(req_id, 200, P.ERROR_TEXTS[200]))
                    return
                key = "BAG:" + ",".join(f"{k}x{r}" for k, r in legs)
            else:
                found = self.resolve(con_id, symbol, sec_type, expiry=f[6], strike=strike, right=f[8], local_symbol=f[13])
                if len(found) != 1:
                    gw.send(session, P.err_msg(req_id, 200, P.ERROR_TEXTS[200]))
                    return
                key = found[0].key
            if key in self.unsubscribed and session.market_data_type in (1, 2):
                gw.send(session, P.err_msg(req_id, 354, P.ERROR_TEXTS[354]))
                return
            if (session.serial, req_id) in self._subs:
                gw.send(session, P.err_msg(req_id, 322, f"Error processing request:Duplicate ticker id {req_id}"))
                return
            if not snapshot and len(self.streaming_subscriptions()) >= MAX_MARKET_DATA_LINES:
                gw.send(session, P.err_msg(req_id, 101, "Max number of tickers has been reached"))
                return
            sub = Subscription(session.serial, req_id, key, snapshot, session.market_data_type, legs)
            min_tick = 0.01
            gw.send(session, [Out.TICK_REQ_PARAMS, req_id, min_tick, "9c0001", 3])
            gw.send(session, [Out.MARKET_DATA_TYPE, 1, req_id, sub.data_type])
            if gw.upstream_down_locked():
                # upstream lost: the request is accepted but no data flows until it is back
                if not snapshot:
                    self._subs[(session.serial, req_id)] = sub
                return
            gw.enqueue_bytes(session, self.quote_frames(sub))
            if snapshot:
                q = self.quote_for(sub)
                gw.send(session, [Out.TICK_PRICE, 6, req_id, self._tick_id(TickType.CLOSE, sub.data_type), q.close, 0, 0])
                gw.send(session, [Out.TICK_SNAPSHOT_END, 1, req_id])
            else:
                self._subs[(session.serial, req_id)] = sub

        def on_cancel_mkt_data(session: _Session, f: List[str]) -> None:
            self._subs.pop((session.serial, int(f[2])), None)

        def on_market_data_type(session: _Session, f: List[str]) -> None:
            session.market_data_type = int(f[2])
            for (serial, req_id), sub in self._subs.items():
                if serial == session.serial:
                    sub.data_type = session.market_data_type
                    gw.send(session, [Out.MARKET_DATA_TYPE, 1, req_id, sub.data_type])

        return {
            In.REQ_CONTRACT_DATA: on_contract_details,
            In.REQ_MKT_DATA: on_mkt_data,
            In.CANCEL_MKT_DATA: on_cancel_mkt_data,
            In.REQ_MARKET_DATA_TYPE: on_market_data_type,
        }

    def contract_data(self, req_id: int, inst: Instrument) -> List[Field]:
        order_types = _STOCK_ORDER_TYPES if inst.sec_type == "STK" else _OPTION_ORDER_TYPES
        under = self.by_con_id(inst.under_con_id) if inst.under_con_id else None
        return [
            Out.CONTRACT_DATA, 8, req_id,
            inst.symbol, inst.sec_type, inst.expiry, inst.strike, inst.right,
            inst.exchange, inst.currency, inst.local_symbol,
            inst.trading_class,  # marketName
            inst.trading_class, inst.con_id, inst.min_tick,
            1,  # mdSizeMultiplier
            inst.multiplier, order_types,
            "SMART,AMEX,NYSE,CBOE,ISLAND,ARCA" if inst.sec_type == "STK" else "SMART,CBOE,ISE,PHLX",
            1,  # priceMagnifier
            inst.under_con_id, inst.long_name, inst.primary_exchange,
            inst.expiry[:6],  # contractMonth
            "Technology", "Computers", "Computers",
            "US/Eastern",
            "20261130:0400-20261130:2000", "20261130:0930-20261130:1600",
            "", "",  # evRule, evMultiplier
            0,  # secIdCount
            1,  # aggGroup
            under.symbol if under else "", under.sec_type if under else "",
            "26" if inst.sec_type == "STK" else "32",
            inst.expiry,  # realExpirationDate
            "COMMON" if inst.sec_type == "STK" else "",
        ]

    def instruments(self) -> Iterable[Instrument]:
        return self._instruments.values()

