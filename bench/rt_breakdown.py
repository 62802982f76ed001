"""Where one ``get_current_time`` round trip spends its time (the figures quoted in
``docs/performance.md``, "Where ours misses a target").

    python bench/rt_breakdown.py [--n 300] [--spacing 0.025]

The simulator runs in a child process (so it never shares our GIL); this process connects an
``IBClient`` and issues requests ``--spacing`` seconds apart, as the benchmark does. Timestamps
are taken by wrapping a few of the client's internals on this instance only: a probe, not a
test, and not part of ``make bench``. Prints the p50 of every stage.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"simulator did not listen on {port}")


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="requests")
    parser.add_argument("--spacing", type=float, default=0.025, help="idle seconds between requests")
    args = parser.parse_args(argv)

    from ib_resilience.client import IBClient

    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "ib_resilience.sim", "--port", str(port), "--log-level", "ERROR"],
                           cwd=ROOT)
    try:
        _wait_listening(port)
        client = IBClient(config={"port": port, "client_id": 1})
        if not client.connect(timeout=10):
            raise RuntimeError("could not connect to the simulator")
        rows = _measure(client, args.n, args.spacing)
        client.disconnect()
    finally:
        sim.terminate()
        sim.wait(10)
    print(f"p50 over {args.n} requests, {args.spacing * 1000:g} ms apart:")
    for stage in rows[0]:
        print(f"  {stage:38s} {statistics.median(r[stage] for r in rows) * 1e6:7.1f} us")
    return 0


def _measure(client: Any, n: int, spacing: float) -> List[Dict[str, float]]:
    pc = time.perf_counter
    st: Dict[str, float] = {}
    manager = client._manager
    bridge = manager.bridge
    transport = bridge.transport

    def stamp(before: str, after: str, fn: Any) -> Any:
        def wrapped(*a: Any) -> Any:
            st[before] = pc()
            try:
                return fn(*a)
            finally:
                st[after] = pc()
        return wrapped

    manager.register = stamp("reg0", "reg1", manager.register)
    bridge.sendMsg = stamp("enc", "sent", bridge.sendMsg)
    transport._send_now = stamp("sock0", "sock1", transport._send_now)
    bridge._sink_fns["currentTime"] = stamp("cb", "cb1", bridge._sink_fns["currentTime"])
    transport._run_after_frames = stamp("wake0", "wake1", transport._run_after_frames)
    rows = []
    for _ in range(n):
        t0 = pc()
        client.get_current_time(timeout=5)
        t9 = pc()
        rows.append({
            "connected check, call prologue": st["reg0"] - t0,
            "pending registration": st["reg1"] - st["reg0"],
            "official EClient encoding": st["enc"] - st["reg1"],
            "framing and pacer": st["sock0"] - st["enc"],
            "send system call": st["sock1"] - st["sock0"],
            "network, simulator, reader wake, decode": st["cb"] - st["sock1"],
            "routing the reply": st["wake0"] - st["cb"],
            "waking the caller (waker's side)": st["wake1"] - st["wake0"],
            "waking the caller (until it returns)": t9 - st["wake1"],
            "total": t9 - t0,
        })
        time.sleep(spacing)
    return rows


if __name__ == "__main__":
    sys.exit(main())
