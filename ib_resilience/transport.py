"""One TCP connection to the gateway: a bounded handshake, a framing reader thread, and
whole-message sends under one lock.

Why not the official ``Connection``/``EReader``: ``EClient.connect`` has no deadline (it can
block forever on a silent peer), returns silently when the peer closes before the version
reply, drops bytes that arrive together with the version reply, loses a read of exactly 4096
bytes followed by a quiet second, and ``Connection.sendMsg`` ignores partial writes.

Version: we offer ``v100..157`` to both ``ibapi`` lines. Every layout the bridge and its fast
path decode is the server-version-157 layout; 157 sits below every threshold that changes the
wire format (fractional sizes, protobuf, ...), see ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from .clock import SYSTEM_CLOCK, Clock
from .errors import IBConnectionError

logger = logging.getLogger(__name__)

MIN_CLIENT_VERSION = 100
MAX_CLIENT_VERSION = 157
DEFAULT_MAX_FRAME_LEN = 16 * 1024 * 1024
# A send blocked this long means the peer stopped reading (a blackhole with full buffers): the
# connection is closed rather than letting the caller (e.g. the heartbeat) hang forever.
DEFAULT_SEND_TIMEOUT = 10.0
_RECV_SIZE = 65536
# Compact the receive buffer once this much of it has been consumed; below that, keep an offset.
_COMPACT_AT = 65536

FramesHandler = Callable[[int, List[bytes]], None]
CloseHandler = Callable[[int, str], None]

_unpack_len = struct.Struct("!I").unpack_from
# Where sends can be made non-blocking per call (POSIX), the socket itself stays blocking: with a
# timeout set, Python polls before every recv and send, a second system call each time.
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0) if hasattr(select, "poll") else 0


def _split_frames(data: Any, pos: int, max_len: int) -> Tuple[List[Any], int, int]:
    """The complete frames of ``data`` from ``pos``: ``(payloads, position after the last one,
    the length of an oversized frame or 0)``. Payloads are slices of ``data``."""
    frames: List[Any] = []
    append = frames.append
    n = len(data)
    while n - pos >= 4:
        (size,) = _unpack_len(data, pos)
        if size > max_len:
            return frames, pos, size
        end = pos + 4 + size
        if end > n:
            break
        append(data[pos + 4 : end])
        pos = end
    return frames, pos, 0


class FrameTooLong(IBConnectionError):
    """A frame's length prefix exceeds the configured maximum: the stream cannot be trusted."""


class Transport:
    """One connection (one *generation*). Not reusable: after :meth:`close`, make a new one.

    ``on_frames(generation, payloads)`` runs on the reader thread with the complete frames of
    each read, in order (payloads without their length prefix; one call per read, so the
    handler's per-call cost is paid once per read rather than per frame). The handler stops
    early if it closes the transport. ``on_close(generation, reason)`` runs exactly once:
    on the reader thread once it has started (after its last frame), otherwise on the thread
    that closed the transport.
    """

    def __init__(
        self,
        generation: int,
        on_frames: FramesHandler,
        on_close: CloseHandler,
        *,
        pacer: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        max_frame_len: int = DEFAULT_MAX_FRAME_LEN,
        connect_options: str = "",
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.generation = generation
        self._on_frames = on_frames
        self._on_close = on_close
        self._pacer = pacer
        self._clock = clock
        self._max_frame_len = max_frame_len
        self._connect_options = connect_options
        self._send_timeout = send_timeout
        self._sock: Optional[socket.socket] = None
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closing = False
        self._close_reason = ""
        self._close_fired = False
        self._reader: Optional[threading.Thread] = None
        self._after_frames: List[Callable[[], None]] = []
        self._send_now_ok = False
        self._pending = bytearray()  # bytes received during the handshake after the version frame
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.server_version = 0
        self.connection_time = ""
        self.last_rx = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0

    # ------------------------------------------------------------------ handshake

    def connect(self, host: str, port: int, timeout: float) -> Tuple[int, str]:
        """Open the socket and exchange versions, bounded as a whole by ``timeout`` seconds.

        Returns ``(server_version, connection_time)``. Raises :class:`IBConnectionError` on
        refusal, timeout or a close before the version reply; the socket is closed then.
        Does not start the reader (see :meth:`start`).
        """
        self.host, self.port = host, port
        # Socket deadlines are real time whatever the injected clock (which stamps last_rx).
        deadline = time.monotonic() + timeout
        try:
            sock = socket.create_connection((host, port), timeout=max(timeout, 0.001))
        except socket.timeout as exc:
            self._fail_handshake("connect timed out")
            raise IBConnectionError(f"TCP connect timed out after {timeout:g} s", host=host, port=port) from exc
        except OSError as exc:
            self._fail_handshake(f"connect failed: {exc}")
            raise IBConnectionError(f"cannot connect: {exc}", host=host, port=port) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._state_lock:
            closing = self._closing
            self._sock = sock
        if closing:  # close() ran while we were connecting
            self._shutdown_socket()
            raise IBConnectionError("closed during connect", host=host, port=port)
        try:
            version = f"v{MIN_CLIENT_VERSION}..{MAX_CLIENT_VERSION}"
            if self._connect_options:
                version += " " + self._connect_options
            payload = version.encode("ascii")
            self._sendall_raw(b"API\0" + struct.pack("!I", len(payload)) + payload, paced=False)
            server_version, conn_time = self._read_version_frame(sock, deadline)
        except socket.timeout as exc:
            self._fail_handshake("handshake timed out")
            raise IBConnectionError(
                f"handshake timed out after {timeout:g} s (no version reply)", host=host, port=port
            ) from exc
        except IBConnectionError:
            raise
        except OSError as exc:
            self._fail_handshake(f"handshake failed: {exc}")
            raise IBConnectionError(f"handshake failed: {exc}", host=host, port=port) from exc
        self.server_version, self.connection_time = server_version, conn_time
        if _DONTWAIT:
            # The reader blocks in recv until bytes or shutdown(); sends never block (_send_now)
            # and wait for room, bounded by send_timeout, only when the peer stopped reading.
            sock.settimeout(None)
            self._send_now_ok = True
        else:
            # One timeout serves both directions: it bounds sendall; the reader just reads again.
            sock.settimeout(self._send_timeout)
        return server_version, conn_time

    def _read_version_frame(self, sock: socket.socket, deadline: float) -> Tuple[int, str]:
        buf = bytearray()
        while True:
            # Frames before the version reply (old gateways sent news first) are skipped.
            while len(buf) >= 4:
                (size,) = _unpack_len(buf, 0)
                if size > self._max_frame_len:
                    self._fail_handshake("protocol error: bad version frame")
                    raise FrameTooLong(f"handshake: frame length {size} too long", host=self.host, port=self.port)
                if len(buf) < 4 + size:
                    break
                fields = bytes(buf[4 : 4 + size]).split(b"\0")[:-1]
                del buf[: 4 + size]
                if len(fields) != 2:
                    logger.debug("skipping a %d-field frame before the version reply", len(fields))
                    continue
                try:
                    server_version = int(fields[0])
                    conn_time = fields[1].decode("ascii", errors="backslashreplace")
                except ValueError as exc:
                    self._fail_handshake("protocol error: bad version reply")
                    raise IBConnectionError(
                        f"bad version reply {fields!r}", host=self.host, port=self.port
                    ) from exc
                if not MIN_CLIENT_VERSION <= server_version <= MAX_CLIENT_VERSION:
                    self._fail_handshake(f"unsupported server version {server_version}")
                    raise IBConnectionError(
                        f"server version {server_version} outside {MIN_CLIENT_VERSION}..{MAX_CLIENT_VERSION}",
                        host=self.host,
                        port=self.port,
                    )
                # Unlike the official client, bytes that came with the reply are kept.
                self._pending = buf
                return server_version, conn_time
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("handshake deadline")
            sock.settimeout(remaining)
            chunk = sock.recv(_RECV_SIZE)
            if not chunk:
                self._fail_handshake("closed by peer before the version reply")
                raise IBConnectionError("connection closed before the version reply", host=self.host, port=self.port)
            self.last_rx = self._clock.monotonic()
            self.bytes_in += len(chunk)
            buf += chunk

    def _fail_handshake(self, reason: str) -> None:
        self._begin_close(reason)
        self._fire_close()

    # ------------------------------------------------------------------ reader

    def start(self) -> None:
        """Start the reader thread (a daemon named ``ib-reader-<generation>``)."""
        if self._sock is None:
            raise IBConnectionError("transport is not connected", host=self.host, port=self.port)
        self._reader = threading.Thread(target=self._run, name=f"ib-reader-{self.generation}", daemon=True)
        self._reader.start()

    @property
    def reader_thread(self) -> Optional[threading.Thread]:
        return self._reader

    def _run(self) -> None:
        reason = "reader stopped"
        try:
            reason = self._read_loop()
        except Exception as exc:  # a bug of ours; never let the thread die silently
            logger.exception("reader of generation %d failed", self.generation)
            reason = f"reader error: {exc!r}"
        self._run_after_frames()  # a waiter woken for a reply must not wait for the close
        self._begin_close(reason)
        self._fire_close()

    def call_after_frames(self, fn: Callable[[], None]) -> None:
        """Reader thread only: run ``fn`` once the frames of the current read are handled, just
        before the reader waits for more bytes (or closes).

        For waking other threads: a thread woken while the reader still holds the GIL wakes
        only to block on the GIL and must be woken again. Deferred to this point, its wake-up
        overlaps the reader's wait, and a read that resolves many things wakes each once.
        """
        self._after_frames.append(fn)

    def _run_after_frames(self) -> None:
        fns = self._after_frames
        if not fns:
            return
        self._after_frames = []
        for fn in fns:
            try:
                fn()
            except Exception:
                logger.exception("after-frames callback %r of generation %d failed", fn, self.generation)

    def _read_loop(self) -> str:
        sock = self._sock
        assert sock is not None
        on_frames = self._on_frames
        gen = self.generation
        max_len = self._max_frame_len
        monotonic = self._clock.monotonic
        buf = self._pending
        self._pending = bytearray()
        off = 0
        recv = sock.recv
        while True:
            if buf:
                # Frames that arrived with the version reply, or a partial frame from the last read.
                frames, off, too_long = _split_frames(buf, off, max_len)
                if off == len(buf):
                    buf.clear()
                    off = 0
                elif off >= _COMPACT_AT:
                    del buf[:off]
                    off = 0
                if frames:
                    self.frames_in += len(frames)
                    on_frames(gen, [bytes(f) for f in frames])  # slices of a bytearray
                if too_long:
                    return f"protocol error: frame length {too_long} exceeds {max_len}"
            if self._closing:
                return self._close_reason
            if self._after_frames:
                self._run_after_frames()
            try:
                chunk = recv(_RECV_SIZE)
            except socket.timeout:
                continue  # idle; liveness is the watchdog's business (last_rx)
            except OSError as exc:
                return self._close_reason if self._closing else f"receive failed: {exc}"
            if not chunk:
                return self._close_reason if self._closing else "closed by peer"
            self.last_rx = monotonic()
            self.bytes_in += len(chunk)
            if buf:
                buf += chunk
                continue
            # Fast case: the buffer is empty, so slice frames straight out of the chunk.
            frames, pos, too_long = _split_frames(chunk, 0, max_len)
            if frames:
                self.frames_in += len(frames)
                on_frames(gen, frames)
            if too_long:
                return f"protocol error: frame length {too_long} exceeds {max_len}"
            if pos < len(chunk):
                buf += chunk[pos:] if pos else chunk

    # ------------------------------------------------------------------ sending

    def sendMsg(self, data: bytes) -> int:  # noqa: N802 - the official Connection's name
        """Send one complete message (length prefix included), paced, all or nothing.

        On a socket error the connection is closed (so the close callback fires) and
        :class:`IBConnectionError` is raised.
        """
        try:
            self._sendall_raw(data)
        except OSError as exc:
            self._begin_close(f"send failed: {exc}")
            if self._reader is None:
                self._fire_close()
            raise IBConnectionError(f"send failed: {exc}", host=self.host, port=self.port) from exc
        return len(data)

    def _sendall_raw(self, data: bytes, paced: bool = True) -> None:
        with self._send_lock:
            # Paced under the send lock, so a slot is taken at the moment of sending: a sender
            # stalled between its slot and its send (a loaded machine) then delays the others
            # instead of letting a queue of overdue slots go out back to back past 50/s.
            if paced and self._pacer is not None:
                self._pacer.acquire()
            sock = self._sock
            if sock is None or self._closing:
                raise OSError("not connected")
            if self._send_now_ok:
                self._send_now(sock, data)
            else:
                sock.sendall(data)
            self.bytes_out += len(data)
            self.frames_out += 1

    def _send_now(self, sock: socket.socket, data: bytes) -> None:
        """All of ``data`` with non-blocking sends; waits for room only while the socket buffer
        is full, for at most ``send_timeout`` without progress (then ``socket.timeout``)."""
        try:
            sent = sock.send(data, _DONTWAIT)
        except BlockingIOError:  # the buffer is full
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while view:
            try:
                view = view[sock.send(view, _DONTWAIT):]
                continue
            except BlockingIOError:
                pass
            if not poller.poll(self._send_timeout * 1000):
                raise socket.timeout(f"send blocked for {self._send_timeout:g} s: the peer stopped reading")

    # ------------------------------------------------------------------ state and closing

    def isConnected(self) -> bool:  # noqa: N802 - EClient.isConnected calls this name
        return self._sock is not None and not self._closing

    def is_connected(self) -> bool:
        return self.isConnected()

    def close(self, reason: str = "closed locally") -> None:
        """Close the connection; idempotent, from any thread, never joins the reader.

        The close callback fires on the reader thread if it runs, else here.
        """
        self._begin_close(reason)
        if self._reader is None:
            self._fire_close()

    disconnect = close

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the reader thread to end; True if it has ended, never ran,
        or this *is* the reader (it ends right after the current callback returns)."""
        reader = self._reader
        if reader is None or reader is threading.current_thread():
            return True
        reader.join(timeout)
        return not reader.is_alive()

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def _begin_close(self, reason: str) -> None:
        with self._state_lock:
            if self._closing:
                return
            self._closing = True
            self._close_reason = reason
        self._shutdown_socket()

    def _shutdown_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # shutdown() wakes a reader blocked in recv (a bare close() from another thread doesn't).
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _fire_close(self) -> None:
        with self._state_lock:
            if self._close_fired:
                return
            self._close_fired = True
            reason = self._close_reason
        try:
            self._on_close(self.generation, reason)
        except Exception:
            logger.exception("close callback of generation %d failed", self.generation)
