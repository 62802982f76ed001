"""``python -m ib_resilience.sim``: run the simulated gateway standalone.

Point any IB client at it (``--port 7497`` by default, loopback unless ``--host`` says
otherwise). ``--fault-plan FILE`` scripts outages; ``--measure-throughput`` prints how many
ticks per second one raw-socket client receives, then exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from typing import List, Optional

from .faults import FaultPlan, FaultPlanError, FaultPlanRunner
from .gateway import DEFAULT_ACCOUNTS, FakeGateway
from .protocol import In
from .wire import API_PREFIX, FrameParser, encode_frame, frame_raw


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ib_resilience.sim", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=7497, help="TCP port (0: any free port)")
    p.add_argument("--seed", type=int, default=7, help="seed of the market walk and ids")
    p.add_argument("--accounts", default=",".join(DEFAULT_ACCOUNTS), help="comma-separated account ids")
    p.add_argument("--symbols", default=None, help="comma-separated stock symbols (default: a dozen US names)")
    p.add_argument("--tick-interval", type=float, default=0.25, help="seconds between quote updates")
    p.add_argument("--pacing-limit", type=int, default=50, help="messages/s per client before error 100 (0: off)")
    p.add_argument("--pacing-disconnect-after", type=int, default=3,
                   help="violations before the client is dropped (0: never)")
    p.add_argument("--fault-plan", default=None, help="YAML/JSON file: at T do fault F")
    p.add_argument("--measure-throughput", type=float, metavar="SECONDS", default=None,
                   help="stream to one raw client for SECONDS, print ticks/s and exit")
    p.add_argument("--log-level", default="INFO")
    return p


def measure_throughput(seconds: float, seed: int = 7) -> float:
    """Ticks per second one raw-socket client receives from a gateway in burst mode."""
    with FakeGateway(port=0, seed=seed, pacing_limit=None) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5.0)
        try:
            sock.sendall(API_PREFIX + frame_raw(b"v100..157"))
            parser = FrameParser()
            while not parser.feed(sock.recv(4096)):
                pass
            sock.sendall(encode_frame([In.START_API, 2, 1, ""]))
            sock.sendall(encode_frame([In.REQ_MKT_DATA, 11, 1, 0, "SPY", "STK", "", 0.0, "", "", "SMART", "",
                                       "USD", "", "", 0, "", 0, 0, ""]))
            gw.set_tick_rate(1_000_000)
            frames = 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                frames += len(parser.feed(sock.recv(1 << 20)))
            elapsed = time.monotonic() - start
            gw.set_tick_rate(0)
            return frames / elapsed
        finally:
            sock.close()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.measure_throughput is not None:
        rate = measure_throughput(args.measure_throughput, args.seed)
        print(f"{rate:,.0f} ticks/s to one client over {args.measure_throughput:g} s")
        return 0
    plan = None
    if args.fault_plan:
        try:
            plan = FaultPlan.load(args.fault_plan)
        except (OSError, FaultPlanError) as exc:
            print(f"fault plan {args.fault_plan}: {exc}", file=sys.stderr)
            return 2
    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    gw = FakeGateway(
        host=args.host,
        port=args.port,
        accounts=[a.strip() for a in args.accounts.split(",") if a.strip()],
        seed=args.seed,
        symbols=symbols,
        tick_interval=args.tick_interval,
        pacing_limit=args.pacing_limit or None,
        pacing_disconnect_after=args.pacing_disconnect_after or None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with gw:
        print(f"simulated IB Gateway on {args.host}:{gw.port} (server version 157); Ctrl-C stops", flush=True)
        runner = FaultPlanRunner(gw, plan).start() if plan is not None else None
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if runner is not None:
                runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
