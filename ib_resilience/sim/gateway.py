"""FakeGateway: a protocol-faithful IB Gateway on loopback, with fault injection.

Threading model: one loop thread owns every socket (a ``selectors`` loop over the listener,
the client connections and a wake-up socketpair) and runs every request handler; one ticker
thread produces streaming market data. All shared state sits behind one re-entrant lock whose
condition (``_changed``) is notified after every state change, which is what ``wait_for``
waits on. Fault methods may be called from any thread: those that touch sockets run as a
command on the loop thread and return once it has been executed, so the fault is in effect
when the call returns.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from . import protocol as P
from .market import Market, Subscription
from .orders import OrderEngine, OrderRecord
from .wire import Field, FrameParser, ProtocolError, encode_frame, frame_raw, split_fields

log = logging.getLogger("ib_resilience.sim")

DEFAULT_ACCOUNTS = ("DU1234567",)
_READ_CHUNK = 256 * 1024
_MAX_BACKLOG = 64 * 1024 * 1024  # a client that stops reading is dropped past this
_TICK_BACKLOG = 4 * 1024 * 1024  # streaming ticks are skipped for a client this far behind


@dataclass(frozen=True)
class ConnectionInfo:
    """A live client connection as ``gw.connections`` reports it."""

    client_id: Optional[int]
    address: Tuple[str, int]
    since: float  # wall-clock time of accept
    ready: bool  # START_API received and the startup burst sent


@dataclass(frozen=True)
class ExecutionInfo:
    """One execution as ``gw.executions`` reports it."""

    client_id: int
    order_id: int
    exec_id: str
    symbol: str
    local_symbol: str
    side: str  # BOT or SLD
    shares: float
    price: float
    commission: float


class _Session:
    """One client connection. Fields are guarded by the gateway lock; sockets by the loop thread."""

    _ids = itertools.count(1)

    def __init__(self, sock: socket.socket, address: Tuple[str, int], max_frame: int) -> None:
        self.serial = next(self._ids)
        self.sock = sock
        self.address = address
        self.since = time.time()
        self.accepted_at = time.monotonic()
        self.last_read_at = self.accepted_at
        self.parser = FrameParser(max_frame=max_frame, expect_prefix=True)
        self.state = "version"  # version -> await_start -> ready -> closed
        self.client_id: Optional[int] = None
        self.server_version = P.SERVER_VERSION
        self.not_before = 0.0  # version reply withheld until then (stall_handshake)
        self.outq: Deque[Tuple[float, bytes]] = collections.deque()
        self.queued_bytes = 0  # total length of outq
        self.wbuf = bytearray()
        self.close_after_flush = False
        self.close_reason = ""
        self.partial_since: Optional[float] = None
        self.received = 0
        self.recent: Deque[float] = collections.deque()  # message times, for pacing
        self.pacing_quiet_until = 0.0
        self.pacing_violations = 0
        self.registered_events = 0
        self.market_data_type = 1

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def backlog(self) -> int:
        return len(self.wbuf) + self.queued_bytes


class FakeGateway:
    """An IB Gateway speaking server version 157 on ``host:port`` (port 0: any free port).

    Use as a context manager, or call :meth:`start` and :meth:`close`. Deterministic for a
    given ``seed`` (market walk, perm ids, execution ids).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Sequence[str] = DEFAULT_ACCOUNTS,
        seed: int = 7,
        symbols: Optional[Sequence[str]] = None,
        *,
        first_order_id: int = 1,
        handshake_timeout: float = 10.0,
        frame_timeout: float = 10.0,
        max_frame: int = 1 << 20,
        pacing_limit: Optional[int] = 50,
        pacing_disconnect_after: Optional[int] = 3,
        tick_interval: float = 0.25,
        max_clients: int = 32,
    ) -> None:
        if not accounts:
            raise ValueError("a gateway always manages at least one account")
        self.host = host
        self._requested_port = port
        self.accounts: Tuple[str, ...] = tuple(accounts)
        self.seed = seed
        self.first_order_id = first_order_id
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.max_frame = max_frame
        self.pacing_limit = pacing_limit
        self.pacing_disconnect_after = pacing_disconnect_after
        self.max_clients = max_clients

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sessions: Dict[int, _Session] = {}
        self._listener: Optional[socket.socket] = None
        self._port = 0
        self._selector: Optional[selectors.BaseSelector] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._wake_pending = False
        self._commands: Deque[Tuple[Callable[[], None], threading.Event]] = collections.deque()
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stopping = False
        self._started = False
        self._closed = False
        self._loop_thread: Optional[threading.Thread] = None
        self._ticker_thread: Optional[threading.Thread] = None
        self._ticker_stop = threading.Event()

        # fault state (monotonic deadlines)
        self._latency = 0.0
        self._blackhole_until = 0.0
        self._stall_until = 0.0
        self._refuse_until = 0.0
        self._upstream_down = False

        # counters
        self._errors_sent: collections.Counter[int] = collections.Counter()
        self._received_by_client: collections.Counter[int] = collections.Counter()
        self._garbage_disconnects = 0

        self.market = Market(seed=seed, symbols=symbols, tick_interval=tick_interval)
        self.engine = OrderEngine(self, seed=seed)
        self._handlers: Dict[int, Callable[[_Session, List[str]], None]] = {
            P.In.REQ_CURRENT_TIME: self._on_current_time,
            P.In.REQ_IDS: self._on_req_ids,
            P.In.REQ_MANAGED_ACCTS: self._on_req_managed_accounts,
        }
        self._handlers.update(self.market.handlers(self))
        self._handlers.update(self.engine.handlers())

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeGateway:
        """Bind, listen and start the loop and ticker threads. Returns self."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listen(self._requested_port)
        self._loop_thread = threading.Thread(target=self._loop, name=f"sim-loop:{self._port}", daemon=True)
        self._ticker_thread = threading.Thread(
            target=self._ticker, name=f"sim-ticker:{self._port}", daemon=True
        )
        self._loop_thread.start()
        self._ticker_thread.start()
        log.info("simulated gateway listening on %s:%d", self.host, self._port)
        return self

    def close(self) -> None:
        """Close every socket and join every thread this gateway started. Idempotent."""
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return
            self._closed = True
            self._stopping = True
            self._changed.notify_all()
        self._ticker_stop.set()
        self._wake()
        for thread in (self._ticker_thread, self._loop_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(10.0)
                if thread.is_alive():
                    raise RuntimeError(f"simulator thread {thread.name} did not stop")
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._selector is not None:
            self._selector.close()
        log.info("simulated gateway on port %d closed", self._port)

    @property
    def port(self) -> int:
        """The bound TCP port (stable across refusals and restarts)."""
        return self._port

    # ------------------------------------------------------------------ faults

    def drop_connections(self) -> None:
        """Close every client connection with a FIN (shutdown, then close)."""
        self._run_in_loop(lambda: self._close_all(reset=False, reason="drop_connections"))

    def reset_connections(self) -> None:
        """Close every client connection with a RST (SO_LINGER 0)."""
        self._run_in_loop(lambda: self._close_all(reset=True, reason="reset_connections"))

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds``: new connections are refused, live ones are kept."""

        def act() -> None:
            self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)
            self._stop_listening()
            self._schedule(seconds, self._maybe_relisten)

        self._run_in_loop(act)

    def blackhole(self, seconds: float) -> None:
        """For ``seconds``, read nothing and send nothing; sockets stay open.

        Bytes clients send meanwhile stay in the kernel buffers and are processed when the
        blackhole ends; replies and ticks produced meanwhile are held (ticks are not produced).
        """
        with self._lock:
            self._blackhole_until = max(self._blackhole_until, time.monotonic() + seconds)
            self._changed.notify_all()
        self._run_in_loop(lambda: self._schedule(seconds, lambda: None))

    def stall_handshake(self, seconds: float) -> None:
        """New connections are accepted but their version reply is withheld for ``seconds``."""
        with self._lock:
            self._stall_until = max(self._stall_until, time.monotonic() + seconds)
            until = self._stall_until
            for s in self._sessions.values():
                if s.state == "version":
                    s.not_before = max(s.not_before, until)

    def set_latency(self, seconds: float) -> None:
        """Delay every reply (and tick) enqueued from now on by ``seconds``."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        with self._lock:
            self._latency = seconds

    def inject_error(self, code: int, req_id: int = -1, text: Optional[str] = None) -> None:
        """Send ERR_MSG ``code`` to every ready client."""
        message = text if text is not None else P.ERROR_TEXTS.get(code, f"Simulated error {code}")
        with self._lock:
            for s in self._ready_sessions():
                self._send_error(s, req_id, code, message)
        self._wake()

    def upstream_outage(self, seconds: float, data_lost: bool = True) -> None:
        """1100 to every client now; after ``seconds`` 1101 (subscriptions cancelled) or 1102."""
        with self._lock:
            self._upstream_down = True
            for s in self._ready_sessions():
                self._send_error(s, -1, 1100, P.ERROR_TEXTS[1100])
            self._changed.notify_all()
        self._wake()

        def restore() -> None:
            with self._lock:
                self._upstream_down = False
                code = 1101 if data_lost else 1102
                if data_lost:
                    self.market.drop_all_subscriptions()
                for s in self._ready_sessions():
                    self._send_error(s, -1, code, P.ERROR_TEXTS[code])
                for symbol in self.market.symbols:  # catch up on moves made during the outage
                    self._stream_quote(symbol)
                    self.engine.on_price(symbol)
                self._changed.notify_all()

        self._run_in_loop(lambda: self._schedule(seconds, restore))

    def restart(self, downtime: float) -> None:
        """Drop every connection (FIN), refuse for ``downtime``, then listen again.

        Orders, positions, executions and per-client-id order id high-water marks survive;
        market data subscriptions do not.
        """

        def act() -> None:
            self._close_all(reset=False, reason="restart")
            self._refuse_until = max(self._refuse_until, time.monotonic() + downtime)
            self._stop_listening()
            self._schedule(downtime, self._maybe_relisten)

        self._run_in_loop(act)

    def send_garbage(self, kind: str = "bad_field") -> None:
        """Send a malformed frame to every ready client.

        ``bad_field``: a TICK_PRICE whose numeric fields are not numbers (9.81's ``run()``
        dies on the ValueError); ``unknown_id``: a frame with message id 9999;
        ``random_bytes``: a length-prefixed frame of 64 seeded random non-NUL bytes and a NUL
        (its "message id" is not a number: both official clients' ``run()`` die on it).
        """
        if kind == "bad_field":
            data = encode_frame([P.Out.TICK_PRICE, 6, "x1", "y2", "z3", "w4", "v5"])
        elif kind == "unknown_id":
            data = encode_frame([9999, 1, "garbage"])
        elif kind == "random_bytes":
            rnd = self.market.rng_for("garbage")
            data = frame_raw(bytes(rnd.randrange(1, 256) for _ in range(64)) + b"\0")
        else:
            raise ValueError(f"unknown garbage kind {kind!r}")
        with self._lock:
            for s in self._ready_sessions():
                self._enqueue(s, data)
        self._wake()

    # ------------------------------------------------------------------ market / orders facade

    def set_price(self, symbol: str, price: float) -> None:
        """Move ``symbol``'s simulated price (bid/ask around it), stream it, and match orders.

        During an ``upstream_outage`` only the price moves; streaming and matching resume
        when the outage ends."""
        with self._lock:
            self.market.set_price(symbol, price)
            if not self._upstream_down:  # no data and no fills while the gateway is cut off
                self._stream_quote(symbol)
                self.engine.on_price(symbol)
            self._changed.notify_all()
        self._wake()

    def set_tick_interval(self, seconds: float) -> None:
        """How often the random walk steps and streaming subscriptions get a quote."""
        with self._lock:
            self.market.tick_interval = seconds

    def set_tick_rate(self, ticks_per_second: int) -> None:
        """Extra LAST ticks per second per streaming subscription (0: off). For throughput tests."""
        with self._lock:
            self.market.extra_tick_rate = max(0, int(ticks_per_second))

    def silence_market_data(self, symbol: str) -> int:
        """Stop streaming ``symbol`` to every client without a word (a stream that silently
        dies, as real ones sometimes do); returns how many streams went quiet."""
        with self._lock:
            return self.market.silence(symbol)

    def set_live_data_subscribed(self, symbol: str, subscribed: bool) -> None:
        """Whether the account has live data for ``symbol``. Without it a live request gets
        error 354; after ``reqMarketDataType(3)`` (delayed) it is served delayed ticks."""
        with self._lock:
            if subscribed:
                self.market.unsubscribed.discard(symbol)
            else:
                self.market.unsubscribed.add(symbol)

    def hold_order_acks(self, hold: bool = True) -> None:
        """While held, new orders are booked (and visible in ``gw.orders``) but nothing is sent
        back to the client; releasing sends the held acknowledgements."""
        with self._lock:
            self.engine.hold_acks(hold)
            self._changed.notify_all()
        self._wake()

    def fill_order(self, order_id: int, client_id: Optional[int] = None, price: Optional[float] = None) -> None:
        """Fill a working order now (at ``price`` or the market)."""
        with self._lock:
            self.engine.force_fill(order_id, client_id, price)
            self._changed.notify_all()
        self._wake()

    @property
    def orders(self) -> List[OrderRecord]:
        """Every order received, in arrival order, duplicates and rejects included (snapshots)."""
        with self._lock:
            return self.engine.snapshot()

    def open_orders(self) -> List[OrderRecord]:
        with self._lock:
            return [o for o in self.engine.snapshot() if o.is_open]

    @property
    def positions(self) -> Dict[Tuple[str, str], float]:
        """(account, symbol-or-local-symbol) → signed position."""
        with self._lock:
            return self.engine.positions_snapshot()

    @property
    def executions(self) -> List[ExecutionInfo]:
        """Every execution, in order (BAG orders: one per leg)."""
        with self._lock:
            return [
                ExecutionInfo(e.order.client_id, e.order.order_id, e.exec_id, e.contract.symbol,
                              e.contract.local_symbol, e.side, e.shares, e.price, e.commission)
                for e in self.engine.executions()
            ]

    # ------------------------------------------------------------------ inspection

    @property
    def connections(self) -> List[ConnectionInfo]:
        with self._lock:
            return [
                ConnectionInfo(s.client_id, s.address, s.since, s.ready)
                for s in self._sessions.values()
                if s.state != "closed"
            ]

    @property
    def errors_sent(self) -> Dict[int, int]:
        """Error code → how many ERR_MSG frames with it were sent (all clients)."""
        with self._lock:
            return dict(self._errors_sent)

    def messages_received(self, client_id: Optional[int] = None) -> int:
        """Messages received after START_API, for one client id or all."""
        with self._lock:
            if client_id is None:
                return sum(self._received_by_client.values())
            return self._received_by_client[client_id]

    @property
    def malformed_disconnects(self) -> int:
        """Clients dropped for bytes no TWS client sends (bad framing, fields or requests)."""
        with self._lock:
            return self._garbage_disconnects

    @property
    def listening(self) -> bool:
        """False while connections are refused (``refuse_connections``, ``restart``)."""
        with self._lock:
            return self._listener is not None

    @property
    def blackholed(self) -> bool:
        with self._lock:
            return self._blackholed()

    @property
    def upstream_down(self) -> bool:
        with self._lock:
            return self._upstream_down

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` (evaluated under the gateway lock) is truthy; return it.

        Raises TimeoutError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("simulator condition not reached")
                self._changed.wait(min(remaining, 0.1))

    # ------------------------------------------------------------------ sending (lock held)

    def _ready_sessions(self) -> List[_Session]:
        return [s for s in self._sessions.values() if s.ready]

    def sessions_for_client(self, client_id: int) -> List[_Session]:
        return [s for s in self._sessions.values() if s.ready and s.client_id == client_id]

    def all_ready_sessions(self) -> List[_Session]:
        return self._ready_sessions()

    def _enqueue(self, session: _Session, data: bytes) -> None:
        if session.state == "closed":
            return
        session.outq.append((time.monotonic() + self._latency, data))
        session.queued_bytes += len(data)

    def send(self, session: _Session, fields: Sequence[Field]) -> None:
        """Queue one frame for a session (caller holds the lock; loop thread flushes)."""
        if fields and fields[0] == P.Out.ERR_MSG:
            self.count_error(int(fields[3]))  # type: ignore[arg-type]
        self._enqueue(session, encode_frame(fields))

    def count_error(self, code: int) -> None:
        self._errors_sent[code] += 1

    def _send_error(self, session: _Session, req_id: int, code: int, text: str) -> None:
        self.send(session, P.err_msg(req_id, code, text))

    def send_error(self, session: _Session, req_id: int, code: int, **fmt: Any) -> None:
        self._send_error(session, req_id, code, P.ERROR_TEXTS[code].format(req_id=req_id, **fmt))

    def enqueue_bytes(self, session: _Session, data: bytes) -> None:
        """Queue already-encoded frames for a session (caller holds the lock)."""
        self._enqueue(session, data)

    def upstream_down_locked(self) -> bool:
        return self._upstream_down

    def notify(self) -> None:
        self._changed.notify_all()

    def _tick_target(self, sub: Subscription) -> Optional[_Session]:
        """The session a subscription's ticks go to, or None (gone, not ready, too far behind)."""
        session = self._sessions.get(sub.session_serial)
        if session is not None and session.ready and session.backlog() < _TICK_BACKLOG:
            return session
        return None

    def _stream_quote(self, symbol: str) -> None:
        for sub in self.market.subscriptions_for(symbol):
            session = self._tick_target(sub)
            if session is not None:
                self._enqueue(session, self.market.quote_frames(sub))

    # ------------------------------------------------------------------ loop plumbing

    def _wake(self) -> None:
        if threading.current_thread() is self._loop_thread:
            return
        with self._lock:
            if self._wake_pending or self._wake_w is None:
                return
            self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run_in_loop(self, fn: Callable[[], None], timeout: float = 10.0) -> None:
        """Run ``fn`` on the loop thread (with the lock held) and wait until it has run."""
        if not self._started or self._stopping:
            raise RuntimeError("the simulated gateway is not running")
        if threading.current_thread() is self._loop_thread:
            with self._lock:
                fn()
            return
        done = threading.Event()
        with self._lock:
            self._commands.append((fn, done))
        self._wake()
        if not done.wait(timeout):
            raise TimeoutError("simulator loop did not run the command")

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread after ``delay`` seconds (loop thread, lock held)."""
        heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), next(self._timer_seq), fn))

    def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self._port = sock.getsockname()[1]
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, "listen")

    def _stop_listening(self) -> None:
        if self._listener is None:
            return
        assert self._selector is not None
        self._selector.unregister(self._listener)
        self._listener.close()
        self._listener = None
        log.info("gateway stopped listening on port %d", self._port)

    def _maybe_relisten(self) -> None:
        if self._listener is not None or self._stopping:
            return
        if time.monotonic() < self._refuse_until - 1e-3:
            return  # a later refusal extended the window; its own timer relistens
        try:
            self._listen(self._port)
            log.info("gateway listening again on port %d", self._port)
        except OSError as exc:
            log.warning("could not listen again on port %d (%s); retrying", self._port, exc)
            self._schedule(0.1, self._maybe_relisten)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        assert self._selector is not None
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    timeout = self._next_timeout()
                events = self._selector.select(timeout)
                with self._lock:
                    silent = self._blackholed()
                    for key, mask in events:
                        if key.data == "wake":
                            self._drain_wake()
                        elif key.data == "listen":
                            self._accept()
                        else:
                            session: _Session = key.data
                            if silent:
                                continue  # interest is dropped in housekeeping below
                            if mask & selectors.EVENT_READ and session.state != "closed":
                                self._read(session)
                            if mask & selectors.EVENT_WRITE and session.state != "closed":
                                self._write(session)
                    self._run_commands()
                    self._run_timers()
                    self._housekeeping()
                    self._changed.notify_all()
        except Exception:  # pragma: no cover - a bug; keep the failure visible
            log.exception("simulator loop crashed")
            raise
        finally:
            with self._lock:
                self._run_commands()
                self._close_all(reset=False, reason="gateway closed")
                self._stop_listening()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        timeout = 0.05  # housekeeping cadence (handshake/frame timeouts, blackhole end)
        if self._timers:
            timeout = min(timeout, self._timers[0][0] - now)
        if now >= self._blackhole_until:
            for s in self._sessions.values():
                if s.outq:
                    timeout = min(timeout, s.outq[0][0] - now)
        return max(0.0, timeout)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False

    def _run_commands(self) -> None:
        while self._commands:
            fn, done = self._commands.popleft()
            try:
                fn()
            except Exception:
                log.exception("simulator command failed")
            finally:
                done.set()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("simulator timer failed")

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(sock, address, self.max_frame)
            session.not_before = self._stall_until
            self._sessions[session.serial] = session
            log.info("connection %d accepted from %s:%d", session.serial, *address)

    def _blackholed(self) -> bool:
        return time.monotonic() < self._blackhole_until

    def _housekeeping(self) -> None:
        now = time.monotonic()
        blackholed = now < self._blackhole_until
        for session in list(self._sessions.values()):
            if session.state == "closed":
                continue
            if not blackholed:
                self._check_deadlines(session, now)
                if session.state == "closed":
                    continue
                self._flush_due(session, now)
            self._update_interest(session, blackholed)

    def _check_deadlines(self, session: _Session, now: float) -> None:
        if session.state != "ready":
            limit = session.accepted_at + self.handshake_timeout + max(0.0, session.not_before - session.accepted_at)
            if now > limit:
                log.warning("connection %d: handshake not completed in time; closing", session.serial)
                self._close(session, reset=False, reason="handshake timeout")
                return
        if session.partial_since is not None and now - session.partial_since > self.frame_timeout:
            log.warning("connection %d: partial frame held too long (slowloris?); closing", session.serial)
            self._close(session, reset=False, reason="partial frame timeout")
            return
        if session.backlog() > _MAX_BACKLOG:
            log.warning("connection %d: client stopped reading; closing", session.serial)
            self._close(session, reset=True, reason="slow consumer")

    def _flush_due(self, session: _Session, now: float) -> None:
        while session.outq and session.outq[0][0] <= now:
            data = session.outq.popleft()[1]
            session.queued_bytes -= len(data)
            session.wbuf += data
        if session.wbuf:
            self._write(session)
        if session.close_after_flush and not session.wbuf and not session.outq and session.state != "closed":
            self._close(session, reset=False, reason=session.close_reason)

    def _update_interest(self, session: _Session, blackholed: bool) -> None:
        if session.state == "closed":
            return
        events = 0
        if not blackholed:
            if not session.close_after_flush:
                events |= selectors.EVENT_READ
            if session.wbuf:
                events |= selectors.EVENT_WRITE
        if events == session.registered_events:
            return
        assert self._selector is not None
        if session.registered_events == 0:
            self._selector.register(session.sock, events, session)
        elif events == 0:
            self._selector.unregister(session.sock)
        else:
            self._selector.modify(session.sock, events, session)
        session.registered_events = events

    def _write(self, session: _Session) -> None:
        if not session.wbuf or self._blackholed():
            return
        try:
            sent = session.sock.send(session.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(session, reset=False, reason=f"send failed: {exc}")
            return
        del session.wbuf[:sent]

    def _read(self, session: _Session) -> None:
        try:
            data = session.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(session, reset=False, reason=f"recv failed: {exc}")
            return
        if not data:
            self._close(session, reset=False, reason="client closed")
            return
        try:
            payloads = session.parser.feed(data)
        except ProtocolError as exc:
            log.warning("connection %d from %s:%d: %s; disconnecting", session.serial, *session.address, exc)
            self._garbage_disconnects += 1
            self._close(session, reset=False, reason=f"protocol error: {exc}")
            return
        now = time.monotonic()
        session.partial_since = (session.partial_since or now) if session.parser.buffered else None
        # Arrival times for pacing: a batch read in one go arrived since the previous read, so
        # it is spread over that span. A loop stalled by a loaded machine then does not turn a
        # paced client's messages into a fake burst; a real burst still lands in one instant.
        span_start = max(session.last_read_at, now - 1.0)
        session.last_read_at = now
        count = len(payloads)
        for index, payload in enumerate(payloads):
            if session.state == "closed" or session.close_after_flush:
                break
            arrived = span_start + (now - span_start) * (index + 1) / count
            try:
                self._dispatch(session, payload, arrived)
            except ProtocolError as exc:
                log.warning("connection %d: %s; disconnecting", session.serial, exc)
                self._garbage_disconnects += 1
                self._close(session, reset=False, reason=f"protocol error: {exc}")
                break
            except (ValueError, IndexError) as exc:
                log.warning("connection %d: malformed message (%s); disconnecting", session.serial, exc)
                self._garbage_disconnects += 1
                self._close(session, reset=False, reason=f"malformed message: {exc}")
                break
            except Exception as exc:  # a handler bug must cost one client, never the gateway
                log.exception("connection %d: request failed; disconnecting", session.serial)
                self._garbage_disconnects += 1
                self._close(session, reset=False, reason=f"request failed: {exc!r}")
                break

    # ------------------------------------------------------------------ closing

    def _close_all(self, reset: bool, reason: str) -> None:
        for session in list(self._sessions.values()):
            self._close(session, reset=reset, reason=reason)

    def _close(self, session: _Session, reset: bool, reason: str) -> None:
        if session.state == "closed":
            return
        was_ready = session.ready
        session.state = "closed"
        sock = session.sock
        if session.registered_events:
            assert self._selector is not None
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            session.registered_events = 0
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        session.outq.clear()
        session.queued_bytes = 0
        session.wbuf.clear()
        self._sessions.pop(session.serial, None)
        self.market.drop_session(session.serial)
        self.engine.on_session_closed(session)
        log.info(
            "connection %d (client id %s) closed with %s: %s",
            session.serial,
            session.client_id if was_ready else "-",
            "RST" if reset else "FIN",
            reason,
        )
        self._changed.notify_all()

    def _close_later(self, session: _Session, reason: str) -> None:
        """Close with a FIN once everything queued for the session has been sent."""
        session.close_after_flush = True
        session.close_reason = reason

    # ------------------------------------------------------------------ handshake and dispatch

    def _dispatch(self, session: _Session, payload: bytes, arrived: float) -> None:
        if session.state == "version":
            self._on_version(session, payload)
            return
        fields = split_fields(payload)
        if not fields:
            raise ProtocolError("empty frame")
        msg_id = int(fields[0])
        if session.state == "await_start":
            if msg_id != P.In.START_API:
                log.warning("connection %d: message %d before START_API ignored", session.serial, msg_id)
                return
            self._on_start_api(session, fields)
            return
        self._received_by_client[session.client_id or 0] += 1
        session.received += 1
        if self._check_pacing(session, arrived):
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.info("connection %d: unsupported message id %d ignored", session.serial, msg_id)
            return
        handler(session, fields)

    def _on_version(self, session: _Session, payload: bytes) -> None:
        try:
            low, high, options = P.parse_version_request(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"bad version request: {exc}") from exc
        if low > P.SERVER_VERSION or high < P.MIN_CLIENT_VERSION:
            log.warning(
                "connection %d: client versions %d..%d not supported; closing", session.serial, low, high
            )
            self._close(session, reset=False, reason="unsupported client version")
            return
        session.server_version = min(high, P.SERVER_VERSION)
        session.state = "await_start"
        log.debug("connection %d: version request %d..%d %r", session.serial, low, high, options)
        delay = session.not_before - time.monotonic()
        if delay > 0:
            self._schedule(delay, lambda: self._send_version_reply(session))
        else:
            self._send_version_reply(session)

    def _send_version_reply(self, session: _Session) -> None:
        if session.state == "closed":
            return
        # One frame, two fields, one write: nothing else is queued before START_API.
        self._enqueue(session, encode_frame(P.version_reply()))

    def _on_start_api(self, session: _Session, fields: List[str]) -> None:
        client_id = int(fields[2])
        session.client_id = client_id
        in_use = [s for s in self._sessions.values() if s is not session and s.ready and s.client_id == client_id]
        if in_use:
            log.warning("connection %d: client id %d already in use; 326 and close", session.serial, client_id)
            self.send_error(session, -1, 326)
            self._close_later(session, "client id in use")
            return
        if len(self._ready_sessions()) >= self.max_clients:
            log.warning("connection %d: more than %d clients; closing", session.serial, self.max_clients)
            self._close(session, reset=False, reason="too many clients")
            return
        session.state = "ready"
        self.send(session, P.managed_accounts(self.accounts))
        self.send(session, P.next_valid_id(self.engine.next_valid_id(client_id)))
        for code in P.STARTUP_NOTICES:
            self.send_error(session, -1, code)
        log.info("connection %d ready as client id %d", session.serial, client_id)
        self.engine.on_session_ready(session)

    def _check_pacing(self, session: _Session, now: float) -> bool:
        """Count the message (arrived at ``now``) against the 50/s limit. True if disconnected."""
        if not self.pacing_limit:
            return False
        recent = session.recent
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) <= self.pacing_limit or now < session.pacing_quiet_until:
            return False
        session.pacing_quiet_until = now + 1.0
        session.pacing_violations += 1
        self._send_error(session, -1, 100, P.ERROR_TEXTS[100].format(rec=len(recent)))
        log.warning(
            "client id %s exceeded %d msg/s (%d); violation %d",
            session.client_id,
            self.pacing_limit,
            len(recent),
            session.pacing_violations,
        )
        if self.pacing_disconnect_after and session.pacing_violations >= self.pacing_disconnect_after:
            self._close_later(session, "repeated pacing violations")
            return True
        return False

    # ------------------------------------------------------------------ core requests

    def _on_current_time(self, session: _Session, fields: List[str]) -> None:
        self.send(session, P.current_time(int(time.time())))

    def _on_req_ids(self, session: _Session, fields: List[str]) -> None:
        assert session.client_id is not None
        self.send(session, P.next_valid_id(self.engine.next_valid_id(session.client_id)))

    def _on_req_managed_accounts(self, session: _Session, fields: List[str]) -> None:
        self.send(session, P.managed_accounts(self.accounts))

    # ------------------------------------------------------------------ ticker

    def _ticker(self) -> None:
        last_step = time.monotonic()
        last_extra = last_step
        while True:
            with self._lock:
                interval = self.market.tick_interval
                rate = self.market.extra_tick_rate
            wait = 0.01 if rate else min(interval, 0.05)
            if self._ticker_stop.wait(wait):
                return
            now = time.monotonic()
            produced = False
            with self._lock:
                if self._upstream_down or now < self._blackhole_until:
                    last_step = last_extra = now
                    continue
                if now - last_step >= self.market.tick_interval:
                    last_step = now
                    for symbol in self.market.step():
                        self._stream_quote(symbol)
                        self.engine.on_price(symbol)
                    produced = True
                if rate:
                    count = int((now - last_extra) * rate)
                    if count:
                        last_extra = now
                        for sub in self.market.streaming_subscriptions():
                            session = self._tick_target(sub)
                            if session is not None:
                                self._enqueue(session, self.market.burst_frames(sub, count))
                        produced = True
                else:
                    last_extra = now
                if produced:
                    self._changed.notify_all()
            if produced:
                self._wake()
