"""The one ``EWrapper``/``EClient`` subclass. It owns the socket I/O (through
:class:`~ib_resilience.transport.Transport`), decodes replies on the reader thread (the fast path
for hot messages, the official ``Decoder`` for everything else) and forwards every callback to
a *sink*. Requests are encoded by the official ``EClient`` methods. No policy lives here.

Contract (``docs/architecture.md``, "Bridge ↔ sink"): every ``EWrapper`` callback goes to the
sink method of the same name, if the sink has one, on the reader thread; ``error`` is
normalised to ``sink.error(req_id, code, text, advanced_json)``; ``commissionAndFeesReport``
(10.x) goes to ``sink.commissionReport``; sink exceptions are logged, counted and swallowed;
``sink.on_connection_closed(generation, reason)`` fires exactly once per generation: for every
generation :meth:`Bridge.open` creates, including one whose ``open()`` fails (then it fires
before ``open()`` raises).

If the sink has ``claim_tick`` when a connection comes up, the fast path offers it every tick
first and fires no ``tickPrice``/``tickSize`` for a tick it claims (``fastpath`` docstring).
:meth:`Bridge.wake_later` defers a wake-up of another thread to the end of the current read.

Decode policy: an exception while decoding a frame (a malformed field) is logged and counted
and the connection stays up. A frame whose message id is not an integer means the byte stream
is out of step (as does a frame with no NUL at all, or one longer than ``max_frame_len``): the connection is closed with a
"protocol error" reason so that the manager reconnects.

Sink methods are resolved once, when the bridge is built.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import ibapi
from ibapi import comm
from ibapi.client import EClient
from ibapi.decoder import Decoder
from ibapi.wrapper import EWrapper

from . import fastpath
from .clock import SYSTEM_CLOCK, Clock
from .errors import ClientIdInUseError, IBConnectionError
from .transport import DEFAULT_MAX_FRAME_LEN, DEFAULT_SEND_TIMEOUT, MAX_CLIENT_VERSION, Transport

logger = logging.getLogger(__name__)

IBAPI_VERSION: str = getattr(ibapi, "__version__", None) or ibapi.get_version_string()
#: 9 for PyPI ``ibapi`` 9.81, 10 for the official 10.x client.
IBAPI_LINE: int = int(IBAPI_VERSION.split(".")[0])

# How the installed line calls and is called; read from signatures, not from version numbers.
_INTERPRET_TAKES_MSG_ID = "msgId" in inspect.signature(Decoder.interpret).parameters
_ERROR_HAS_TIME = "errorTime" in inspect.signature(EWrapper.error).parameters
_CANCEL_ORDER_PARAMS = list(inspect.signature(EClient.cancelOrder).parameters)[2:]
_SEND_MSG_TAKES_ID = "msgId" in inspect.signature(EClient.sendMsg).parameters  # 10.x
_IBAPI_CLIENT_LOG = logging.getLogger("ibapi.client")
try:  # 10.x: the first server version with binary message ids
    from ibapi.server_versions import MIN_SERVER_VER_PROTOBUF as _MIN_SERVER_VER_PROTOBUF
except ImportError:
    _MIN_SERVER_VER_PROTOBUF = 1 << 30

CLIENT_ID_IN_USE = 326
_SINK_NAME_FOR = {"commissionAndFeesReport": "commissionReport"}
# Wrapper methods with our own implementation below (or that are not callbacks).
_NOT_GENERATED = {"error", "nextValidId", "managedAccounts", "logAnswer"}
_NO_HANDLERS: Dict[bytes, Any] = {}


@dataclass(frozen=True)
class HandshakeInfo:
    """What the gateway told us while the connection came up."""

    server_version: int
    connection_time: str
    next_valid_id: int
    accounts: Tuple[str, ...]
    generation: int


@dataclass(frozen=True)
class BridgeCounters:
    """A snapshot of the bridge's counters (cumulative over all generations)."""

    frames: int
    fast_path: int
    decode_errors: int
    sink_errors: int
    stale_dropped: int


class _Handshake:
    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.done = threading.Event()
        self.next_valid_id: Optional[int] = None
        self.accounts: Optional[str] = None
        self.error: Optional[IBConnectionError] = None


def _split_accounts(text: str) -> Tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


class Bridge(EWrapper, EClient):
    """Our ``EWrapper`` and ``EClient`` in one object; see the module docstring."""

    def __init__(
        self,
        sink: Any,
        pacer: Any = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_frame_len: int = DEFAULT_MAX_FRAME_LEN,
        join_timeout: float = 2.0,
        use_fast_path: bool = True,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self._sink = sink
        self._pacer = pacer
        self._clock = clock
        self._max_frame_len = max_frame_len
        self._join_timeout = join_timeout
        self._send_timeout = send_timeout
        self._use_fast_path = use_fast_path and fastpath.supported()
        self._sink_fns: Dict[str, Any] = {}
        for name in _FORWARDED_NAMES | {"error", "on_connection_closed"}:
            fn = getattr(sink, name, None)
            if callable(fn):
                self._sink_fns[name] = fn
        self._sink_error = self._sink_fns.get("error")
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._generation = 0
        self._live_gen = 0
        self._transport: Optional[Transport] = None
        self._handshake: Optional[_Handshake] = None
        self._fast: Optional[fastpath.FastPath] = None
        self._frames = 0
        self._fast_hits = 0
        self._decode_errors = 0
        self._sink_errors = 0
        self._stale_dropped = 0

    # ------------------------------------------------------------------ info

    @property
    def ibapi_line(self) -> int:
        return IBAPI_LINE

    @property
    def ibapi_version(self) -> str:
        return IBAPI_VERSION

    @property
    def generation(self) -> int:
        """The generation of the latest connection (0 before the first ``open``)."""
        return self._generation

    @property
    def last_rx(self) -> float:
        """Monotonic time of the last inbound bytes of the current connection (0.0 if none)."""
        t = self._transport
        return t.last_rx if t is not None else 0.0

    @property
    def transport(self) -> Optional[Transport]:
        return self._transport

    def wake_later(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a wake-up of another thread) on the reader thread once the frames of the
        current read are handled; from any other thread, run it now. See
        :meth:`Transport.call_after_frames <ib_resilience.transport.Transport.call_after_frames>`."""
        transport = self._transport
        if transport is not None and transport.reader_thread is threading.current_thread():
            transport.call_after_frames(fn)
        else:
            fn()

    def counters(self) -> BridgeCounters:
        return BridgeCounters(
            frames=self._frames,
            fast_path=self._fast_hits,
            decode_errors=self._decode_errors,
            sink_errors=self._sink_errors,
            stale_dropped=self._stale_dropped,
        )

    # ------------------------------------------------------------------ open / close

    def open(self, host: str, port: int, client_id: int, timeout: float) -> HandshakeInfo:
        """Open a new connection (a new generation), bounded as a whole by ``timeout`` seconds.

        Returns once the gateway has sent both ``nextValidId`` and ``managedAccounts``. Raises
        :class:`ClientIdInUseError` on 326, :class:`IBConnectionError` on refusal, timeout or a
        close before ready. A previous connection is closed first.
        """
        with self._open_lock:
            self.close("superseded by a new connection")
            deadline = time.monotonic() + timeout  # real time: it bounds socket I/O
            with self._lock:
                self._generation += 1
                gen = self._generation
                handshake = _Handshake(gen)
                self._handshake = handshake
                transport = Transport(
                    gen,
                    self._on_frames,
                    self._on_transport_closed,
                    pacer=self._pacer,
                    clock=self._clock,
                    max_frame_len=self._max_frame_len,
                    send_timeout=self._send_timeout,
                )
                self._transport = transport
                self._live_gen = gen
            try:
                return self._bring_up(transport, handshake, host, port, client_id, timeout, deadline)
            finally:
                self._handshake = None

    def _bring_up(
        self,
        transport: Transport,
        handshake: _Handshake,
        host: str,
        port: int,
        client_id: int,
        timeout: float,
        deadline: float,
    ) -> HandshakeInfo:
        server_version, conn_time = transport.connect(host, port, timeout)
        # The fields the official request methods check (EClient.connect would set them).
        self.host, self.port, self.clientId = host, port, client_id
        self.connTime = conn_time
        self.serverVersion_ = server_version
        if self.decoder is None or self.decoder.serverVersion != server_version:
            # Building a Decoder inspects every EWrapper method (~2 ms): keep it across
            # connections of the same server version; it holds no per-connection state.
            self.decoder = Decoder(self, server_version)
        self._fast = (
            fastpath.FastPath(self, getattr(self._sink, "claim_tick", None))
            if self._use_fast_path and server_version == MAX_CLIENT_VERSION
            else None
        )
        self.conn = transport
        self.setConnState(EClient.CONNECTED)
        transport.start()
        try:
            self.startApi()  # the official encoding of START_API
        except IBConnectionError as exc:
            self._abort(transport)
            raise IBConnectionError(
                f"connection lost while sending START_API: {exc}", host=host, port=port
            ) from exc
        remaining = deadline - time.monotonic()
        if not handshake.done.wait(max(remaining, 0.0)):
            self._abort(transport, "handshake timed out")
            raise IBConnectionError(
                f"timed out after {timeout:g} s waiting for nextValidId and managedAccounts",
                host=host,
                port=port,
            ) from TimeoutError("handshake deadline passed")
        if handshake.error is not None:
            self._abort(transport, str(handshake.error))
            raise handshake.error
        assert handshake.next_valid_id is not None and handshake.accounts is not None
        return HandshakeInfo(
            server_version=server_version,
            connection_time=conn_time,
            next_valid_id=handshake.next_valid_id,
            accounts=_split_accounts(handshake.accounts),
            generation=handshake.generation,
        )

    def _abort(self, transport: Transport, reason: str = "open failed") -> None:
        with self._lock:
            if self._live_gen == transport.generation:
                self._live_gen = 0
        transport.close(reason)
        if not transport.join(self._join_timeout):
            logger.error("reader of generation %d did not stop within %.1f s", transport.generation, self._join_timeout)

    def close(self, reason: str = "closed locally") -> None:
        """Close the current connection. Idempotent, callable from any thread (the reader
        included); joins the reader (bounded) unless called from it."""
        with self._lock:
            transport = self._transport
            self._live_gen = 0
        if transport is None:
            return
        self.setConnState(EClient.DISCONNECTED)
        self._abort(transport, reason)

    def isConnected(self) -> bool:  # noqa: N802
        """``EClient.isConnected`` without its eagerly formatted debug line (it runs per request)."""
        conn = self.conn
        return self.connState == EClient.CONNECTED and conn is not None and conn.isConnected()

    def sendMsg(self, *args: Any) -> None:  # noqa: N802
        """``EClient.sendMsg`` (9.81: ``(msg)``, 10.x: ``(msgId, msg)``) with the same framing
        (``comm.make_msg``) and log line, but the log line is only built when ibapi's logger
        is enabled for INFO: the official one looks up its caller's frame on every request."""
        if _SEND_MSG_TAKES_ID:
            msg_id, text = args
            # Raw binary message ids start with protobuf server versions; we negotiate <= 157.
            full_msg = comm.make_msg(msg_id, self.serverVersion_ >= _MIN_SERVER_VER_PROTOBUF, text)
        else:
            full_msg = comm.make_msg(*args)
        if _IBAPI_CLIENT_LOG.isEnabledFor(logging.INFO):
            _IBAPI_CLIENT_LOG.info("%s %s %s", "SENDING", sys._getframe(1).f_code.co_name, full_msg)
        self.conn.sendMsg(full_msg)

    def disconnect(self) -> None:
        """``EClient.disconnect`` replaced: closes our transport (no reentrant callbacks)."""
        self.close()

    def connect(self, host: str, port: int, clientId: int) -> None:  # noqa: N803
        raise TypeError("Bridge does not use EClient.connect; call open()")

    def run(self) -> None:
        raise TypeError("Bridge has its own reader thread; EClient.run must not be called")

    # ------------------------------------------------------------------ requests

    def cancel_order(self, order_id: int) -> None:
        """``cancelOrder`` with the signature of the installed line (10.x: ``OrderCancel()``)."""
        if not _CANCEL_ORDER_PARAMS:
            self.cancelOrder(order_id)
        elif _CANCEL_ORDER_PARAMS[0] == "orderCancel":
            from ibapi.order_cancel import OrderCancel  # 10.x only

            self.cancelOrder(order_id, OrderCancel())
        else:  # 10.x before OrderCancel: cancelOrder(orderId, manualCancelOrderTime)
            self.cancelOrder(order_id, "")

    # ------------------------------------------------------------------ reader side

    def _on_frames(self, gen: int, frames: List[bytes]) -> None:
        """The frames of one read, decoded in order; stops if a frame closed the connection."""
        if gen != self._live_gen:
            self._stale_dropped += len(frames)
            return
        fast = self._fast
        handlers = fast.handlers if fast is not None else _NO_HANDLERS
        done = hits = 0
        try:
            for frame in frames:
                done += 1
                if not frame:
                    continue
                try:
                    fields = frame.split(b"\0")
                    handler = handlers.get(fields[0])
                    if handler is not None and handler(fields):
                        hits += 1
                    else:
                        self._decode_official(gen, fields, frame)
                except Exception:
                    self._decode_errors += 1
                    logger.exception("cannot decode a frame of generation %d: %r", gen, frame[:200])
                if gen != self._live_gen:
                    break  # closed by a callback or a protocol error: the rest is not for anyone
        finally:
            self._frames += done
            self._fast_hits += hits

    def _decode_official(self, gen: int, fields: List[bytes], frame: bytes) -> None:
        del fields[-1]  # comm.read_fields: the piece after the last NUL is dropped
        try:
            msg_id = int(fields[0])
        except (ValueError, IndexError):
            # No NUL at all, or no numeric id: the byte stream is out of step.
            self._decode_errors += 1
            self._protocol_error(gen, f"protocol error: no message id in {frame[:20]!r}")
            return
        if _INTERPRET_TAKES_MSG_ID:
            self.decoder.interpret(tuple(fields[1:]), msg_id)
        else:
            self.decoder.interpret(tuple(fields))

    def _protocol_error(self, gen: int, reason: str) -> None:
        logger.error("generation %d: %s; closing", gen, reason)
        transport = self._transport
        if transport is not None and transport.generation == gen:
            with self._lock:
                if self._live_gen == gen:
                    self._live_gen = 0
            transport.close(reason)

    def _on_transport_closed(self, gen: int, reason: str) -> None:
        with self._lock:
            current = gen == self._generation
            if self._live_gen == gen:
                self._live_gen = 0
            handshake = self._handshake
        if current:
            # Before the sink hears of it: official request methods now answer 504.
            self.setConnState(EClient.DISCONNECTED)
        if handshake is not None and handshake.generation == gen and not handshake.done.is_set():
            if handshake.error is None:
                handshake.error = IBConnectionError(
                    f"connection closed before ready: {reason}", host=self.host, port=self.port
                )
            handshake.done.set()
        fn = self._sink_fns.get("on_connection_closed")
        if fn is not None:
            try:
                fn(gen, reason)
            except Exception:
                self._sink_errors += 1
                logger.exception("sink.on_connection_closed raised")

    # ------------------------------------------------------------------ wrapper callbacks

    def _call_sink(self, name: str, *args: Any) -> None:
        fn = self._sink_fns.get(name)
        if fn is not None:
            try:
                fn(*args)
            except Exception:
                self._sink_errors += 1
                logger.exception("sink.%s raised", name)

    def error(self, reqId: int, *args: Any, **kwargs: Any) -> None:  # noqa: N803
        """Normalises every line's ``error`` to ``sink.error(req_id, code, text, advanced_json)``."""
        if _ERROR_HAS_TIME:  # (reqId, errorTime, errorCode, errorString, advancedOrderRejectJson="")
            args = args[1:] if args else args
            kwargs.pop("errorTime", None)
        code = args[0] if len(args) > 0 else kwargs.get("errorCode", 0)
        text = args[1] if len(args) > 1 else kwargs.get("errorString", "")
        advanced = args[2] if len(args) > 2 else kwargs.get("advancedOrderRejectJson", "")
        code = int(code)
        handshake = self._handshake
        if code == CLIENT_ID_IN_USE and handshake is not None and not handshake.done.is_set():
            handshake.error = ClientIdInUseError(
                f"client id {self.clientId} is in use: {text}", host=self.host, port=self.port, code=code
            )
            handshake.done.set()
        fn = self._sink_error
        if fn is not None:
            try:
                fn(int(reqId), code, str(text), str(advanced or ""))
            except Exception:
                self._sink_errors += 1
                logger.exception("sink.error raised")

    def nextValidId(self, orderId: int) -> None:  # noqa: N802, N803
        handshake = self._handshake
        if handshake is not None and not handshake.done.is_set():
            handshake.next_valid_id = orderId
            if handshake.accounts is not None:
                handshake.done.set()
        self._call_sink("nextValidId", orderId)

    def managedAccounts(self, accountsList: str) -> None:  # noqa: N802, N803
        handshake = self._handshake
        if handshake is not None and not handshake.done.is_set():
            handshake.accounts = accountsList
            if handshake.next_valid_id is not None:
                handshake.done.set()
        self._call_sink("managedAccounts", accountsList)


def _make_forwarder(name: str, sink_name: str) -> Any:
    def forward(self: Bridge, *args: Any) -> None:
        fn = self._sink_fns.get(sink_name)
        if fn is not None:
            try:
                fn(*args)
            except Exception:
                self._sink_errors += 1
                logger.exception("sink.%s raised", sink_name)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"Forwards ``{name}`` to ``sink.{sink_name}``."
    return forward


_FORWARDED_NAMES = set()
for _name, _ in inspect.getmembers(EWrapper, inspect.isfunction):
    if _name.startswith("_") or _name in _NOT_GENERATED:
        continue
    _sink_name = _SINK_NAME_FOR.get(_name, _name)
    _FORWARDED_NAMES.add(_sink_name)
    setattr(Bridge, _name, _make_forwarder(_name, _sink_name))
_FORWARDED_NAMES |= {"nextValidId", "managedAccounts"}
