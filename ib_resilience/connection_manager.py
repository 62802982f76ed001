"""IBConnectionManager: the state machine, the watchdog thread, heartbeats and reconnects.

Threads:

* the caller's thread runs ``connect()`` / ``disconnect()``;
* the **watchdog** thread (``ib-watchdog``) is the single writer of the connection state while
  it runs: it opens connections (bounded by ``connect_timeout``), sends heartbeats, detects dead
  sockets and reconnects with backoff;
* the bridge's **reader** thread reports inbound messages; it only sets flags, resolves futures
  and wakes the watchdog — it never blocks.

Listeners hear every transition on the dispatcher thread, never on the reader.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .backoff_policy import ReconnectSchedule
from .bridge import Bridge, HandshakeInfo
from .clock import SYSTEM_CLOCK, Clock
from .config import Config
from .dispatcher import Dispatcher
from .errors import ClientIdInUseError, IBConnectionError
from .pacing import Pacer
from .requests import Pending, PendingRequests
from .state import ConnectionState, check_transition
from .stats import ConnectionStats

log = logging.getLogger("ib_resilience.connection")

StateListener = Callable[[ConnectionState, ConnectionState, str], None]
S = ConnectionState


class IBConnectionManager:
    """Owns one gateway session: connect, keep alive, recover, report."""

    def __init__(
        self,
        config: Config,
        *,
        sink: Any,
        clock: Clock = SYSTEM_CLOCK,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.stats = ConnectionStats(clock)
        self.dispatcher = Dispatcher(name="ib-dispatcher")
        self.pacer = Pacer.from_settings(config.pacing, clock)
        self.bridge = Bridge(sink, pacer=self.pacer, clock=clock)
        self.pending = PendingRequests(wake=self.bridge.wake_later)
        self._schedule = ReconnectSchedule(config.reconnect_delay_base, config.reconnect_delay_max, rng)

        self._state = S.DISCONNECTED
        self._state_since = clock.time()
        self._state_cond = threading.Condition()
        self._listeners: List[StateListener] = []
        self._ready_hooks: List[Callable[[HandshakeInfo], None]] = []
        self._periodic: List[Callable[[], None]] = []
        self._soon: Deque[Callable[[], None]] = collections.deque()
        self._lifecycle = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._wake = threading.Event()

        # Written by the reader thread, read by the watchdog.
        self._closed_generation = 0
        self._close_reason = ""
        self._probe_requested = False
        self._hb_sent_at: Optional[float] = None
        self.upstream_ok = True

        self.session: Optional[HandshakeInfo] = None
        self.client_id = config.client_id
        self._connected_at: Optional[float] = None
        self._counted_failures = 0

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        return self._state

    def is_connected(self) -> bool:
        return self._state is S.CONNECTED and self.bridge.isConnected()

    def add_state_listener(self, fn: StateListener) -> None:
        with self._state_cond:
            self._listeners.append(fn)

    def add_ready_hook(self, fn: Callable[[HandshakeInfo], None]) -> None:
        """``fn(info)`` runs on the watchdog thread when a session is ready, before CONNECTED is
        announced (e.g. to sync order ids). It must not block."""
        self._ready_hooks.append(fn)

    def add_periodic(self, fn: Callable[[], None]) -> None:
        """``fn()`` runs on the watchdog thread at every wake while connected (cheap checks)."""
        self._periodic.append(fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the watchdog thread while connected: for work that may wait on the
        pacer and so must never run on the reader thread (e.g. resubscribing after 1101)."""
        self._soon.append(fn)
        self._wake.set()

    def remove_state_listener(self, fn: StateListener) -> None:
        with self._state_cond:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _transition(self, new: ConnectionState, reason: str) -> None:
        with self._state_cond:
            old = self._state
            if old is new:
                return
            check_transition(old, new)
            self._state = new
            self._state_since = self.clock.time()
            # Snapshot before waking waiters: a listener added after a waiter returns must not
            # hear a transition that already happened.
            listeners = list(self._listeners)
            self._state_cond.notify_all()
        level = logging.WARNING if new in (S.RECONNECTING, S.ERROR) else logging.INFO
        log.log(level, "connection %s -> %s (%s)", old.name, new.name, reason)
        for fn in listeners:
            self.dispatcher.submit(self._call_listener, fn, old, new, reason)

    @staticmethod
    def _call_listener(fn: StateListener, old: ConnectionState, new: ConnectionState, reason: str) -> None:
        try:
            fn(old, new, reason)
        except Exception:
            log.exception("state listener %r raised; ignored", fn)

    def wait_for_state(self, states: Tuple[ConnectionState, ...], timeout: Optional[float]) -> bool:
        with self._state_cond:
            return self._state_cond.wait_for(lambda: self._state in states, timeout)

    # -------------------------------------------------------------- lifecycle

    def connect(self, timeout: Optional[float] = None) -> bool:
        """Start (or join) connecting; block until CONNECTED or ERROR, or ``timeout``."""
        with self._lifecycle:
            if self._state is S.CONNECTED:
                return True
            if self._thread is None or not self._thread.is_alive():
                self._join_watchdog()
                self._stop.clear()
                self._schedule.reset()
                self._counted_failures = 0
                self.dispatcher.start()
                self._transition(S.CONNECTING, "connect() called")
                self._thread = threading.Thread(target=self._run, name="ib-watchdog", daemon=True)
                self._thread.start()
        self.wait_for_state((S.CONNECTED, S.ERROR, S.DISCONNECTED), timeout)
        return self._state is S.CONNECTED

    def disconnect(self) -> None:
        """Close the session and stop every thread. Idempotent."""
        with self._lifecycle:
            self._stop.set()
            self._wake.set()
            self.bridge.close()
            self._join_watchdog()
            if self._state is not S.DISCONNECTED:
                self._on_session_lost("disconnect() called")
                self._transition(S.DISCONNECTED, "disconnect() called")
            self.dispatcher.stop(timeout=5.0)

    def _join_watchdog(self) -> None:
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout=self.config.connect_timeout + 5.0)
        if thread.is_alive():
            log.error("watchdog thread did not stop in time; it is a daemon and will die with the process")
        self._thread = None

    def probe(self, reason: str) -> None:
        """Ask the watchdog to check liveness now (e.g. a call failed with a CONNECTION error)."""
        log.debug("liveness probe requested: %s", reason)
        self._probe_requested = True
        self._wake.set()

    # ------------------------------------------------------ reader-thread hooks

    def on_connection_closed(self, generation: int, reason: str) -> None:
        """The bridge's connection ended. Runs on the reader (or closing) thread: never blocks."""
        if generation > self._closed_generation:
            self._closed_generation = generation
            self._close_reason = reason
        failed = self.pending.close_generation(
            generation, lambda p: IBConnectionError(f"connection lost while waiting for {p.kind}: {reason}")
        )
        if failed:
            log.info("failed %d pending request(s): %s", failed, reason)
        self._wake.set()

    def closed_generation(self) -> int:
        """The newest generation whose connection has ended (0 if none)."""
        return self._closed_generation

    def on_current_time(self) -> None:
        sent = self._hb_sent_at
        if sent is not None:
            self._hb_sent_at = None
            self.stats.on_latency(self.clock.monotonic() - sent)

    def on_upstream(self, ok: bool) -> None:
        with self._state_cond:
            self.upstream_ok = ok
            self._state_cond.notify_all()

    def wait_for_upstream(self, timeout: float, ok: bool = True) -> bool:
        """Block until gateway↔IB connectivity is back (1101/1102) — or, with ``ok=False``, lost
        (1100) — or ``timeout``."""
        with self._state_cond:
            return self._state_cond.wait_for(lambda: self.upstream_ok is ok, timeout)

    def wait_for_session_after(self, generation: int, timeout: float) -> Optional[int]:
        """Block until a session newer than ``generation`` is CONNECTED; its generation, or None."""

        def newer() -> bool:
            session = self.session
            return self._state is S.CONNECTED and session is not None and session.generation > generation

        with self._state_cond:
            if self._state_cond.wait_for(newer, timeout):
                assert self.session is not None
                return self.session.generation
        return None

    # --------------------------------------------------------------- watchdog

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                state = self._state
                if state in (S.CONNECTING, S.RECONNECTING):
                    self._attempt_until_connected()
                elif state is S.CONNECTED:
                    self._watch()
                else:
                    return  # ERROR or DISCONNECTED: nothing left for the watchdog to do
            except Exception:  # the watchdog must survive its own bugs
                log.exception("watchdog iteration failed; continuing")
                self._stop.wait(0.1)

    def _attempt_until_connected(self) -> None:
        cfg = self.config
        ids = [cfg.client_id, *cfg.fallback_client_ids]
        id_index = ids.index(self.client_id) if self.client_id in ids else 0
        while not self._stop.is_set():
            try:
                info = self.bridge.open(cfg.host, cfg.port, self.client_id, cfg.connect_timeout)
            except ClientIdInUseError as exc:
                if self._stop.is_set():
                    return
                delay = self._failed_attempt(exc)
                if len(ids) > 1:
                    id_index = (id_index + 1) % len(ids)
                    self.client_id = ids[id_index]
                    log.warning("client id in use; rotating to client id %d", self.client_id)
                else:
                    delay = max(delay, cfg.client_id_in_use_delay)
            except IBConnectionError as exc:
                if self._stop.is_set():
                    return
                delay = self._failed_attempt(exc)
            else:
                self._on_ready(info)
                return
            if delay is None:
                return
            log.info("next connection attempt in %.3f s", delay)
            if self._stop.wait(delay):
                return

    def _failed_attempt(self, exc: BaseException) -> Optional[float]:
        """Count a failed attempt; return the delay before the next, or None once we gave up.

        Inside a maintenance window disconnects are expected: attempts there still back off but
        never count towards ``max_reconnect_attempts``."""
        self.stats.on_failed_attempt(str(exc))
        delay = self._schedule.next_delay()
        expected = self.in_maintenance()
        if not expected:
            self._counted_failures += 1
        limit = self.config.max_reconnect_attempts
        log.warning(
            "connection attempt %d failed%s: %s", self._schedule.failures,
            " (maintenance window: not counted)" if expected else "", exc,
        )
        if limit and self._counted_failures >= limit:
            self._transition(S.ERROR, f"gave up after {self._counted_failures} attempts: {exc}")
            return None
        return delay

    def in_maintenance(self) -> bool:
        """True inside a configured maintenance window (disconnects are expected there)."""
        return self.config.maintenance.active_window(self.clock.time()) is not None

    def _on_ready(self, info: HandshakeInfo) -> None:
        self.session = info
        self.on_upstream(True)
        self._hb_sent_at = None
        self._probe_requested = False
        self._connected_at = self.clock.monotonic()
        self.pending.open_generation(info.generation)
        for fn in list(self._ready_hooks):
            try:
                fn(info)
            except Exception:  # a failing hook must not cost the session
                log.exception("ready hook %r failed", fn)
        self.stats.on_connected()
        self._transition(S.CONNECTED, f"session ready (client id {self.client_id}, generation {info.generation})")

    def _on_session_lost(self, reason: str) -> None:
        session = self.session
        if session is not None:
            self.on_connection_closed(session.generation, reason)
        self.stats.on_disconnected()
        connected_at = self._connected_at
        if connected_at is not None and self.clock.monotonic() - connected_at >= self.config.stable_after:
            self._schedule.reset()  # a stable session earns a fresh backoff
            self._counted_failures = 0

    def _watch(self) -> None:
        """Keep one ready session alive until it dies or we are stopped."""
        cfg = self.config
        session = self.session
        assert session is not None
        generation = session.generation
        probe_at: Optional[float] = None  # when the outstanding liveness probe was sent
        next_heartbeat = self.clock.monotonic() + cfg.heartbeat_interval
        while not self._stop.is_set():
            if self._closed_generation >= generation:
                self._lost(f"connection closed: {self._close_reason}")
                return
            now = self.clock.monotonic()
            if probe_at is not None:
                if self.bridge.last_rx >= probe_at:
                    probe_at = None  # anything inbound proves the socket alive
                elif now - probe_at >= cfg.heartbeat_timeout:
                    reason = f"no inbound message for {now - probe_at:.3f} s after a heartbeat"
                    self.bridge.close()
                    self._lost(reason)
                    return
            if self._probe_requested:
                self._probe_requested = False
                next_heartbeat = now
            self._run_tasks()
            if now >= next_heartbeat:
                self._send_heartbeat()
                if probe_at is None:
                    probe_at = now
                next_heartbeat = now + cfg.heartbeat_interval
            wait = next_heartbeat - now
            if probe_at is not None:
                wait = min(wait, probe_at + cfg.heartbeat_timeout - now)
            self._wake.wait(max(wait, 0.001))
            self._wake.clear()

    def _run_tasks(self) -> None:
        while self._soon:
            task = self._soon.popleft()
            try:
                task()
            except Exception:
                log.exception("watchdog task %r failed", task)
        for fn in list(self._periodic):
            try:
                fn()
            except Exception:
                log.exception("periodic check %r failed", fn)

    def _send_heartbeat(self) -> None:
        self._hb_sent_at = self.clock.monotonic()
        try:
            self.bridge.reqCurrentTime()
        except Exception as exc:  # a failed send closes the transport; the close path recovers
            log.info("heartbeat send failed: %s", exc)

    def _lost(self, reason: str) -> None:
        self._on_session_lost(reason)
        if self._stop.is_set():
            return
        self._transition(S.RECONNECTING, reason)
        if self._schedule.failures:
            # A session that flapped does not earn an immediate retry.
            delay = self._schedule.next_delay()
            log.info("reconnecting in %.3f s", delay)
            self._stop.wait(delay)

    # ----------------------------------------------------------------- status

    def status(self) -> Dict[str, Any]:
        state = self._state
        connected = state is S.CONNECTED
        snap = self.stats.snapshot()
        overdue = self._hb_sent_at is not None and (
            self.clock.monotonic() - self._hb_sent_at > self.config.heartbeat_timeout
        )
        return {
            "state": state.name,
            "state_since": self._state_since,
            "is_healthy": connected and self.upstream_ok and not overdue,
            "upstream_ok": self.upstream_ok,
            "uptime_percentage": round(self.stats.uptime_percentage(), 3),
            "connection_quality": self.stats.quality(connected, self.upstream_ok),
            "average_latency_ms": round(self.stats.average_latency_ms(), 3),
            "reconnect_attempts": self._schedule.failures,
            "client_id": self.client_id,
            "host": self.config.host,
            "port": self.config.port,
            "generation": self.session.generation if self.session else 0,
            "pending_requests": len(self.pending),
            "dispatcher_queue_depth": self.dispatcher.depth(),
            **snap,
        }

    def register(self, kind: str, key: Optional[int] = None) -> Pending:
        return self.pending.register(kind, key)
