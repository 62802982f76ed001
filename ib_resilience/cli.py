"""The ``ib-resilience`` command line: ``demo``, ``sim``, ``status`` and ``check-config``.

Run ``ib-resilience --help`` (or ``python -m ib_resilience --help``) for the commands and
``ib-resilience COMMAND --help`` for each one's options.

Exit codes: 0 success / healthy; 1 a check failed (unhealthy, unreachable, demo did not
recover); 2 bad usage or an invalid config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .client import IBClient
    from .sim import FakeGateway
    from .state import ConnectionState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

STATUS_CLIENT_ID = 999  # a health check must not take the bot's client id (error 326)

KNOWN_PORTS = {
    7497: "TWS paper",
    7496: "TWS live",
    4002: "IB Gateway paper",
    4001: "IB Gateway live",
}


# ---------------------------------------------------------------------------------------------
# check-config


def cmd_check_config(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Validate a YAML config file and print the effective settings (defaults filled in)."""
    out, err = out or sys.stdout, err or sys.stderr
    import yaml

    from .config import load_config
    from .errors import ConfigError

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    settings = cfg.to_dict()
    port_kind = KNOWN_PORTS.get(cfg.port, "custom port")
    mode = "read-only" if cfg.read_only else "orders enabled"
    if args.format == "json":
        print(json.dumps(settings, indent=2), file=out)
    else:
        print(f"# {args.file} is valid; effective settings (defaults filled in):", file=out)
        print(yaml.safe_dump(settings, sort_keys=False, default_flow_style=False).rstrip(), file=out)
    print(
        f"OK: {args.file}: {cfg.host}:{cfg.port} ({port_kind}), client id {cfg.client_id}, {mode}",
        file=err,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# status


def cmd_status(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Connect once, print ``get_connection_status()`` as JSON; exit 1 unless healthy."""
    out, err = out or sys.stdout, err or sys.stderr
    from .client import IBClient
    from .config import load_config
    from .errors import ConfigError, IBResilienceError

    if not args.timeout > 0:
        print("error: --timeout must be positive", file=err)
        return EXIT_USAGE
    try:
        # One attempt, bounded by --timeout: a health check reports, it does not retry.
        cfg = load_config(
            args.config,
            connect_timeout=args.timeout,
            request_timeout=args.timeout,
            max_reconnect_attempts=1,
            **{k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None},
            client_id=args.client_id,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    client = IBClient(config=cfg)
    probe: Dict[str, Any] = {"probe_ok": False, "probe_error": None}
    try:
        connected = client.connect(timeout=args.timeout + 1.0)
        if connected:
            try:
                probe["gateway_time"] = client.get_current_time(timeout=args.timeout)
                probe["probe_ok"] = True
            except (IBResilienceError, ConnectionError, TimeoutError) as exc:
                probe["probe_error"] = str(exc)
        status = client.get_connection_status()
    finally:
        client.disconnect()
    status.update(probe)
    healthy = bool(status.get("is_healthy")) and probe["probe_ok"]
    status["healthy"] = healthy
    print(json.dumps(status, indent=2, sort_keys=True, default=str), file=out)
    if not healthy:
        reason = status.get("last_error") or probe["probe_error"] or f"state {status.get('state')}"
        print(f"unhealthy: {cfg.host}:{cfg.port} client id {cfg.client_id}: {reason}", file=err)
    return EXIT_OK if healthy else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# sim


def cmd_sim(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Run the simulator's own entry point (``python -m ib_resilience.sim``) with these options;
    ``--faults FILE`` is accepted for its ``--fault-plan FILE``."""
    from .sim.__main__ import main as sim_main

    argv = []
    for arg in args.sim_args:
        if arg == "--faults":
            arg = "--fault-plan"
        elif arg.startswith("--faults="):
            arg = "--fault-plan=" + arg[len("--faults=") :]
        argv.append(arg)
    return int(sim_main(argv))


# ---------------------------------------------------------------------------------------------
# demo


#: Client settings of the demo: faults are detected and healed within seconds. They are short on
#: purpose; production defaults are a 30 s heartbeat and a 1-300 s backoff (docs/configuration.md).
DEMO_SETTINGS: Dict[str, Any] = {
    "client_id": 1,
    "connect_timeout": 2.0,
    "max_reconnect_attempts": 0,
    "reconnect_delay_base": 0.1,
    "reconnect_delay_max": 1.0,
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 1.0,
    "request_timeout": 5.0,
    "stable_after": 2.0,
    "client_id_in_use_delay": 0.2,
}


@dataclass
class PhaseResult:
    """How one injected fault went."""

    name: str
    ok: bool = False
    detected_after: Optional[float] = None
    recovered_after: Optional[float] = None
    note: str = ""


class Demo:
    """The ``demo`` command: one simulator, one client, one bracket order, one stream, four faults."""

    def __init__(
        self,
        out: Optional[TextIO] = None,
        symbol: str = "AAPL",
        seed: int = 7,
        fault_timeout: float = 20.0,
        blackhole_seconds: float = 3.0,
        outage_seconds: float = 2.0,
        restart_downtime: float = 2.0,
    ) -> None:
        self.out = out or sys.stdout
        self.symbol = symbol.upper()
        self.seed = seed
        self.fault_timeout = fault_timeout
        self.blackhole_seconds = blackhole_seconds
        self.outage_seconds = outage_seconds
        self.restart_downtime = restart_downtime
        self.results: List[PhaseResult] = []
        self._print_lock = threading.Lock()
        self._cond = threading.Condition()
        self._reconnecting = 0  # transitions into RECONNECTING seen so far
        self._t0 = time.monotonic()
        self._order_ids: Tuple[int, ...] = ()
        self._stop = threading.Event()
        self._ticks = 0  # market data ticks received on the demo's stream
        self._subscription: Any = None

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _status_line(self, client: IBClient, gw: FakeGateway) -> str:
        st = client.get_connection_status()
        breakers = st.get("circuit_breakers") or {}
        states = [_breaker_state_name(v) for v in breakers.values()]
        opened = [name for name, v in breakers.items() if _breaker_state_name(v) != "closed"]
        breaker_text = f"{states.count('closed')}/{len(states)} closed" if not opened else "OPEN: " + ",".join(opened)
        if not breakers:
            breaker_text = "n/a"
        mine = [o for o in gw.orders if o.order_id in self._order_ids]
        working = sum(1 for o in mine if o.is_open)
        return (
            f"  t+{self._elapsed():5.1f}s  {st['state']:<12} {'healthy' if st.get('is_healthy') else 'UNHEALTHY':<9}"
            f" upstream {'ok' if st.get('upstream_ok', True) else 'DOWN':<4}"
            f" latency {st.get('average_latency_ms', 0.0):6.1f} ms  quality {st.get('connection_quality', '?'):<9}"
            f" conns {st.get('total_connections', 0)} drops {st.get('total_disconnections', 0)}"
            f"  breakers {breaker_text}  orders {working}/{len(self._order_ids)} working"
            f"  ticks {self._ticks}{' (blind)' if self._subscription is not None and self._subscription.blind else ''}"
        )

    def _ticker(self, client: IBClient, gw: FakeGateway) -> None:
        while not self._stop.wait(1.0):
            try:
                self.say(self._status_line(client, gw))
            except Exception as exc:  # the status line must never end the demo
                self.say(f"  (status unavailable: {exc})")

    def _on_transition(self, old: ConnectionState, new: ConnectionState, reason: str) -> None:
        with self._cond:
            if new.name == "RECONNECTING":
                self._reconnecting += 1
            self._cond.notify_all()
        if not self._stop.is_set():
            self.say(f"  t+{self._elapsed():5.1f}s  state {old.name} -> {new.name}: {reason}")

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait for ``predicate``, re-checked on every state transition and every 50 ms."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    # ------------------------------------------------------------------ the script

    def run(self) -> int:
        from .client import IBClient
        from .sim import FakeGateway

        self._t0 = time.monotonic()
        gw = FakeGateway(host="127.0.0.1", port=0, seed=self.seed)
        gw.start()
        client = IBClient(config=dict(DEMO_SETTINGS, host="127.0.0.1", port=gw.port))
        client.add_state_listener(self._on_transition)
        ticker = threading.Thread(target=self._ticker, args=(client, gw), name="demo-status", daemon=True)
        try:
            self.say(f"ib-resilience demo: simulated IB Gateway on 127.0.0.1:{gw.port} (no IB account needed)")
            self.say(
                "  client settings are short on purpose: heartbeat every "
                f"{DEMO_SETTINGS['heartbeat_interval']} s (dead after {DEMO_SETTINGS['heartbeat_timeout']} s), "
                f"reconnect backoff {DEMO_SETTINGS['reconnect_delay_base']}-{DEMO_SETTINGS['reconnect_delay_max']} s"
            )
            self.say("  (production defaults: heartbeat 30 s, timeout 10 s, backoff 1-300 s; see docs/configuration.md)")
            ticker.start()
            ok = self._script(client, gw)
            self._stop.set()
            if ticker.is_alive():
                ticker.join(5.0)
            self._report(client.get_connection_status(), ok)
        finally:
            self._stop.set()
            client.disconnect()
            gw.close()
        return EXIT_OK if ok else EXIT_FAILED

    def _script(self, client: IBClient, gw: FakeGateway) -> bool:
        self.say("\n== connect")
        if not client.connect(timeout=self.fault_timeout):
            self.say(f"  could not connect: {client.get_connection_status().get('last_error')}")
            return False
        self.say(f"  connected as client id {client.config.client_id}")
        if not self._place_bracket(client) or not self._subscribe(client):
            return False
        phases: List[Tuple[str, str, Callable[[], None], bool]] = [
            ("drop", "the gateway closes every connection (FIN)", gw.drop_connections, True),
            (
                "blackhole",
                f"the gateway goes silent for {self.blackhole_seconds:g} s with sockets open",
                lambda: gw.blackhole(self.blackhole_seconds),
                True,
            ),
            (
                "upstream outage",
                f"the gateway loses IB for {self.outage_seconds:g} s (1100, then 1101: market data lost); socket stays up",
                lambda: gw.upstream_outage(self.outage_seconds, data_lost=True),
                False,
            ),
            (
                "gateway restart",
                f"the gateway restarts: drops everyone, refuses connections for {self.restart_downtime:g} s",
                lambda: gw.restart(self.restart_downtime),
                True,
            ),
        ]
        for name, what, inject, drops in phases:
            self.results.append(self._phase(client, gw, name, what, inject, drops))
        return all(r.ok for r in self.results) and self._finish_orders(client, gw)

    def _place_bracket(self, client: IBClient) -> bool:
        self.say(f"\n== bracket order on {self.symbol}")
        try:
            price = float(client.get_current_price(self.symbol))
            # A BUY limit well below the market stays working through the faults.
            entry = round(price * 0.95, 2)
            result = client.place_bracket_order(
                self.symbol, "BUY", 10, entry, round(price * 1.05, 2), round(price * 0.90, 2)
            )
        except Exception as exc:
            self.say(f"  FAILED: {type(exc).__name__}: {exc}")
            return False
        self._order_ids = tuple(result.order_ids)
        legs = (("parent", result.parent), ("take profit", result.take_profit), ("stop loss", result.stop_loss))
        self.say(f"  {self.symbol} at {price:.2f}: BUY 10 @ {entry:.2f}, take profit {price * 1.05:.2f}, stop {price * 0.90:.2f}")
        for label, leg in legs:
            self.say(f"  {label:<12} order {leg.order_id}: {leg.status}")
        return True

    def _on_tick(self, tick: Any) -> None:
        with self._cond:
            self._ticks += 1
            self._cond.notify_all()

    def _subscribe(self, client: IBClient) -> bool:
        self.say(f"\n== market data stream on {self.symbol}")
        try:
            self._subscription = client.subscribe_market_data(self.symbol, self._on_tick)
        except Exception as exc:
            self.say(f"  FAILED: {type(exc).__name__}: {exc}")
            return False
        if not self._ticking(client):
            self.say("  FAILED: no tick arrived")
            return False
        self.say(f"  streaming: {self._ticks} tick(s) so far")
        return True

    def _ticking(self, client: IBClient) -> bool:
        """True once a tick arrives after this call (the stream is live)."""
        with self._cond:
            seen = self._ticks
        return self._wait(lambda: self._ticks > seen, self.fault_timeout)

    def _phase(self, client: IBClient, gw: FakeGateway, name: str, what: str, inject: Callable[[], None], drops: bool) -> PhaseResult:
        result = PhaseResult(name)
        self.say(f"\n== fault: {name}: {what}")
        before = client.get_connection_status()
        with self._cond:
            seen = self._reconnecting
        started = time.monotonic()
        inject()
        if drops:
            detected = self._wait(lambda: self._reconnecting > seen, self.fault_timeout)
        else:
            detected = self._wait(lambda: not client.get_connection_status().get("upstream_ok", True), self.fault_timeout)
        if not detected:
            result.note = "fault never detected"
            self.say(f"  FAILED: {result.note}")
            return result
        result.detected_after = time.monotonic() - started

        def recovered() -> bool:
            st = client.get_connection_status()
            return bool(client.is_connected() and st.get("is_healthy"))

        if not self._wait(recovered, self.fault_timeout):
            result.note = f"not recovered within {self.fault_timeout:g} s"
            self.say(f"  FAILED: {result.note}")
            return result
        result.recovered_after = time.monotonic() - started
        try:
            client.get_current_time(timeout=DEMO_SETTINGS["request_timeout"])
        except Exception as exc:
            result.note = f"request after recovery failed: {exc}"
            self.say(f"  FAILED: {result.note}")
            return result
        after = client.get_connection_status()
        if not drops and after.get("total_disconnections") != before.get("total_disconnections"):
            result.note = "the socket was dropped although only upstream failed"
            self.say(f"  FAILED: {result.note}")
            return result
        if not self._ticking(client):
            result.note = f"market data did not resume within {self.fault_timeout:g} s"
            self.say(f"  FAILED: {result.note}")
            return result
        problem = self._orders_problem(gw)
        if problem:
            result.note = problem
            self.say(f"  FAILED: {problem}")
            return result
        result.ok = True
        result.note = ("reconnected" if drops else "stayed connected") + "; orders intact; data flowing"
        self.say(
            f"  recovered: detected after {result.detected_after:.2f} s, healthy again after "
            f"{result.recovered_after:.2f} s; {result.note}"
        )
        return result

    def _orders_problem(self, gw: FakeGateway) -> str:
        """Empty if the gateway holds exactly our bracket, each order once, and nothing else."""
        ids = sorted(o.order_id for o in gw.orders)
        if ids != sorted(self._order_ids):
            return f"the gateway's book has orders {ids}, expected exactly {sorted(self._order_ids)}"
        return ""

    def _finish_orders(self, client: IBClient, gw: FakeGateway) -> bool:
        self.say("\n== after all faults: the same client cancels the bracket")
        try:
            result = client.cancel_order(self._order_ids[0])
        except Exception as exc:
            self.say(f"  FAILED: cancel_order: {type(exc).__name__}: {exc}")
            return False
        self.say(f"  parent order {result.order_id}: {result.status}")
        if result.status not in ("Cancelled", "ApiCancelled"):
            return False
        try:  # cancelling the parent cancels its children: nothing of the bracket stays working
            gw.wait_for(lambda: not any(o.is_open for o in gw.orders), timeout=self.fault_timeout)
        except TimeoutError:
            self.say(f"  FAILED: still working at the gateway: {[o.order_id for o in gw.orders if o.is_open]}")
            return False
        self.say(f"  the gateway's book: {', '.join(f'{o.order_id} {o.status}' for o in gw.orders)}")
        return True

    def _report(self, st: Dict[str, Any], ok: bool) -> None:
        rows = [
            ("fault", "detected", "recovered", "result"),
            *(
                (
                    r.name,
                    f"{r.detected_after:.2f} s" if r.detected_after is not None else "-",
                    f"{r.recovered_after:.2f} s" if r.recovered_after is not None else "-",
                    ("ok: " if r.ok else "FAILED: ") + r.note,
                )
                for r in self.results
            ),
        ]
        self.say("\n== summary")
        if self.results:
            self.say(_table(rows))
            self.say("")
        keys = [
            "state",
            "uptime_percentage",
            "connection_quality",
            "average_latency_ms",
            "total_connections",
            "total_disconnections",
            "failed_attempts",
            "errors_by_category",
            "last_error",
        ]
        self.say(_table([("status", "value"), *((k, _fmt(st.get(k))) for k in keys if k in st)]))
        sub = self._subscription
        if sub is not None:
            gaps = [(a, b) for a, b in sub.gaps if b is not None]
            blind = sum(b - a for a, b in gaps)
            self.say(
                f"\n  market data on {self.symbol}: {self._ticks} ticks; blind {len(gaps)} time(s), "
                f"{blind:.1f} s in total (the subscription's gaps)"
            )
        breakers = st.get("circuit_breakers") or {}
        if breakers:
            self.say("")
            self.say(
                _table(
                    [("breaker", "state", "times opened")]
                    + [
                        (name, _breaker_state_name(v), str(v.get("times_opened", "-") if isinstance(v, dict) else "-"))
                        for name, v in sorted(breakers.items())
                    ]
                )
            )
        self.say(
            f"\nresult: {'every fault recovered; orders intact; data flowing' if ok else 'NOT everything recovered'} "
            f"(took {self._elapsed():.1f} s)"
        )


def _breaker_state_name(info: Any) -> str:
    state = info.get("state") if isinstance(info, dict) else info
    return str(getattr(state, "name", state)).lower()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) or "-"
    return "-" if value is None else str(value)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Simulator + client + bracket order, then four faults; exit 0 only if all recovered."""
    out, err = out or sys.stdout, err or sys.stderr
    return Demo(out=out, symbol=args.symbol, seed=args.seed, fault_timeout=args.fault_timeout).run()


# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ib-resilience",
        description="Keeps synchronous Interactive Brokers bots connected and their orders safe.",
        epilog="Exit codes: 0 ok, 1 check failed (unhealthy, unreachable, not recovered), 2 bad usage/config.",
    )
    parser.add_argument(
        "--log-level",
        default="ERROR",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="library log level on stderr (default: ERROR)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="simulator + client + bracket order + stream through four gateway faults (< 1 minute)",
        description=(
            "Start the gateway simulator, connect a client, place a bracket order and stream market "
            "data, then inject a connection drop, a blackhole, an upstream (gateway to IB) outage and "
            "a gateway restart, printing one status line per second. Ends with a status table; exit 0 "
            "only when every fault was recovered from, the orders survived and market data flows "
            "again. Uses short heartbeat and backoff settings so that it finishes in well under a minute."
        ),
    )
    demo.add_argument("--symbol", default="AAPL", help="stock to trade in the simulator (default: AAPL)")
    demo.add_argument("--seed", type=int, default=7, help="simulator seed (default: 7)")
    demo.add_argument(
        "--fault-timeout",
        type=float,
        default=20.0,
        help="seconds each fault may take to be detected and recovered from (default: 20)",
    )
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser(
        "sim",
        help="run the gateway simulator on a port (e.g. 7497) for your own bot; --faults plan.yaml",
        description="Run the protocol-faithful IB Gateway simulator until Ctrl-C.",
        add_help=False,
    )
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="simulator options; see `ib-resilience sim --help`")
    sim.set_defaults(func=cmd_sim)

    status = sub.add_parser(
        "status",
        help="connect once and print the connection status as JSON (container health check)",
        description=(
            "Connect to TWS / IB Gateway, make one request, print get_connection_status() as JSON "
            "and disconnect. Exit 0 when healthy, 1 when unhealthy or unreachable, 2 on bad usage."
        ),
    )
    status.add_argument("--host", default=None, help="gateway host (default: from --config, else 127.0.0.1)")
    status.add_argument("--port", type=int, default=None, help="API port (default: from --config, else 7497)")
    status.add_argument(
        "--client-id",
        type=int,
        default=STATUS_CLIENT_ID,
        help=f"client id for the check; never your bot's own (default: {STATUS_CLIENT_ID})",
    )
    status.add_argument("--timeout", type=float, default=10.0, help="seconds for connect and the probe (default: 10)")
    status.add_argument("--config", default=None, metavar="FILE", help="YAML config to start from")
    status.set_defaults(func=cmd_status)

    check = sub.add_parser(
        "check-config",
        help="validate a YAML config file and print the effective settings",
        description=(
            "Validate FILE and print every setting with defaults filled in. On an invalid file, "
            "print the error (it names the key and the file) and exit 2."
        ),
    )
    check.add_argument("file", metavar="FILE", help="YAML config file (see config/default.yaml)")
    check.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format (default: yaml)")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``ib-resilience`` and ``python -m ib_resilience``."""
    parser = build_parser()
    # `sim` hands every option to the simulator's own parser, `--help` included.
    args, extra = parser.parse_known_args(argv)
    if args.command == "sim":
        args.sim_args = [*extra, *args.sim_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command != "sim":  # the simulator configures its own logging (its --log-level)
        logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
