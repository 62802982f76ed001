"""Streaming market data subscriptions that survive reconnects, 1101 and silent streams.

A :class:`MarketDataSubscription` is the user's handle. Its stream is re-requested (with a new
request id) after every reconnect and after 1101 (data lost; not after 1102, data kept), and
when it went silent for ``subscriptions.staleness_timeout`` while other streams kept ticking.
Every blind period is recorded in ``gaps`` as ``(start, end)`` wall times, so a user knows
exactly when they could not see the market.

Ticks reach ``on_tick`` on the dispatcher thread, never on the reader, in arrival order and
every one of them: the reader appends each tick to a buffer and schedules one drain; the drain
delivers whatever has accumulated (in slices, so order events queued meanwhile are not held
back). Only when a callback falls so far behind that ``MAX_BUFFERED_TICKS`` are waiting are
further ticks coalesced — per subscription and tick type, the newest value wins — and counted
in ``stats()["coalesced"]``. Order events and state changes are never coalesced.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from ibapi.contract import Contract

from .clock import SYSTEM_CLOCK, Clock
from .dispatcher import Dispatcher

log = logging.getLogger("ib_resilience.subscriptions")

MAX_BUFFERED_TICKS = 100_000  # beyond this many undelivered ticks, coalesce per (stream, tick type)
DRAIN_SLICE = 2_000  # ticks delivered per dispatcher turn before yielding to queued events

TICK_NAMES = {
    0: "bid_size", 1: "bid", 2: "ask", 3: "ask_size", 4: "last", 5: "last_size", 6: "high", 7: "low",
    8: "volume", 9: "close", 14: "open", 66: "bid", 67: "ask", 68: "last", 69: "bid_size", 70: "ask_size",
    71: "last_size", 72: "high", 73: "low", 74: "volume", 75: "close", 76: "open",
}


class Tick(NamedTuple):
    """One market data update (a named tuple: built once per tick, so it must be cheap).

    A bid, ask or last price carries the size that came with it in ``size`` (IB sends the two
    together); sizes that change on their own arrive as ticks of their own (``field`` ending in
    ``size``)."""

    symbol: str
    tick_type: int
    field: str
    value: float
    time: float  # wall clock, seconds since the epoch
    size: Optional[float] = None


_tuple_new = tuple.__new__  # builds a Tick without the named tuple's Python-level __new__

# A price tick type -> the size tick type IB sends with it, in the same message.
PRICE_SIZE = {1: 0, 2: 3, 4: 5, 66: 69, 67: 70, 68: 71}


Sender = Callable[[int, Contract], None]  # (req_id, contract): send reqMktData
Canceller = Callable[[int], None]  # req_id: send cancelMktData


class MarketDataSubscription:
    """A live stream of ticks for one contract. ``cancel()`` ends it."""

    def __init__(self, owner: SubscriptionManager, sub_id: int, contract: Contract, on_tick: Callable[[Tick], None]):
        self._owner = owner
        self.id = sub_id
        self.contract = contract
        self.symbol: str = contract.symbol
        self.on_tick = on_tick
        self.req_id: Optional[int] = None
        self.active = True
        self.last_tick_at: Optional[float] = None  # wall time of the newest tick
        self.last_tick_mono: Optional[float] = None  # sampled by the staleness check
        self.requested_at_mono: Optional[float] = None
        self.ticks = 0
        self._ticks_at_check = 0
        self._blind = False
        self.restores = 0
        self.error: Optional[Tuple[int, str]] = None  # the last error the gateway sent for the stream
        self._accepted = threading.Event()  # first reply (or error) to the initial request
        self._pending_accept = True  # a plain flag in front of the Event for the hot path
        self._held_price: Optional[Tuple[int, Any, float]] = None  # waiting for its size (reader only)
        self._gaps: List[Tuple[float, Optional[float]]] = []

    @property
    def gaps(self) -> List[Tuple[float, Optional[float]]]:
        """Blind periods as (start, end) wall times; ``end`` is None while still blind."""
        with self._owner._lock:
            return list(self._gaps)

    @property
    def blind(self) -> bool:
        return self._blind

    def cancel(self) -> None:
        """Stop the stream (sends cancelMktData when connected). Idempotent."""
        self._owner.cancel(self)

    def __repr__(self) -> str:
        return f"<MarketDataSubscription {self.symbol} req={self.req_id} active={self.active} ticks={self.ticks}>"


class SubscriptionManager:
    """All subscriptions of one client. Reader-thread entry points never block."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        send: Sender,
        cancel: Canceller,
        next_req_id: Callable[[], int],
        *,
        clock: Clock = SYSTEM_CLOCK,
        staleness_timeout: Optional[float] = 60.0,
        wake: Callable[[Callable[[], None]], None] = lambda fn: fn(),
    ) -> None:
        """``wake(fn)`` runs the dispatcher hand-off; ``IBClient`` passes ``Bridge.wake_later`` so
        the dispatcher is woken once the reader has handled its whole read."""
        self._dispatcher = dispatcher
        self._wake = wake
        self._send = send
        self._cancel = cancel
        self._next_req_id = next_req_id
        self._clock = clock
        self._staleness = staleness_timeout
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._subs: Dict[int, MarketDataSubscription] = {}
        self._by_req: Dict[int, MarketDataSubscription] = {}
        self.restored_total = 0
        self.stale_rerequests = 0
        self.coalesced = 0
        self.callback_errors = 0
        # Reader -> dispatcher hand-off: a deque (appends and pops are atomic) and one flag.
        self._buffer: Deque[Tuple[MarketDataSubscription, int, Any, float, Any]] = collections.deque()
        self._overflow: Dict[Tuple[int, int], Tuple[MarketDataSubscription, int, Any, float, Any]] = {}
        self._overflow_lock = threading.Lock()
        self._drain_scheduled = False
        # The system clock's time() is Python around a C call; read the C call directly then.
        self._now: Callable[[], float] = time.time if type(clock) is Clock else clock.time

    # ------------------------------------------------------------ user side

    def subscribe(self, contract: Contract, on_tick: Callable[[Tick], None], connected: bool) -> MarketDataSubscription:
        with self._lock:
            sub = MarketDataSubscription(self, next(self._ids), contract, on_tick)
            self._subs[sub.id] = sub
        if connected:
            self._request(sub)
        else:
            self._open_gap(sub)
        return sub

    def cancel(self, sub: MarketDataSubscription) -> None:
        with self._lock:
            if not sub.active:
                return
            sub.active = False
            self._subs.pop(sub.id, None)
            req_id = sub.req_id
            if req_id is not None:
                self._by_req.pop(req_id, None)
            sub.req_id = None
        self._cancel_quietly(req_id)

    def _cancel_quietly(self, req_id: Optional[int]) -> None:
        if req_id is None:
            return
        try:
            self._cancel(req_id)
        except Exception as exc:  # a gateway forgets a stream with its connection anyway
            log.info("cancelMktData(%d) not sent: %s", req_id, exc)

    def active(self) -> List[MarketDataSubscription]:
        with self._lock:
            return list(self._subs.values())

    # ---------------------------------------------------------- lifecycle

    def _request(self, sub: MarketDataSubscription) -> None:
        req_id = self._next_req_id()
        with self._lock:
            if not sub.active:
                return
            if sub.req_id is not None:
                self._by_req.pop(sub.req_id, None)
            sub.req_id = req_id
            sub.requested_at_mono = self._clock.monotonic()
            self._by_req[req_id] = sub
        self._send(req_id, sub.contract)

    def _open_gap(self, sub: MarketDataSubscription) -> None:
        now = self._clock.time()
        with self._lock:
            if not sub._blind:
                sub._gaps.append((now, None))
                sub._blind = True

    def _close_gap(self, sub: MarketDataSubscription, wall: float) -> None:
        with self._lock:
            if sub._blind:
                sub._gaps[-1] = (sub._gaps[-1][0], wall)
                sub._blind = False

    def on_session_lost(self) -> None:
        """The connection ended: every stream is blind until restored."""
        with self._lock:
            subs = list(self._subs.values())
            self._by_req.clear()
            for sub in subs:
                sub.req_id = None
                sub._held_price = None
        for sub in subs:
            self._open_gap(sub)

    def restore_all(self, reason: str, only_lost: bool = False) -> int:
        """Re-request every active stream (after 1101), or with ``only_lost`` those whose
        request died with the connection (after a reconnect)."""
        subs = [s for s in self.active() if not only_lost or s.req_id is None]
        for sub in subs:
            self._open_gap(sub)
            self._cancel_quietly(sub.req_id)
            # Counted before the request goes out: its first tick can reach on_tick (and a
            # reader of the counters) before this thread runs again.
            sub.restores += 1
            self.restored_total += 1
            self._request(sub)
        if subs:
            log.info("restored %d market data subscription(s): %s", len(subs), reason)
        return len(subs)

    def on_upstream_lost(self) -> None:
        for sub in self.active():
            self._open_gap(sub)

    def check_staleness(self) -> int:
        """Re-request streams silent for ``staleness_timeout`` while another stream ticked."""
        if self._staleness is None:
            return 0
        now = self._clock.monotonic()
        subs = self.active()
        for sub in subs:  # sample tick counters instead of reading a clock on every tick
            if sub.ticks != sub._ticks_at_check:
                sub._ticks_at_check = sub.ticks
                sub.last_tick_mono = now
        freshest = max((s.last_tick_mono or 0.0 for s in subs), default=0.0)
        if now - freshest >= self._staleness:
            return 0  # everything is quiet: a closed market, not a dead stream
        stale = [
            s for s in subs
            if s.req_id is not None and now - max(s.last_tick_mono or 0.0, s.requested_at_mono or 0.0) >= self._staleness
        ]
        for sub in stale:
            log.warning("market data for %s silent for %.1f s while others tick; re-requesting", sub.symbol,
                        now - (sub.last_tick_mono or sub.requested_at_mono or now))
            self._open_gap(sub)
            self._cancel_quietly(sub.req_id)
            self._request(sub)
        self.stale_rerequests += len(stale)
        return len(stale)

    # -------------------------------------------------------- reader side

    def on_accepted(self, req_id: int) -> None:
        """Any reply for the stream (tick parameters, data type, a tick) means it was accepted."""
        sub = self._by_req.get(req_id)
        if sub is not None and sub._pending_accept:
            sub._pending_accept = False
            sub._accepted.set()

    def on_error(self, req_id: int, code: int, text: str) -> bool:
        """An error for one of our streams; True if it was ours."""
        sub = self._by_req.get(req_id)
        if sub is None:
            return False
        sub.error = (code, text)
        if sub._pending_accept:
            sub._pending_accept = False
            sub._accepted.set()  # the subscriber's wait ends with this error
        else:
            log.warning("market data for %s: gateway error %d: %s", sub.symbol, code, text)
            self._open_gap(sub)
        return True

    def claim_tick(self, req_id: int, tick_type: int, value: Any, size: Any) -> bool:
        """A tick straight from the fast path (a price with the size of the same message, or a
        size alone); True if it belonged to one of our streams. The hottest code in the
        library: one lookup, one clock read, one append; a drain is scheduled only when none is."""
        sub = self._by_req.get(req_id)
        if sub is None:
            return False
        wall = self._now()
        sub.ticks += 1
        if sub._pending_accept or sub._blind or sub._held_price is not None:
            self._first_tick_checks(sub, wall)
        sub.last_tick_at = wall
        self._enqueue(sub, tick_type, value, wall, size)
        return True

    def _first_tick_checks(self, sub: MarketDataSubscription, wall: float) -> None:
        if sub._pending_accept:
            sub._pending_accept = False
            sub._accepted.set()
        if sub._blind:
            self._close_gap(sub, wall)
        held = sub._held_price
        if held is not None:  # a price from the official decoder still waiting for its size
            sub._held_price = None
            self._enqueue(sub, held[0], held[1], held[2], None)

    def on_tick(self, req_id: int, tick_type: int, value: Any) -> bool:
        """A tick from the official callbacks (``tickPrice``/``tickSize``; the fast path claims
        its ticks through :meth:`claim_tick` instead); True if it belonged to one of our streams.

        A bid/ask/last price is held back until the size the decoder reports right after it
        (same message), and the two go out as one Tick."""
        sub = self._by_req.get(req_id)
        if sub is None:
            return False
        wall = self._now()
        sub.ticks += 1
        held = sub._held_price
        sub._held_price = None
        if sub._pending_accept or sub._blind:
            self._first_tick_checks(sub, wall)
        sub.last_tick_at = wall
        if tick_type in PRICE_SIZE:
            if held is not None:
                self._enqueue(sub, held[0], held[1], held[2], None)
            sub._held_price = (tick_type, value, wall)
            return True
        if held is not None:
            if PRICE_SIZE[held[0]] == tick_type:
                self._enqueue(sub, held[0], held[1], held[2], value)
                return True
            self._enqueue(sub, held[0], held[1], held[2], None)
        self._enqueue(sub, tick_type, value, wall, None)
        return True

    def _enqueue(self, sub: MarketDataSubscription, tick_type: int, value: Any, wall: float, size: Any) -> None:
        buffer = self._buffer
        if len(buffer) < MAX_BUFFERED_TICKS:
            buffer.append((sub, tick_type, value, wall, size))
        else:
            self._coalesce(sub, tick_type, value, wall, size)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._wake(self._schedule_drain)

    def _coalesce(self, sub: MarketDataSubscription, tick_type: int, value: Any, wall: float, size: Any) -> None:
        with self._overflow_lock:
            self._overflow[(sub.id, tick_type)] = (sub, tick_type, value, wall, size)
        self.coalesced += 1

    def _schedule_drain(self) -> None:
        self._dispatcher.submit(self._drain)

    def _drain(self) -> None:
        """On the dispatcher: deliver buffered ticks in arrival order, a slice at a time."""
        self._drain_scheduled = False  # first: a tick appended from now on schedules a new drain
        if self._deliver(self._next_slice()) == DRAIN_SLICE:
            if self._buffer and not self._drain_scheduled:
                self._drain_scheduled = True
                self._dispatcher.submit(self._drain)  # yield to events queued meanwhile
            return
        if self._overflow:
            with self._overflow_lock:
                overflow, self._overflow = self._overflow, {}
            self._deliver(overflow.values())

    def _next_slice(self) -> Iterator[Tuple[MarketDataSubscription, int, Any, float, Any]]:
        popleft = self._buffer.popleft
        for _ in range(DRAIN_SLICE):
            try:
                yield popleft()
            except IndexError:
                return

    def _deliver(self, items: Iterable[Tuple[MarketDataSubscription, int, Any, float, Any]]) -> int:
        """Build each ``Tick`` and call its subscription's ``on_tick``; returns how many items."""
        names = TICK_NAMES
        new = _tuple_new
        n = 0
        for sub, tick_type, value, wall, size in items:
            n += 1
            if not sub.active:
                continue
            try:
                sub.on_tick(new(Tick, (sub.symbol, tick_type, names.get(tick_type) or str(tick_type), float(value),
                                       wall, None if size is None else float(size))))
            except Exception:
                self._callback_failed(sub)
        return n

    def _callback_failed(self, sub: MarketDataSubscription) -> None:
        self.callback_errors += 1
        if self.callback_errors <= 10 or self.callback_errors % 1000 == 0:
            log.exception("on_tick callback for %s raised (%d so far); ignored", sub.symbol, self.callback_errors)

    def stats(self) -> Dict[str, Any]:
        subs = self.active()
        return {
            "active": len(subs),
            "blind": sum(1 for s in subs if s.blind),
            "restored_total": self.restored_total,
            "stale_rerequests": self.stale_rerequests,
            "buffered_ticks": len(self._buffer),
            "coalesced": self.coalesced,
            "callback_errors": self.callback_errors,
        }

