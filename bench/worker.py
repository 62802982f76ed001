"""One benchmark client in its own process, driven by JSON lines on stdin.

Every client kind runs alone in a child process so that its CPU time is its own and it never
shares a GIL with the simulator (which lives in the parent, ``bench/run.py``). Kinds:

* ``raw``     - the official ``ibapi`` client at its most minimal: ``EClient.connect`` + a
  ``run()`` thread, callbacks set ``threading.Event``s (the floor a wrapper cannot beat);
* ``bridge``  - our ``Bridge`` alone (transport + fast path), no manager, no pacer;
* ``ours``    - ``ib_resilience.IBClient`` with the default configuration;
* ``ib_async``- the peer (asyncio; its own loop on this process's main thread);
* ``socket``  - a bare socket speaking just enough of the protocol: the simulator's headroom.

Commands (one JSON object a line in, one a line out): ``disconnect``, ``connect``, ``rt``, ``price``,
``ticks``, ``bracket``, ``quit``. A figure a kind cannot produce answers
``{"unavailable": "why"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

HOST = "127.0.0.1"
SYMBOL = "AAPL"
WAIT = 5.0  # bound on every single wait inside a worker


# bid, ask, last, high, low, close, open and their delayed twins: what tickPrice carries.
_PRICE_TICK_TYPES = frozenset({1, 2, 4, 6, 7, 9, 14, 66, 67, 68, 72, 73, 75, 76})


class Unavailable(Exception):
    """This client kind cannot produce the figure (yet); the message says why."""


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def stock(symbol: str = SYMBOL) -> Any:
    from ibapi.contract import Contract

    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


class Client:
    """What every kind implements; ``connect`` and each sample return seconds."""

    def connect(self) -> float:
        raise NotImplementedError

    def disconnect(self) -> None:
        raise NotImplementedError

    def round_trip(self) -> float:
        raise NotImplementedError

    def price(self) -> float:
        raise Unavailable("no price snapshot for this client")

    def connect_full(self) -> float:
        raise Unavailable("no separate connect-with-sync for this client")

    def bracket(self) -> float:
        raise Unavailable("no bracket order for this client")

    def start_ticks(self) -> None:
        raise NotImplementedError

    def tick_count(self) -> int:
        raise NotImplementedError

    def stop_ticks(self) -> None:
        raise NotImplementedError

    def received_count(self) -> int:
        """Ticks decoded from the wire; differs from ``tick_count`` only where updates are coalesced."""
        return self.tick_count()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def discard_backlog(self) -> None:
        """Drop received-but-undecoded messages (only the raw client queues without bound)."""

    def healthy(self) -> bool:
        return True

    def death(self) -> str:
        return "connection lost"


# ---------------------------------------------------------------------------------- raw ibapi


def _make_raw_app() -> Any:
    from ibapi.client import EClient
    from ibapi.wrapper import EWrapper

    class RawApp(EWrapper, EClient):
        def __init__(self) -> None:
            EWrapper.__init__(self)
            EClient.__init__(self, wrapper=self)
            self.ready = threading.Event()
            self.accounts = threading.Event()
            self.time_event = threading.Event()
            self.snapshot_end = threading.Event()
            self.acks: Dict[int, threading.Event] = {}
            self.next_id = 0
            self.ticks = 0

        def nextValidId(self, orderId: int) -> None:  # noqa: N802, N803
            self.next_id = orderId
            self.ready.set()

        def managedAccounts(self, accountsList: str) -> None:  # noqa: N802, N803
            self.accounts.set()

        def currentTime(self, time: int) -> None:  # noqa: N802
            self.time_event.set()

        def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:  # noqa: N802, N803
            self.ticks += 1

        def tickSnapshotEnd(self, reqId: int) -> None:  # noqa: N802, N803
            self.snapshot_end.set()

        def openOrder(self, orderId: int, *args: Any) -> None:  # noqa: N802, N803
            ev = self.acks.get(orderId)
            if ev is not None:
                ev.set()

        def error(self, *args: Any) -> None:
            pass  # 2104/2106/2158 notices and the like; nothing to do for the floor

    return RawApp()


class RawClient(Client):
    def __init__(self, port: int, client_id: int) -> None:
        self.port, self.client_id = port, client_id
        self.app: Any = None
        self.thread: Optional[threading.Thread] = None
        self.req_id = 1000

    def connect(self) -> float:
        app = _make_raw_app()
        t0 = time.perf_counter()
        app.connect(HOST, self.port, self.client_id)
        self.run_error = ""
        thread = threading.Thread(target=self._run, args=(app,), name="raw-run", daemon=True)
        thread.start()
        if not (app.ready.wait(WAIT) and app.accounts.wait(WAIT)):
            raise RuntimeError("raw ibapi client: no nextValidId/managedAccounts")
        elapsed = time.perf_counter() - t0
        self.app, self.thread = app, thread
        return elapsed

    def _run(self, app: Any) -> None:
        try:
            app.run()
        except Exception as exc:  # 9.81's run() lets a decode error escape and ends the session
            self.run_error = f"run() raised {type(exc).__name__}: {exc}"[:200]

    def healthy(self) -> bool:
        return self.app is not None and self.app.isConnected() and self.thread is not None and self.thread.is_alive()

    def death(self) -> str:
        return self.run_error or "its run() loop ended: the connection was closed"

    def disconnect(self) -> None:
        if self.app is not None:
            self.app.disconnect()
            if self.thread is not None:
                self.thread.join(WAIT)
            self.app = self.thread = None

    def round_trip(self) -> float:
        app = self.app
        app.time_event.clear()
        t0 = time.perf_counter()
        app.reqCurrentTime()
        if not app.time_event.wait(WAIT):
            raise RuntimeError("raw: no currentTime")
        return time.perf_counter() - t0

    def price(self) -> float:
        app = self.app
        self.req_id += 1
        app.snapshot_end.clear()
        t0 = time.perf_counter()
        app.reqMktData(self.req_id, stock(), "", True, False, [])
        if not app.snapshot_end.wait(WAIT):
            raise RuntimeError("raw: no tickSnapshotEnd")
        return time.perf_counter() - t0

    def bracket(self) -> float:
        from ibapi.order import Order

        app = self.app
        parent_id = app.next_id
        app.next_id += 3
        orders = []
        for i, (action, kind, price) in enumerate((("BUY", "LMT", 100.0), ("SELL", "LMT", 110.0), ("SELL", "STP", 90.0))):
            o = Order()
            o.orderId, o.action, o.orderType, o.totalQuantity = parent_id + i, action, kind, 1
            if kind == "LMT":
                o.lmtPrice = price
            else:
                o.auxPrice = price
            o.parentId = 0 if i == 0 else parent_id
            o.transmit = i == 2
            o.eTradeOnly = o.firmQuoteOnly = False
            orders.append(o)
        events = [threading.Event() for _ in orders]
        for o, ev in zip(orders, events):
            app.acks[o.orderId] = ev
        t0 = time.perf_counter()
        for o in orders:
            app.placeOrder(o.orderId, stock(), o)
        for ev in events:
            if not ev.wait(2.0):
                raise Unavailable("the simulator did not acknowledge the bracket (order engine not available yet)")
        return time.perf_counter() - t0

    def start_ticks(self) -> None:
        self.req_id += 1
        self.tick_req = self.req_id
        self.app.reqMktData(self.tick_req, stock(), "", False, False, [])

    def tick_count(self) -> int:
        return int(self.app.ticks)

    def discard_backlog(self) -> None:
        # The official EReader thread queues every frame it reads, without bound, for run()
        # to decode: a stream faster than the decoder piles up in memory (no backpressure
        # reaches the gateway) and would take minutes to work off. Empty it between rounds.
        q = self.app.msg_queue
        with q.mutex:
            q.queue.clear()

    def stop_ticks(self) -> None:
        self.app.cancelMktData(self.tick_req)


# ---------------------------------------------------------------------------------- our Bridge


class _CountingSink:
    def __init__(self) -> None:
        self.ticks = 0
        self.time_event = threading.Event()
        self.snapshot_end = threading.Event()

    def tickPrice(self, *args: Any) -> None:  # noqa: N802
        self.ticks += 1

    def currentTime(self, t: int) -> None:  # noqa: N802
        self.time_event.set()

    def tickSnapshotEnd(self, req_id: int) -> None:  # noqa: N802
        self.snapshot_end.set()


class BridgeClient(Client):
    def __init__(self, port: int, client_id: int) -> None:
        from ib_resilience.bridge import Bridge

        self.port, self.client_id = port, client_id
        self.sink = _CountingSink()
        self.bridge = Bridge(self.sink)
        self.req_id = 1000

    def connect(self) -> float:
        t0 = time.perf_counter()
        self.bridge.open(HOST, self.port, self.client_id, WAIT)
        return time.perf_counter() - t0

    def disconnect(self) -> None:
        self.bridge.close()

    def round_trip(self) -> float:
        self.sink.time_event.clear()
        t0 = time.perf_counter()
        self.bridge.reqCurrentTime()
        if not self.sink.time_event.wait(WAIT):
            raise RuntimeError("bridge: no currentTime")
        return time.perf_counter() - t0

    def price(self) -> float:
        self.req_id += 1
        self.sink.snapshot_end.clear()
        t0 = time.perf_counter()
        self.bridge.reqMktData(self.req_id, stock(), "", True, False, [])
        if not self.sink.snapshot_end.wait(WAIT):
            raise RuntimeError("bridge: no tickSnapshotEnd")
        return time.perf_counter() - t0

    def start_ticks(self) -> None:
        self.req_id += 1
        self.tick_req = self.req_id
        self.bridge.reqMktData(self.tick_req, stock(), "", False, False, [])

    def tick_count(self) -> int:
        return self.sink.ticks

    def stop_ticks(self) -> None:
        self.bridge.cancelMktData(self.tick_req)


# ---------------------------------------------------------------------------------- IBClient


class OursClient(Client):
    def __init__(self, port: int, client_id: int) -> None:
        from ib_resilience.client import IBClient

        self.client = IBClient(config={"port": port, "client_id": client_id, "max_reconnect_attempts": 3})
        self.ticks = 0
        self.subscription: Any = None

    def connect(self) -> float:
        t0 = time.perf_counter()
        if not self.client.connect(timeout=WAIT):
            raise RuntimeError(f"ours: connect failed ({self.client.state.name})")
        return time.perf_counter() - t0

    def disconnect(self) -> None:
        self.client.disconnect()

    def round_trip(self) -> float:
        t0 = time.perf_counter()
        self.client.get_current_time(timeout=WAIT)
        return time.perf_counter() - t0

    def price(self) -> float:
        fn = getattr(self.client, "get_current_price", None)
        if fn is None:
            raise Unavailable("IBClient.get_current_price not available yet")
        t0 = time.perf_counter()
        fn(SYMBOL, timeout=WAIT)
        return time.perf_counter() - t0

    def bracket(self) -> float:
        fn = getattr(self.client, "place_bracket_order", None)
        if fn is None:
            raise Unavailable("IBClient.place_bracket_order not available yet")
        from ib_resilience.errors import RequestTimeoutError

        t0 = time.perf_counter()
        try:
            fn(SYMBOL, "BUY", 1, 100.0, 110.0, 90.0, timeout=2.0)
        except RequestTimeoutError as exc:
            raise Unavailable(f"the simulator did not acknowledge the bracket ({exc})") from exc
        return time.perf_counter() - t0

    def _on_tick(self, tick: Any) -> None:
        # Count price updates only: the other kinds count tickPrice callbacks.
        if tick.tick_type in _PRICE_TICK_TYPES:
            self.ticks += 1

    def start_ticks(self) -> None:
        fn = getattr(self.client, "subscribe_market_data", None)
        if fn is None:
            raise Unavailable("IBClient.subscribe_market_data not available yet")
        self.subscription = fn(SYMBOL, self._on_tick)

    def tick_count(self) -> int:
        return self.ticks

    def received_count(self) -> int:
        # Frames our reader decoded (one per TICK_PRICE, as the other kinds count), from the
        # bridge counters in the public status.
        return int(self.client.get_connection_status()["bridge"]["frames"])

    def stop_ticks(self) -> None:
        sub = self.subscription
        self.subscription = None
        for name in ("unsubscribe_market_data", "cancel_market_data"):
            fn = getattr(self.client, name, None)
            if fn is not None:
                fn(sub)
                return
        for name in ("cancel", "close", "unsubscribe"):
            fn = getattr(sub, name, None)
            if fn is not None:
                fn()
                return


# ---------------------------------------------------------------------------------- ib_async


class IbAsyncClient(Client):
    def __init__(self, port: int, client_id: int) -> None:
        import ib_async

        logging.getLogger("ib_async").setLevel(logging.CRITICAL)
        self.mod = ib_async
        self.ib = ib_async.IB()
        self.port, self.client_id = port, client_id
        self.ticks = 0
        self.ticker: Any = None
        self.ib.pendingTickersEvent += self._on_pending
        # IB.connect always asks for positions, which the simulator does not serve: the sync
        # then waits out its timeout. Keep that one-off wait short; it is not what we measure.
        self.ib.connect(HOST, port, client_id, timeout=1.0, fetchFields=ib_async.StartupFetchNONE)
        # ib_async keys tickers by conId: qualify once, as its users do.
        self.contract = ib_async.Stock(SYMBOL, "SMART", "USD")
        self.ib.qualifyContracts(self.contract)

    def _on_pending(self, tickers: Any) -> None:
        for t in tickers:
            self.ticks += len(t.ticks)

    def connect(self) -> float:
        # The API handshake up to nextValidId + managedAccounts: what "ready" means for the
        # other kinds. IB.connect's account sync is separate (see the doc).
        t0 = time.perf_counter()
        self.ib.client.connect(HOST, self.port, self.client_id, timeout=WAIT)
        return time.perf_counter() - t0

    def connect_full(self) -> float:
        """``IB.connect`` as its users call it: handshake plus positions, open and completed
        orders, account updates and executions."""
        t0 = time.perf_counter()
        self.ib.connect(HOST, self.port, self.client_id, timeout=WAIT)
        return time.perf_counter() - t0

    def disconnect(self) -> None:
        if self.ib.isConnected():
            self.ib.disconnect()
        else:
            self.ib.client.disconnect()

    def round_trip(self) -> float:
        t0 = time.perf_counter()
        self.ib.reqCurrentTime()
        return time.perf_counter() - t0

    def price(self) -> float:
        t0 = time.perf_counter()
        self.ib.reqTickers(self.contract)
        return time.perf_counter() - t0

    def bracket(self) -> float:
        orders = self.ib.bracketOrder("BUY", 1, 100.0, 110.0, 90.0)
        t0 = time.perf_counter()
        trades = [self.ib.placeOrder(self.contract, o) for o in orders]
        deadline = time.monotonic() + 2.0
        # Acknowledged: the gateway's openOrder/orderStatus moved the trade out of PendingSubmit.
        while any(t.orderStatus.status in ("PendingSubmit", "") for t in trades):
            if time.monotonic() > deadline:
                raise Unavailable("the simulator did not acknowledge ib_async's bracket within 2 s")
            self.ib.waitOnUpdate(timeout=0.005)
        return time.perf_counter() - t0

    def start_ticks(self) -> None:
        self.ticker = self.ib.reqMktData(self.contract, "", False, False)

    def tick_count(self) -> int:
        return self.ticks

    def stop_ticks(self) -> None:
        self.ib.cancelMktData(self.ticker.contract)

    def idle(self, seconds: float) -> None:
        self.ib.sleep(seconds)


# ---------------------------------------------------------------------------------- bare socket


def _frame(*fields: Any) -> bytes:
    payload = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack("!I", len(payload)) + payload


class SocketClient(Client):
    """Just enough protocol to subscribe and count frames: what the simulator can push."""

    def __init__(self, port: int, client_id: int) -> None:
        self.port, self.client_id = port, client_id
        self.sock: Optional[socket.socket] = None
        self.frames = 0
        self.time_frames = 0
        self.cond = threading.Condition()
        self.req_id = 1000

    def connect(self) -> float:
        t0 = time.perf_counter()
        sock = socket.create_connection((HOST, self.port), timeout=WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"API\0" + struct.pack("!I", 9) + b"v100..157")
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack_from("!I", buf)[0]:
            buf += sock.recv(4096)
        sock.sendall(_frame(71, 2, self.client_id, ""))
        sock.settimeout(None)
        self.sock = sock
        rest = buf[4 + struct.unpack_from("!I", buf)[0]:]
        self.thread = threading.Thread(target=self._reader, args=(rest,), daemon=True)
        self.ready = threading.Event()
        self.thread.start()
        if not self.ready.wait(WAIT):
            raise RuntimeError("socket: no nextValidId")
        return time.perf_counter() - t0

    def _reader(self, buf: bytes) -> None:
        sock = self.sock
        assert sock is not None
        data = bytearray(buf)
        unpack = struct.Struct("!I").unpack_from
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            pos, end, n = 0, len(data), 0
            while end - pos >= 4:
                size = unpack(data, pos)[0]
                if end - pos - 4 < size:
                    break
                head = data[pos + 4:pos + 7]
                if head.startswith(b"49\0"):
                    with self.cond:
                        self.time_frames += 1
                        self.cond.notify_all()
                elif head.startswith(b"9\0"):
                    self.ready.set()
                n += 1
                pos += 4 + size
            self.frames += n
            del data[:pos]

    def disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv; close alone would not
            except OSError:
                pass
            self.sock.close()
            self.thread.join(WAIT)
            self.sock = None

    def round_trip(self) -> float:
        assert self.sock is not None
        with self.cond:
            seen = self.time_frames
            t0 = time.perf_counter()
            self.sock.sendall(_frame(49, 1))
            if not self.cond.wait_for(lambda: self.time_frames > seen, WAIT):
                raise RuntimeError("socket: no currentTime")
        return time.perf_counter() - t0

    def start_ticks(self) -> None:
        assert self.sock is not None
        self.req_id += 1
        self.tick_req = self.req_id
        self.sock.sendall(_frame(1, 11, self.tick_req, 0, SYMBOL, "STK", "", "0.0", "", "", "SMART", "", "USD", "", "", 0, "", 0, 0, ""))

    def tick_count(self) -> int:
        return self.frames

    def stop_ticks(self) -> None:
        assert self.sock is not None
        self.sock.sendall(_frame(2, 2, self.tick_req))


KINDS: Dict[str, Callable[[int, int], Client]] = {
    "raw": RawClient,
    "bridge": BridgeClient,
    "ours": OursClient,
    "ib_async": IbAsyncClient,
    "socket": SocketClient,
}


# ---------------------------------------------------------------------------------- commands


def _samples(client: Client, fn: Callable[[], float], n: int, spacing: float) -> List[float]:
    out = []
    for _ in range(n):
        out.append(fn())
        client.idle(spacing)
    return out


def _drain(client: Client, quiet: float, limit: float = 30.0) -> None:
    """Read until no tick arrived for ``quiet`` seconds: a client slower than the stream has a
    backlog (in the simulator and the kernel) that must not leak into the next figure."""
    deadline = time.monotonic() + limit
    client.discard_backlog()
    last = client.received_count()
    while time.monotonic() < deadline:
        client.idle(quiet)
        client.discard_backlog()
        now = client.received_count()
        if now == last:
            return
        last = now


def handle(client: Client, cmd: Dict[str, Any]) -> Dict[str, Any]:
    name = cmd["cmd"]
    if name == "disconnect":
        # The parent waits until the simulator has seen the close before "connect": a client
        # id the gateway still counts as live would be refused with 326.
        client.disconnect()
        return {"ok": True}
    if name in ("connect", "connect_full"):
        sample = client.connect() if name == "connect" else client.connect_full()
        client.idle(0.05)
        return {"samples": [sample]}
    if name == "revive":
        # A client that lost its session in an earlier figure reconnects (the parent has
        # waited for the simulator to see the close).
        if client.healthy():
            return {"ok": True}
        try:
            client.disconnect()
        except Exception:
            pass
        client.connect()
        return {"ok": True, "revived": True}
    if name == "rt":
        return {"samples": _samples(client, client.round_trip, cmd["n"], cmd["spacing"])}
    if name == "price":
        return {"samples": _samples(client, client.price, cmd["n"], cmd["spacing"])}
    if name == "bracket":
        return {"samples": _samples(client, client.bracket, cmd["n"], cmd["spacing"])}
    if name == "ticks":
        client.start_ticks()
        try:
            client.idle(cmd["warmup"])
            c0, r0, cpu0, t0 = client.tick_count(), client.received_count(), cpu_seconds(), time.perf_counter()
            client.idle(cmd["seconds"])
            c1, r1, cpu1, t1 = client.tick_count(), client.received_count(), cpu_seconds(), time.perf_counter()
        finally:
            client.stop_ticks()
        if cmd.get("drain", True):
            _drain(client, cmd.get("quiet", 0.3))
        out = {"ticks": c1 - c0, "received": r1 - r0, "wall": t1 - t0, "cpu": cpu1 - cpu0}
        if not client.healthy():
            out["died"] = client.death()
        return out
    raise ValueError(f"unknown command {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    def reply(obj: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        client = KINDS[args.kind](args.port, args.client_id)
        client.connect() if args.kind != "ib_async" else None
    except Exception as exc:
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    reply({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            reply(handle(client, cmd))
        except Unavailable as exc:
            reply({"unavailable": str(exc)})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    try:
        client.disconnect()
    except Exception:
        pass
    reply({"bye": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
