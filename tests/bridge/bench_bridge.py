"""Quick throughput / latency check of the bridge against the bare official client. Not a test
(pytest does not collect it); the benchmark suite proper lives elsewhere.

    .venv/bin/python tests/bridge/bench_bridge.py blast 200000   # stdlib server blasting ticks
    .venv/bin/python tests/bridge/bench_bridge.py sim 1000000    # the simulator, extra tick rate

Prints ticks/s, the reqCurrentTime round trip p50 and (blast) CPU seconds per 100k ticks.
"""

from __future__ import annotations

import resource
import socket
import statistics
import struct
import sys
import threading
import time
from typing import Any, Callable, List, Tuple

from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.wrapper import EWrapper

from ib_resilience.bridge import Bridge
from ib_resilience.sim import FakeGateway

MARKER = 999  # CURRENT_TIME value that ends a blast


def frame(*fields: object) -> bytes:
    body = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack("!I", len(body)) + body


class Sink:
    def __init__(self) -> None:
        self.ticks = 0
        self.done = threading.Event()
        self.reply = threading.Event()

    def tickPrice(self, *args: Any) -> None:  # noqa: N802
        self.ticks += 1

    def currentTime(self, t: int) -> None:  # noqa: N802
        (self.done if t == MARKER else self.reply).set()


class BareApp(EWrapper, EClient):
    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, self)
        self.sink = Sink()
        self.ready = threading.Event()

    def nextValidId(self, orderId: int) -> None:  # noqa: N802, N803
        self.ready.set()

    def tickPrice(self, *args: Any) -> None:  # noqa: N802
        self.sink.ticks += 1

    def tickSize(self, *args: Any) -> None:  # noqa: N802
        pass

    def currentTime(self, t: int) -> None:  # noqa: N802
        self.sink.currentTime(t)

    def error(self, *args: Any) -> None:
        pass


def connect(kind: str, port: int) -> Tuple[Any, Sink, Callable[[], None]]:
    if kind == "ours":
        sink = Sink()
        bridge = Bridge(sink)
        bridge.open("127.0.0.1", port, 1, 5.0)
        return bridge, sink, bridge.close
    app = BareApp()
    app.connect("127.0.0.1", port, 2)
    threading.Thread(target=app.run, daemon=True).start()
    app.ready.wait(5)
    return app, app.sink, app.disconnect


def round_trip_p50(client: Any, sink: Sink, n: int) -> float:
    lat: List[float] = []
    for _ in range(n):
        sink.reply.clear()
        t0 = time.perf_counter()
        client.reqCurrentTime()
        sink.reply.wait(5)
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat) * 1e6


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- blast mode


def blast_server(listener: socket.socket, payload: bytes) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""

    def need(n: int) -> None:
        nonlocal buf
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk

    def read_frame() -> bytes:
        nonlocal buf
        need(4)
        (size,) = struct.unpack("!I", buf[:4])
        need(4 + size)
        out, buf = buf[4 : 4 + size], buf[4 + size :]
        return out

    try:
        need(4)
        buf = buf[4:]  # b"API\0"
        read_frame()  # version range
        conn.sendall(frame(157, "20261130 07:45:00 GMT"))
        read_frame()  # START_API
        conn.sendall(frame(15, 1, "DU1") + frame(9, 1, 1))
        while True:
            f = read_frame()
            if f.startswith(b"49\0"):
                conn.sendall(frame(49, 1, 1_764_489_900))
            elif f.startswith(b"8\0"):  # reqIds starts the blast
                conn.sendall(payload)
    except (EOFError, OSError):
        pass


def blast(n: int) -> None:
    payload = b"".join(
        frame(1, 6, 1, (1, 2, 4)[i % 3], f"{100 + (i % 50) * 0.01:.2f}", 100 + i % 7, 0) for i in range(n)
    ) + frame(49, 1, MARKER)
    for kind in ("ours", "bare"):
        listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=blast_server, args=(listener, payload), daemon=True).start()
        client, sink, close = connect(kind, listener.getsockname()[1])
        p50 = round_trip_p50(client, sink, 2000)
        c0, t0 = cpu(), time.perf_counter()
        client.reqIds(1)
        sink.done.wait(300)
        dt, used = time.perf_counter() - t0, cpu() - c0
        close()
        assert sink.ticks == n, sink.ticks
        print(f"{kind:5}: {n / dt:>9.0f} ticks/s  reqCurrentTime p50 {p50:6.1f} us  cpu {used / n * 1e5:.2f} s/100k ticks")


# ---------------------------------------------------------------- simulator mode


def stock(symbol: str) -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def simulate(rate: int, seconds: float = 3.0) -> None:
    for kind in ("ours", "bare"):
        with FakeGateway(port=0, seed=7, tick_interval=0.05, pacing_limit=None) as gw:
            gw.set_tick_rate(rate)
            client, sink, close = connect(kind, gw.port)
            p50 = round_trip_p50(client, sink, 500)
            client.reqMktData(1, stock("AAPL"), "", False, False, [])
            time.sleep(1.0)  # warm up
            n0, t0 = sink.ticks, time.perf_counter()
            time.sleep(seconds)
            n1, dt = sink.ticks, time.perf_counter() - t0
            close()
        print(f"{kind:5}: {(n1 - n0) / dt:>9.0f} ticks/s (simulator, tick rate {rate})  idle reqCurrentTime p50 {p50:.0f} us")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "blast"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if mode == "blast":
        blast(count or 200_000)
    else:
        simulate(count or 1_000_000)
