#!/usr/bin/env python3
"""Chaos soak: a trading bot against the simulator while every fault kind strikes at random.

Two bot threads use one :class:`IBClient` the way a bot does: one places brackets and cancels
some of them, the other asks for prices and churns a market data subscription on top of the
four it holds. Meanwhile a fault thread injects, at seeded random, every fault the simulator
can produce (drops, resets, refusals, blackholes, stalled handshakes, latency spikes, upstream
outages with data lost and kept, restarts, garbage frames, injected errors, and acknowledgements
held back across a drop), one at a time, and measures how long the client takes to be healthy
again (connected, upstream up, every subscription ticking).

At the end it checks the invariants and prints a table; the exit code is 1 if any failed:

* no orderRef is booked twice in the simulator's book; no order id is reused (no 103) and the
  gateway's pacing limit is never hit (no 100);
* every call returned, or raised one of our exceptions, within its deadline (+ a margin);
* every order the caller was told was placed is in the book; every cancel told ok is cancelled;
* every fault was recovered from, and every subscription ticks again after the final recovery
  with its gaps closed;
* no thread and no socket leaked; no exception escaped any thread.

``run_soak()`` is what both the command line and ``tests/soak`` call.

    python scripts/chaos_soak.py --seed 1 --duration 600
    python scripts/chaos_soak.py --quick
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import logging
import os
import platform
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ib_resilience import IBClient, IBResilienceError, OrderCancelError, OrderStateUnknownError
from ib_resilience.operations import BracketResult, OrderResult
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState
from ib_resilience.subscriptions import MarketDataSubscription, Tick

log = logging.getLogger("chaos_soak")

HELD_SYMBOLS = ("AAPL", "MSFT", "SPY", "QQQ")  # subscribed for the whole run
CHURN_SYMBOLS = ("NVDA", "TSLA", "AMZN", "GOOGL", "META", "JPM", "IWM", "XOM")  # the fifth, rotating
ORDER_SYMBOLS = ("AAPL", "MSFT", "SPY", "QQQ", "NVDA", "IWM")

# Disruptive faults: the client must go through a reconnect before it counts as recovered.
RECONNECTING_FAULTS = frozenset({"drop", "reset", "refuse", "stall_handshake", "restart", "held_acks_drop"})
FAULT_KINDS: Tuple[str, ...] = (
    "drop", "reset", "refuse", "blackhole", "stall_handshake", "latency", "upstream_lost", "upstream_kept",
    "restart", "garbage_bad_field", "garbage_unknown_id", "garbage_random_bytes", "error", "held_acks_drop",
)


def _refuse_after_drop(gw: FakeGateway, seconds: float) -> None:
    gw.refuse_connections(seconds)
    gw.drop_connections()


def _stall_after_drop(gw: FakeGateway, seconds: float) -> None:
    gw.stall_handshake(seconds)
    gw.drop_connections()


# Faults that last a while: kind -> (range of seconds, start it for that long, description).
TIMED_FAULTS: Dict[str, Tuple[Tuple[float, float], Callable[[FakeGateway, float], None], str]] = {
    "refuse": ((0.3, 2.0), _refuse_after_drop, "refused {s:.1f} s after a drop"),
    "blackhole": ((0.3, 2.0), lambda gw, s: gw.blackhole(s), "{s:.1f} s"),
    # now and then longer than connect_timeout (3 s): the attempt times out and the next one works
    "stall_handshake": ((0.5, 4.0), _stall_after_drop, "stalled {s:.1f} s after a drop"),
    "upstream_lost": ((0.3, 2.0), lambda gw, s: gw.upstream_outage(s, data_lost=True), "1100 for {s:.1f} s, then 1101"),
    "upstream_kept": ((0.3, 2.0), lambda gw, s: gw.upstream_outage(s, data_lost=False), "1100 for {s:.1f} s, then 1102"),
    "restart": ((0.2, 2.0), lambda gw, s: gw.restart(s), "down {s:.1f} s"),
}

# Every per-call deadline the bots pass explicitly, so that each call's budget is known.
ORDER_TIMEOUT = 4.0
CANCEL_TIMEOUT = 4.0
PRICE_TIMEOUT = 3.0
SUBSCRIBE_TIMEOUT = 3.0


def soak_config(port: int, client_id: int) -> Dict[str, Any]:
    """Short intervals so that every fault is detected and recovered from within seconds."""
    fast_breaker = {"fail_max": 3, "reset_timeout": 0.5}
    return {
        "port": port,
        "client_id": client_id,
        "connect_timeout": 3.0,
        "max_reconnect_attempts": 0,
        "reconnect_delay_base": 0.05,
        "reconnect_delay_max": 0.3,
        "heartbeat_interval": 0.2,
        "heartbeat_timeout": 0.5,
        "request_timeout": 5.0,
        "stable_after": 5.0,
        "client_id_in_use_delay": 0.1,
        "market_data": {"snapshot_timeout": PRICE_TIMEOUT},
        "subscriptions": {"staleness_timeout": 2.0},
        "breakers": {name: dict(fast_breaker) for name in (
            "place_bracket_order", "place_strangle", "get_current_price", "cancel_order", "close_position_at_market")},
    }


# ------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class CallRecord:
    """One blocking call a bot made: how it ended and how long it took."""

    op: str
    outcome: str  # "ok", or the exception class name
    ours: bool  # returned, or raised an IBResilienceError (or ValueError)
    elapsed: float
    deadline: float
    detail: str = ""


@dataclass
class FaultRecord:
    """One injected fault and the time until the client was healthy again (None: never)."""

    kind: str
    at: float  # seconds since the start of the run
    recovery: Optional[float] = None
    detail: str = ""


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    detail: str = ""


@dataclass
class SoakReport:
    """Everything a run measured; ``ok`` is True when every invariant held."""

    seed: int
    duration: float
    fault_interval: float
    started_utc: str
    elapsed: float = 0.0
    faults: List[FaultRecord] = field(default_factory=list)
    calls: List[CallRecord] = field(default_factory=list)
    invariants: List[Invariant] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.invariants) and all(i.held for i in self.invariants)

    def failed(self) -> List[Invariant]:
        return [i for i in self.invariants if not i.held]

    def table(self) -> str:
        """The human-readable summary: faults, recovery times, calls by outcome, invariants."""
        out: List[str] = []
        out.append(f"chaos soak: seed {self.seed}, duration {self.duration:g} s, fault interval "
                   f"{self.fault_interval:g} s, started {self.started_utc}, took {self.elapsed:.1f} s")
        for key, value in self.info.items():
            out.append(f"  {key}: {value}")
        out.append("")
        out.append(f"{'fault':<22} {'count':>5} {'recovered':>9} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
        by_kind: Dict[str, List[FaultRecord]] = collections.defaultdict(list)
        for f in self.faults:
            by_kind[f.kind].append(f)
        for kind in sorted(by_kind, key=lambda k: FAULT_KINDS.index(k) if k in FAULT_KINDS else 99):
            out.append(_fault_row(kind, by_kind[kind]))
        out.append(_fault_row("all", self.faults))
        out.append("")
        outcomes: Dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        longest: Dict[str, CallRecord] = {}
        for c in self.calls:
            outcomes[c.op][c.outcome] += 1
            if c.op not in longest or c.elapsed > longest[c.op].elapsed:
                longest[c.op] = c
        out.append(f"{'operation':<22} {'calls':>6} {'ok':>6} {'longest':>14}  other outcomes")
        for op in sorted(outcomes):
            counts = outcomes[op]
            others = ", ".join(f"{name} {n}" for name, n in counts.most_common() if name != "ok") or "-"
            slow = f"{longest[op].elapsed:.2f}/{longest[op].deadline:g} s"
            out.append(f"{op:<22} {sum(counts.values()):>6} {counts.get('ok', 0):>6} {slow:>14}  {others}")
        out.append("(longest: the slowest call's wall time / its deadline)")
        out.append("")
        for inv in self.invariants:
            mark = "\u2713" if inv.held else "\u2717"
            out.append(f"{mark} {inv.name}" + (f": {inv.detail}" if inv.detail else ""))
        out.append("")
        out.append("ALL INVARIANTS HELD" if self.ok else f"{len(self.failed())} INVARIANT(S) FAILED")
        return "\n".join(out)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def _fault_row(kind: str, faults: Sequence[FaultRecord]) -> str:
    times = [f.recovery for f in faults if f.recovery is not None]
    if times:
        stats = f"{_percentile(times, 0.5):>7.2f} {_percentile(times, 0.99):>7.2f} {max(times):>7.2f}"
    else:
        stats = f"{'-':>7} {'-':>7} {'-':>7}"
    return f"{kind:<22} {len(faults):>5} {len(times):>9} {stats}"


# ------------------------------------------------------------------------------------ helpers


def open_fd_count() -> Optional[int]:
    """Open file descriptors of this process (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``: for foreign state that has no event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class Transitions:
    """A state listener keeping every transition with the monotonic time it was heard."""

    def __init__(self) -> None:
        self.events: List[Tuple[float, ConnectionState, ConnectionState]] = []
        self.cond = threading.Condition()

    def __call__(self, old: ConnectionState, new: ConnectionState, reason: str) -> None:
        with self.cond:
            self.events.append((time.monotonic(), old, new))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def connected_after(self, index: int, timeout: float) -> Optional[float]:
        """The time of the first CONNECTED after a RECONNECTING, both after ``index``; None at the timeout."""

        def find() -> Optional[float]:
            seen_lost = False
            for t, _, new in self.events[index:]:
                if new is not ConnectionState.CONNECTED:
                    seen_lost = True
                elif seen_lost:
                    return t
            return None

        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)


class ExceptHook:
    """Records every exception that escapes a thread (``threading.excepthook``)."""

    def __init__(self) -> None:
        self.escaped: List[str] = []
        self._previous = threading.excepthook

    def __call__(self, args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        self.escaped.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")
        self._previous(args)

    def __enter__(self) -> ExceptHook:
        threading.excepthook = self
        return self

    def __exit__(self, *exc: Any) -> None:
        threading.excepthook = self._previous


class Calls:
    """Runs a bot's blocking calls, timing each and classifying how it ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: List[CallRecord] = []

    def run(self, op: str, deadline: float, fn: Callable[[], Any]) -> Tuple[bool, Any]:
        """(True, result) or (False, exception); never raises an Exception."""
        start = time.monotonic()
        try:
            result = fn()
            ok, value, outcome, ours, detail = True, result, "ok", True, ""
        except (IBResilienceError, ValueError) as exc:  # ours (ConfigError is both), or bad input
            ok, value, outcome, ours, detail = False, exc, type(exc).__name__, True, str(exc)[:200]
        except Exception as exc:  # a foreign exception is an invariant violation, recorded not raised
            ok, value, outcome, ours, detail = False, exc, type(exc).__name__, False, repr(exc)[:300]
        record = CallRecord(op, outcome, ours, time.monotonic() - start, deadline, detail)
        with self._lock:
            self.records.append(record)
        return ok, value

    def snapshot(self) -> List[CallRecord]:
        with self._lock:
            return list(self.records)


# ------------------------------------------------------------------------------------ the bot


class Bot:
    """The trading bot: brackets and cancels on one thread, prices and subscriptions on another."""

    def __init__(self, client: IBClient, calls: Calls, seed: int, pause: float) -> None:
        self.client = client
        self.calls = calls
        self.pause = pause
        self.stop = threading.Event()
        self.prices: Dict[str, float] = {}
        self.placed: List[BracketResult] = []  # every bracket the caller was told was placed
        self.cancelled: List[OrderResult] = []  # every cancel the caller was told succeeded
        self.unknown_refs: List[str] = []  # orderRefs of calls that raised OrderStateUnknownError
        self.held: Dict[str, MarketDataSubscription] = {}
        self.churn: Optional[MarketDataSubscription] = None
        self._live: List[BracketResult] = []
        self._lock = threading.Lock()
        self._order_rng = random.Random(seed * 7919 + 1)
        self._data_rng = random.Random(seed * 7919 + 2)
        self._threads: List[threading.Thread] = []

    # the subscriptions the invariants look at
    def subscriptions(self) -> List[MarketDataSubscription]:
        with self._lock:
            subs = list(self.held.values())
            if self.churn is not None:
                subs.append(self.churn)
        return [s for s in subs if s.active]

    def on_tick(self, tick: Tick) -> None:
        if tick.field in ("last", "bid", "ask") and tick.value > 0:
            self.prices[tick.symbol] = tick.value

    def subscribe(self, symbol: str) -> Optional[MarketDataSubscription]:
        ok, sub = self.calls.run("subscribe_market_data", SUBSCRIBE_TIMEOUT, lambda: self.client.subscribe_market_data(
            symbol, self.on_tick, timeout=SUBSCRIBE_TIMEOUT))
        return sub if ok else None

    def hold_subscriptions(self, symbols: Sequence[str], timeout: float) -> bool:
        """Subscribe to ``symbols`` before the faults start (retrying within ``timeout``)."""
        deadline = time.monotonic() + timeout
        for symbol in symbols:
            while symbol not in self.held:
                sub = self.subscribe(symbol)
                if sub is not None:
                    with self._lock:
                        self.held[symbol] = sub
                elif time.monotonic() >= deadline:
                    return False
        return True

    def start(self) -> None:
        for name, target in (("soak-bot-orders", self._orders_loop), ("soak-bot-data", self._data_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> List[str]:
        """Stop and join the bot threads; names of those still running after ``timeout``."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    # ----------------------------------------------------------------- orders thread

    def _orders_loop(self) -> None:
        rng = self._order_rng
        while not self.stop.is_set():
            if self._live and (len(self._live) > 12 or rng.random() < 0.45):
                self._cancel(self._live.pop(rng.randrange(len(self._live))))
            else:
                self._place(rng)
            self.stop.wait(rng.uniform(0.2, 1.0) * self.pause)

    def _place(self, rng: random.Random) -> None:
        symbol = rng.choice(ORDER_SYMBOLS)
        price = self.prices.get(symbol, 100.0)
        action = rng.choice(("BUY", "SELL"))
        sign = 1.0 if action == "BUY" else -1.0
        # Mostly far from the market (they stay working); now and then marketable (they fill).
        offset = 0.01 if rng.random() < 0.15 else -0.1
        entry = round(price * (1 + sign * offset), 2)
        take_profit = round(entry * (1 + sign * 0.2), 2)
        stop_loss = round(entry * (1 - sign * 0.2), 2)
        quantity = rng.choice((1, 5, 10))
        ok, result = self.calls.run("place_bracket_order", ORDER_TIMEOUT, lambda: self.client.place_bracket_order(
            symbol, action, quantity, entry, take_profit, stop_loss, timeout=ORDER_TIMEOUT))
        if ok:
            with self._lock:
                self.placed.append(result)
            self._live.append(result)
        elif isinstance(result, OrderStateUnknownError) and result.order_ref:
            with self._lock:
                self.unknown_refs.append(result.order_ref)

    def _cancel(self, bracket: BracketResult) -> None:
        # The parent first (its children go with it); if it filled, the children one by one.
        for order_id in bracket.order_ids:
            ok, result = self.calls.run("cancel_order", CANCEL_TIMEOUT,
                                        lambda oid=order_id: self.client.cancel_order(oid, timeout=CANCEL_TIMEOUT))
            if ok:
                with self._lock:
                    self.cancelled.append(result)
                return
            if not (isinstance(result, OrderCancelError) and result.state == "Filled"):
                return

    # ------------------------------------------------------------------- data thread

    def _data_loop(self) -> None:
        rng = self._data_rng
        while not self.stop.is_set():
            if rng.random() < 0.8:
                symbol = rng.choice(HELD_SYMBOLS + CHURN_SYMBOLS)
                self.calls.run("get_current_price", PRICE_TIMEOUT,
                               lambda s=symbol: self.client.get_current_price(s, timeout=PRICE_TIMEOUT))
            else:
                self._churn(rng.choice(CHURN_SYMBOLS))
            self.stop.wait(rng.uniform(0.1, 0.5) * self.pause)

    def _churn(self, symbol: str) -> None:
        with self._lock:
            old, self.churn = self.churn, None
        if old is not None:
            old.cancel()
        sub = self.subscribe(symbol)
        with self._lock:
            self.churn = sub


# ------------------------------------------------------------------------------------ faults


class FaultInjector:
    """Injects one seeded random fault at a time and measures the recovery from each."""

    def __init__(
        self, gw: FakeGateway, client: IBClient, bot: Bot, transitions: Transitions, seed: int,
        interval: float, recovery_timeout: float, t0: float,
    ) -> None:
        self.gw = gw
        self.client = client
        self.bot = bot
        self.transitions = transitions
        self.rng = random.Random(seed)
        self.interval = interval
        self.recovery_timeout = recovery_timeout
        self.t0 = t0
        self.records: List[FaultRecord] = []
        self.struck_at = 0.0  # when the current fault took effect: recovery is timed from here
        self.stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def kinds(self) -> Iterator[str]:
        """Every kind once per round, each round in a new seeded order: a short run sees them all."""
        while True:
            bag = list(FAULT_KINDS)
            self.rng.shuffle(bag)
            yield from bag

    def start(self, until: float, cover_all_kinds: bool = False) -> None:
        """Inject faults until ``until`` (and, with ``cover_all_kinds``, until every kind struck once)."""
        self._thread = threading.Thread(target=self._run, args=(until, cover_all_kinds), name="soak-faults",
                                        daemon=True)
        self._thread.start()

    def wait_done(self, timeout: float) -> bool:
        """Wait for the fault thread to finish on its own; False at the timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def join(self, timeout: float) -> bool:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self, until: float, cover_all_kinds: bool) -> None:
        kinds = self.kinds()

        def more() -> bool:
            if time.monotonic() < until:
                return True
            return cover_all_kinds and {f.kind for f in self.records} != set(FAULT_KINDS)

        while not self.stop.is_set() and more():
            if self.stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
                return
            kind = next(kinds)
            mark = self.transitions.mark()
            record = FaultRecord(kind, time.monotonic() - self.t0)
            self.records.append(record)
            injected = self.struck_at = time.monotonic()
            try:
                record.detail = self.inject(kind)
                injected = self.struck_at  # held_acks_drop strikes once an order is in flight
            finally:
                self.gw.set_latency(0.0)
                self.gw.hold_order_acks(False)
            ended = time.monotonic()
            record.recovery = self.wait_recovered(kind, mark, injected, ended)
            if record.recovery is None:
                log.error("no recovery from %s (%s) within %.0f s", kind, record.detail, self.recovery_timeout)

    def inject(self, kind: str) -> str:
        """Apply one fault; returns once its active part is over (the client may still be recovering)."""
        gw, rng = self.gw, self.rng
        if kind == "drop":
            gw.drop_connections()
            return "FIN"
        if kind == "reset":
            gw.reset_connections()
            return "RST"
        if kind in TIMED_FAULTS:
            (low, high), begin, describe = TIMED_FAULTS[kind]
            seconds = rng.uniform(low, high)
            begin(gw, seconds)
            self.stop.wait(seconds)
            return describe.format(s=seconds)
        if kind == "latency":
            latency, seconds = rng.uniform(0.05, 0.8), rng.uniform(0.5, 2.5)
            gw.set_latency(latency)
            self.stop.wait(seconds)
            return f"{latency * 1000:.0f} ms for {seconds:.1f} s"
        if kind.startswith("garbage_"):
            gw.send_garbage(kind[len("garbage_"):])
            return kind[len("garbage_"):]
        if kind == "error":
            return self._inject_error()
        if kind == "held_acks_drop":
            before = len(gw.orders)
            gw.hold_order_acks(True)
            try:
                gw.wait_for(lambda: len(gw.orders) > before, timeout=3.0)
                detail = "an order was in flight"
            except TimeoutError:
                detail = "no order in flight"
            self.struck_at = time.monotonic()
            gw.drop_connections()
            gw.hold_order_acks(False)
            return detail
        raise ValueError(f"unknown fault kind {kind!r}")

    def _inject_error(self) -> str:
        subs = [s for s in self.bot.subscriptions() if s.req_id is not None]
        choice = self.rng.random()
        if choice < 0.5 and subs:
            sub = self.rng.choice(subs)
            code = self.rng.choice((322, 10182))
            self.gw.inject_error(code, sub.req_id if sub.req_id is not None else -1)
            return f"{code} on {sub.symbol}'s stream"
        code = self.rng.choice((322, 2103, 2105))
        self.gw.inject_error(code, -1)
        return f"{code} (reqId -1)"

    def wait_recovered(self, kind: str, mark: int, injected: float, ended: float) -> Optional[float]:
        """Seconds from injection until connected, healthy and every subscription ticking again."""
        deadline = injected + self.recovery_timeout
        since = ended
        if kind in RECONNECTING_FAULTS:
            connected = self.transitions.connected_after(mark, max(0.0, deadline - time.monotonic()))
            if connected is None:
                return None
            since = max(since, connected)
        # Ticks are stamped with wall time; the bar is the fault's end (or the reconnect) in wall time.
        bar = time.time() - (time.monotonic() - since)

        def healthy() -> bool:
            if not self.client.get_connection_status()["is_healthy"]:
                return False
            return all((s.last_tick_at or 0.0) > bar and not s.blind for s in self.bot.subscriptions())

        if not wait_until(healthy, max(0.0, deadline - time.monotonic())):
            return None
        return time.monotonic() - injected


# ------------------------------------------------------------------------------------ the run


def _ibapi_version() -> str:
    from importlib import metadata

    for dist in ("ibapi", "ibapi-stable"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def run_soak(
    seed: int = 1,
    duration: float = 60.0,
    fault_interval: float = 2.0,
    *,
    deadline_margin: float = 2.0,
    recovery_timeout: float = 30.0,
    bot_pause: float = 1.0,
    tick_interval: float = 0.1,
    client_id: int = 7,
    cover_all_kinds: bool = False,
) -> SoakReport:
    """Run the soak for ``duration`` seconds of faults (one every ~``fault_interval`` s after the
    previous recovery) and return the report; every invariant is evaluated, none raises.

    ``deadline_margin``: how far past its deadline a call may return before it counts as late.
    ``cover_all_kinds``: keep injecting past ``duration`` until every fault kind struck once.
    """
    report = SoakReport(seed, duration, fault_interval,
                        _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    report.info["python"] = f"{platform.python_version()} ({platform.machine()}, {os.cpu_count()} cpus)"
    report.info["ibapi"] = _ibapi_version()
    t0 = time.monotonic()
    invariants: List[Invariant] = []
    fds_before = open_fd_count()
    with ExceptHook() as hook:
        gw = FakeGateway(seed=seed, tick_interval=tick_interval, handshake_timeout=5.0, frame_timeout=2.0)
        gw.start()
        try:
            threads_before = {t.name for t in threading.enumerate()}
            client = IBClient(config=soak_config(gw.port, client_id), rng=random.Random(seed * 7919 + 3))
            transitions = Transitions()
            client.add_state_listener(transitions)
            calls = Calls()
            bot = Bot(client, calls, seed, bot_pause)
            injector = FaultInjector(gw, client, bot, transitions, seed, fault_interval, recovery_timeout, t0)
            try:
                if not client.connect(timeout=15.0):
                    invariants.append(Invariant("connected at the start", False, "connect() gave up"))
                elif not bot.hold_subscriptions(HELD_SYMBOLS, 15.0):
                    invariants.append(Invariant("subscribed at the start", False, f"held {sorted(bot.held)}"))
                else:
                    _soak(report, invariants, gw, client, bot, injector, duration, deadline_margin, cover_all_kinds)
            finally:
                injector.join(recovery_timeout + 10.0)
                gw.set_latency(0.0)
                gw.hold_order_acks(False)
                stuck = bot.join(max(ORDER_TIMEOUT, CANCEL_TIMEOUT) * 2 + deadline_margin + 5.0)
                client.disconnect()
            report.faults = injector.records
            report.calls = calls.snapshot()
            leaked = _wait_threads_back(threads_before, 10.0)
            invariants.append(Invariant("no leaked thread after disconnect", not leaked and not stuck,
                                        ", ".join(leaked + stuck)))
            gone = wait_until(lambda: not gw.connections, 10.0)
            invariants.append(Invariant("no socket left open at the gateway after disconnect", gone,
                                        "" if gone else f"{len(gw.connections)} connection(s) still open"))
        finally:
            gw.close()
        fds_after: Optional[int] = None
        if fds_before is not None:
            wait_until(lambda: (open_fd_count() or 0) <= fds_before, 5.0)
            fds_after = open_fd_count()
            invariants.append(Invariant("no leaked file descriptor", fds_after is not None and fds_after <= fds_before,
                                        f"{fds_before} before, {fds_after} after"))
    invariants.append(Invariant("no exception escaped any thread", not hook.escaped, "; ".join(hook.escaped[:5])))
    _call_invariants(report, invariants, deadline_margin)
    report.invariants = invariants
    report.elapsed = time.monotonic() - t0
    return report


def _soak(
    report: SoakReport, invariants: List[Invariant], gw: FakeGateway, client: IBClient, bot: Bot,
    injector: FaultInjector, duration: float, deadline_margin: float, cover_all_kinds: bool,
) -> None:
    """The faulty part of the run and the end-of-run checks on the book and the streams."""
    bot.start()
    injector.start(time.monotonic() + duration, cover_all_kinds)
    # A fault in progress finishes, with its recovery, before the run winds down.
    injector.wait_done(duration + (len(FAULT_KINDS) if cover_all_kinds else 1) * (injector.recovery_timeout + 10.0))
    injector.join(injector.recovery_timeout + 30.0)
    gw.set_latency(0.0)
    gw.hold_order_acks(False)
    stuck = bot.join(max(ORDER_TIMEOUT, CANCEL_TIMEOUT) * 2 + deadline_margin + 5.0)
    invariants.append(Invariant("bot threads ended (every call came back)", not stuck, ", ".join(stuck)))

    missed = [f"{f.kind}@{f.at:.1f}s ({f.detail})" for f in injector.records if f.recovery is None]
    invariants.append(Invariant(
        f"recovered from every fault within {injector.recovery_timeout:g} s (connected, healthy, streams ticking)",
        not missed, "; ".join(missed[:5])))
    kinds_seen = {f.kind for f in injector.records}
    absent = [k for k in FAULT_KINDS if k not in kinds_seen]
    report.info["fault kinds injected"] = f"{len(kinds_seen)} of {len(FAULT_KINDS)}" + (
        f" (not: {', '.join(absent)})" if absent else "")

    # Final recovery: connected and healthy, then every held stream ticks after that moment.
    healthy = wait_until(lambda: bool(client.get_connection_status()["is_healthy"]), 30.0)
    bar = time.time()
    subs = bot.subscriptions()
    ticking = healthy and wait_until(
        lambda: all((s.last_tick_at or 0.0) > bar and not s.blind for s in subs), 20.0)
    silent = [f"{s.symbol} (last tick {s.last_tick_at}, gaps open {s.blind})" for s in subs
              if not ((s.last_tick_at or 0.0) > bar and not s.blind)]
    invariants.append(Invariant(f"all {len(subs)} subscriptions tick again after the final recovery, gaps closed",
                                healthy and ticking, ("not healthy; " if not healthy else "") + "; ".join(silent)))
    report.info["subscription restores"] = ", ".join(f"{s.symbol} {s.restores}" for s in subs)
    report.info["blind periods"] = ", ".join(f"{s.symbol} {len(s.gaps)}" for s in subs)

    _book_invariants(report, invariants, gw, bot)


def _book_invariants(report: SoakReport, invariants: List[Invariant], gw: FakeGateway, bot: Bot) -> None:
    book = [o for o in gw.orders if o.status != "Rejected"]
    counts = collections.Counter(o.order_ref for o in book if o.order_ref)
    duplicates = {ref: n for ref, n in counts.items() if n > 1}
    invariants.append(Invariant("zero duplicate orders by orderRef in the simulator's book", not duplicates,
                                ", ".join(f"{r} x{n}" for r, n in list(duplicates.items())[:5])))

    by_ref = {o.order_ref: o for o in book}
    absent = []
    for result in bot.placed:
        for leg, suffix in ((result.parent, ""), (result.take_profit, "-tp"), (result.stop_loss, "-sl")):
            record = by_ref.get(result.order_ref + suffix)
            if record is None or record.order_id != leg.order_id:
                absent.append(f"{result.order_ref}{suffix}#{leg.order_id}")
    invariants.append(Invariant(f"all {len(bot.placed)} brackets the caller was told were placed are in the book",
                                not absent, ", ".join(absent[:5])))

    by_id = {o.order_id: o for o in book}
    still_open = [f"#{c.order_id} {by_id[c.order_id].status if c.order_id in by_id else 'absent'}"
                  for c in bot.cancelled if c.order_id not in by_id or by_id[c.order_id].is_open]
    invariants.append(Invariant(f"all {len(bot.cancelled)} cancels reported ok are cancelled in the book",
                                not still_open, ", ".join(still_open[:5])))

    sent = gw.errors_sent
    invariants.append(Invariant("order ids never reused (the gateway never sent 103)", not sent.get(103),
                                f"103 sent {sent.get(103)} time(s)" if sent.get(103) else ""))
    invariants.append(Invariant("never over the gateway's pacing limit (no 100)", not sent.get(100),
                                f"100 sent {sent.get(100)} time(s)" if sent.get(100) else ""))

    in_book = sum(1 for ref in bot.unknown_refs if ref in by_ref)
    report.info["orders"] = (f"{len(book)} booked, {sum(1 for o in book if o.is_open)} working at the end, "
                             f"{sum(1 for o in book if o.status == 'Filled')} filled")
    report.info["unknown fates (OrderStateUnknownError)"] = (
        f"{len(bot.unknown_refs)}, of which {in_book} turned out booked" if bot.unknown_refs else "0")


def _call_invariants(report: SoakReport, invariants: List[Invariant], margin: float) -> None:
    foreign = [f"{c.op}: {c.detail}" for c in report.calls if not c.ours]
    invariants.append(Invariant(f"all {len(report.calls)} calls returned or raised one of our exceptions",
                                not foreign, "; ".join(foreign[:5])))
    late = [f"{c.op} {c.outcome} took {c.elapsed:.2f} s (deadline {c.deadline:g} s)"
            for c in report.calls if c.elapsed > c.deadline + margin]
    invariants.append(Invariant(f"every call came back within its deadline + {margin:g} s", not late,
                                "; ".join(late[:5])))
    bad_input = sum(1 for c in report.calls if c.outcome == "ValueError")
    if bad_input:
        report.info["ValueError (bad input; none expected)"] = bad_input


def _wait_threads_back(baseline: set, timeout: float) -> List[str]:
    """Names of threads beyond ``baseline`` still alive after ``timeout`` (polled: no event to wait on)."""
    extra: List[str] = []

    def back() -> bool:
        nonlocal extra
        extra = [t.name for t in threading.enumerate() if t.name not in baseline]
        return not extra

    wait_until(back, timeout)
    return extra


# ------------------------------------------------------------------------------------ command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of fault injection (default 120)")
    parser.add_argument("--fault-interval", type=float, default=2.0,
                        help="mean seconds between one fault's recovery and the next fault (default 2)")
    parser.add_argument("--quick", action="store_true", help="a short run for CI: 20 s, a fault every ~0.5 s, every kind at least once")
    parser.add_argument("--deadline-margin", type=float, default=2.0,
                        help="seconds a call may overrun its deadline before it counts as late (default 2)")
    parser.add_argument("--cover-all-kinds", action="store_true",
                        help="keep injecting past --duration until every fault kind struck once")
    parser.add_argument("--log-file", help="write the log here (ibapi's DEBUG log slows decoding down a lot)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the --log-file's level (default INFO)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.fault_interval, args.cover_all_kinds = 20.0, 0.5, True
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)  # a soak logs thousands of warnings by design; the file has them
    root.addHandler(console)
    root.setLevel(logging.ERROR)
    if args.log_file:
        handler = logging.FileHandler(args.log_file, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(args.log_level)
        handler.setLevel(args.log_level)
    report = run_soak(args.seed, args.duration, args.fault_interval, deadline_margin=args.deadline_margin,
                      cover_all_kinds=args.cover_all_kinds)
    print(f"$ python scripts/chaos_soak.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
