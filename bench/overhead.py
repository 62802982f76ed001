"""Hot-path figures: every client kind against one simulator, alternating round by round.

The simulator runs in this process; each client runs in its own worker process. Rounds go
A B C D, then B C D A, ... so that no kind always runs first or last (drift, warm caches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from common import Summary, Worker, WorkerError

from ib_resilience.sim import FakeGateway


@dataclass
class Figure:
    """Samples per client kind for one figure (or why a kind could not produce it)."""

    name: str
    samples: Dict[str, List[float]] = field(default_factory=dict)
    unavailable: Dict[str, str] = field(default_factory=dict)
    extra: Dict[str, Dict[str, float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def summary(self, kind: str) -> Optional[Summary]:
        s = self.samples.get(kind)
        return Summary.of(s) if s else None


@dataclass(frozen=True)
class Plan:
    rounds: int
    rt_per_round: int
    price_per_round: int
    connects_per_round: int
    tick_seconds: float
    tick_rounds: int
    fixed_rate: int
    bracket_per_round: int


FULL = Plan(rounds=4, rt_per_round=50, price_per_round=12, connects_per_round=2, tick_seconds=2.0,
            tick_rounds=2, fixed_rate=20_000, bracket_per_round=4)
QUICK = Plan(rounds=2, rt_per_round=25, price_per_round=10, connects_per_round=2, tick_seconds=1.5,
             tick_rounds=1, fixed_rate=20_000, bracket_per_round=2)

# Beyond every client (the simulator itself tops out around 400-600k/s here; the bare socket
# row shows it). Much higher only makes the ticker emit huge catch-up bursts after a stall.
SATURATING_RATE = 1_000_000
# 40 requests/s keeps every client below the gateway's 50 msg/s limit and our own pacer
# (45/s, burst 4) out of the way: the figure is the latency of one request, not pacing.
RT_SPACING = 0.025
PRICE_SPACING = 0.1


def _rotations(workers: List[Worker], rounds: int) -> List[List[Worker]]:
    n = len(workers)
    return [[workers[(r + i) % n] for i in range(n)] for r in range(rounds)]


def _record(fig: Figure, w: Worker, reply: Dict[str, object]) -> None:
    if "samples" in reply:
        fig.samples.setdefault(w.kind, []).extend(reply["samples"])  # type: ignore[arg-type]
    elif "unavailable" in reply:
        fig.unavailable[w.kind] = str(reply["unavailable"])
    else:
        fig.unavailable[w.kind] = f"failed: {reply.get('error', reply)}"


def sampled(gw: FakeGateway, fig_name: str, workers: List[Worker], rounds: int, cmd: str, **args: object) -> Figure:
    fig = Figure(fig_name)
    for order in _rotations(workers, rounds):
        for w in order:
            if w.kind in fig.unavailable:
                continue
            _revive(gw, w)
            _record(fig, w, w.call(cmd, **args))
    return fig


def _wait_closed(gw: FakeGateway, client_id: int) -> None:
    """Until the simulator has seen the client's close (else its id would be refused with 326)."""
    gw.wait_for(lambda: all(c.client_id != client_id for c in gw.connections), timeout=10.0)


def _revive(gw: FakeGateway, w: Worker) -> None:
    reply = w.call("revive")
    if reply.get("revived") or "error" in reply:
        if "error" in reply:  # the simulator still held the old session: wait, then try again
            _wait_closed(gw, w.client_id)
            w.call("revive")


def connect_figure(gw: FakeGateway, workers: List[Worker], plan: Plan, cmd: str = "connect",
                   name: str = "connect to ready") -> Figure:
    fig = Figure(name)
    for order in _rotations(workers, plan.rounds):
        for w in order:
            if w.kind in fig.unavailable:
                continue
            for _ in range(plan.connects_per_round):
                w.call("disconnect")
                _wait_closed(gw, w.client_id)
                # Every connect starts rested: our pacer's burst (4) has refilled, as it has for
                # a user's first connect; back-to-back reconnects would measure the pacer.
                time.sleep(0.25)
                reply = w.call(cmd)
                _record(fig, w, reply)
                if "samples" not in reply:
                    break
    return fig


def _respawn(gw: FakeGateway, workers: List[Worker], w: Worker) -> Worker:
    """Replace a worker with a fresh process (same kind and client id), in ``workers`` too."""
    w.kill()
    _wait_closed(gw, w.client_id)
    fresh = Worker(w.kind, w.port, w.client_id)
    workers[workers.index(w)] = fresh
    return fresh


def ticks_figure(gw: FakeGateway, workers: List[Worker], plan: Plan, rate: int, name: str,
                 log: Callable[[str], None]) -> Figure:
    """Ticks/s each client consumes with the simulator producing ``rate`` ticks/s, and the
    client process's CPU seconds per 100,000 ticks."""
    fig = Figure(name)
    gw.set_tick_interval(0.25)
    gw.set_tick_rate(rate)
    try:
        for r in range(plan.tick_rounds):
            # Rebuilt every round: a worker may have been replaced by a fresh process.
            for w in [workers[(r + i) % len(workers)] for i in range(len(workers))]:
                if w.kind in fig.unavailable:
                    continue
                _revive(gw, w)
                # The official client cannot work off a saturating stream's backlog in any
                # useful time (see the doc): measure it fresh each round and replace it after.
                fresh = w.kind == "raw" and rate == SATURATING_RATE
                t0 = time.monotonic()
                reply = w.call("ticks", seconds=plan.tick_seconds, warmup=0.5, quiet=0.3, drain=not fresh)
                if fresh:
                    w = _respawn(gw, workers, w)
                if "ticks" in reply:
                    log(f"  {w.kind}: {reply['ticks'] / reply['wall']:,.0f} ticks/s ({time.monotonic() - t0:.1f} s)")
                if "ticks" not in reply:
                    _record(fig, w, reply)
                    continue
                if "died" in reply:
                    fig.notes.append(f"{w.kind}: lost its connection during a round ({reply['died']}); round not counted")
                    continue
                rate_seen = reply["ticks"] / reply["wall"]
                fig.samples.setdefault(w.kind, []).append(rate_seen)
                ex = fig.extra.setdefault(w.kind, {"ticks": 0.0, "received": 0.0, "cpu": 0.0, "wall": 0.0})
                ex["ticks"] += reply["ticks"]
                ex["received"] += reply.get("received", reply["ticks"])
                ex["cpu"] += reply["cpu"]
                ex["wall"] += reply["wall"]
    finally:
        gw.set_tick_rate(0)
    return fig


def cpu_per_100k(fig: Figure, kind: str) -> Optional[float]:
    """CPU seconds per 100,000 ticks decoded from the wire (the same work for every kind)."""
    ex = fig.extra.get(kind)
    if not ex or not ex["received"]:
        return None
    return ex["cpu"] / ex["received"] * 100_000


def received_rate(fig: Figure, kind: str) -> Optional[float]:
    ex = fig.extra.get(kind)
    if not ex or not ex["wall"]:
        return None
    return ex["received"] / ex["wall"]


def start_workers(port: int, kinds: List[str], log: Callable[[str], None]) -> List[Worker]:
    workers = []
    for i, kind in enumerate(kinds):
        try:
            workers.append(Worker(kind, port, client_id=100 + i))
        except WorkerError as exc:
            log(f"  {kind}: cannot start: {exc}")
    return workers


def run_overhead(plan: Plan, log: Callable[[str], None]) -> Dict[str, Figure]:
    figures: Dict[str, Figure] = {}
    with FakeGateway(port=0, seed=7) as gw:
        workers = start_workers(gw.port, ["raw", "bridge", "ours", "ib_async", "socket"], log)
        started = {w.kind for w in workers}
        try:
            t0 = time.monotonic()
            log("connect to ready ...")
            figures["connect"] = connect_figure(gw, workers, plan)
            figures["connect_full"] = connect_figure(gw, [w for w in workers if w.kind == "ib_async"], plan,
                                                     "connect_full", "ib_async IB.connect with its startup sync")
            log("request round trip (reqCurrentTime) ...")
            figures["rt"] = sampled(gw, "round trip: reqCurrentTime", workers, plan.rounds, "rt",
                                    n=plan.rt_per_round, spacing=RT_SPACING)
            log("price snapshot round trip ...")
            figures["price"] = sampled(gw, "round trip: price snapshot", [w for w in workers if w.kind != "socket"],
                                       plan.rounds, "price", n=plan.price_per_round, spacing=PRICE_SPACING)
            log("bracket acknowledgement ...")
            figures["bracket"] = sampled(gw, "bracket: all three acknowledged",
                                         [w for w in workers if w.kind in ("raw", "ours", "ib_async")],
                                         plan.rounds, "bracket", n=plan.bracket_per_round, spacing=0.3)
            log("ticks per second at saturation ...")
            figures["ticks_max"] = ticks_figure(gw, workers, plan, SATURATING_RATE, "ticks/s, simulator saturating", log)
            log(f"CPU per 100,000 ticks at a fixed {plan.fixed_rate} ticks/s ...")
            figures["ticks_fixed"] = ticks_figure(gw, workers, plan, plan.fixed_rate,
                                                  f"ticks/s at a fixed {plan.fixed_rate}/s", log)
            log(f"  hot-path figures took {time.monotonic() - t0:.1f} s")
        finally:
            for w in workers:
                w.close()
    for fig in figures.values():
        for kind in ("raw", "bridge", "ours", "ib_async", "socket"):
            if kind not in started:
                fig.unavailable.setdefault(kind, "worker could not start")
    return figures
