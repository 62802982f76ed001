"""The Markdown report (``docs/performance.md``) and the recovery timeline plot."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

import paper
from common import Summary, ms
from overhead import Figure, cpu_per_100k, received_rate
from recovery import (
    DELAY_BASE,
    DELAY_MAX,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    RESTART_DOWNTIME,
    Recovery,
    Timeline,
)

NA = "n/a"
KIND_LABEL = {
    "raw": "raw ibapi",
    "bridge": "our Bridge",
    "ours": "ours (IBClient)",
    "ib_async": "ib_async",
    "socket": "bare socket",
}


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or not b:
        return NA
    return f"{a / b:.2f}×"


def _met(ok: Optional[bool]) -> str:
    return NA if ok is None else ("yes" if ok else "**no**")


def _p(fig: Figure, kind: str, which: str) -> Optional[float]:
    s = fig.summary(kind)
    return getattr(s, which) if s else None


def _cell(fig: Figure, kind: str, which: str, fmt: Callable[[float], str] = ms) -> str:
    v = _p(fig, kind, which)
    if v is not None:
        return fmt(v)
    why = fig.unavailable.get(kind)
    return f"{NA}: {why}" if why else NA


def _rate(v: float) -> str:
    return f"{v:,.0f}/s"


def _latency_rows(rows: List[str], fig: Figure, title: str) -> None:
    raw50, ours50, peer50 = _p(fig, "raw", "p50"), _p(fig, "ours", "p50"), _p(fig, "ib_async", "p50")
    ok = None if raw50 is None or ours50 is None else ours50 <= 1.15 * raw50
    rows.append(f"| {title}, p50 | {_cell(fig, 'raw', 'p50')} | {_cell(fig, 'ours', 'p50')} | {_ratio(ours50, raw50)} "
                f"| {_cell(fig, 'ib_async', 'p50')} | ours ≤ 1.15 × raw | {_met(ok)} |")
    if title.startswith("request round trip"):
        ok8 = None
        if ours50 is not None and raw50 is not None and peer50 is not None:
            ok8 = ours50 <= peer50 and ours50 <= raw50
        rows.append(f"| {title}, p50 (issue 8) | {_cell(fig, 'raw', 'p50')} | {_cell(fig, 'ours', 'p50')} "
                    f"| ÷ ib_async {_ratio(ours50, peer50)} | {_cell(fig, 'ib_async', 'p50')} "
                    f"| ours ≤ ib_async and ≤ raw | {_met(ok8)} |")
    rows.append(f"| {title}, p99 | {_cell(fig, 'raw', 'p99')} | {_cell(fig, 'ours', 'p99')} "
                f"| {_ratio(_p(fig, 'ours', 'p99'), _p(fig, 'raw', 'p99'))} | {_cell(fig, 'ib_async', 'p99')} | (reported) | |")


def _main_table(figures: Dict[str, Figure], rec: Optional[Recovery]) -> List[str]:
    rows = [
        "| figure | raw ibapi | ours | ratio | ib_async | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    _latency_rows(rows, figures["rt"], "request round trip `reqCurrentTime`")
    _latency_rows(rows, figures["price"], "request round trip `get_current_price` snapshot")
    _latency_rows(rows, figures["bracket"], "bracket: all three acknowledged")

    con = figures["connect"]
    raw50, ours50 = _p(con, "raw", "p50"), _p(con, "ours", "p50")
    ok = None if raw50 is None or ours50 is None else ours50 <= 1.1 * raw50
    rows.append(f"| connect to ready, p50 | {_cell(con, 'raw', 'p50')} | {_cell(con, 'ours', 'p50')} "
                f"| {_ratio(ours50, raw50)} | {_cell(con, 'ib_async', 'p50')} | ours ≤ 1.1 × raw | {_met(ok)} |")

    full = figures.get("connect_full")
    if full is not None:
        rows.append(f"| connect with the initial account/order sync, p50 | {NA} | {NA}: ours already waits "
                    f"for its order re-sync (open, completed orders, executions) before CONNECTED: the row above | | {_cell(full, 'ib_async', 'p50')} "
                    f"(`IB.connect`, default `fetchFields`) | (reported) | |")

    tmax = figures["ticks_max"]
    raw_t, peer_t = _p(tmax, "raw", "p50") or None, _p(tmax, "ib_async", "p50") or None
    ticks_rows = (
        ("ours", _p(tmax, "ours", "p50"), "delivered to `on_tick` by `subscribe_market_data`"),
        ("ours", received_rate(tmax, "ours"), "decoded by `IBClient`'s reader (whether or not delivered)"),
        ("bridge", _p(tmax, "bridge", "p50"), "through our Bridge fast path alone"),
    )
    for kind, mine, label in ticks_rows:
        ok = None if mine is None or raw_t is None else mine >= 0.9 * raw_t
        ok8 = None if mine is None or peer_t is None else mine >= peer_t
        mine_cell = _rate(mine) if mine is not None else f"{NA}: {tmax.unavailable.get(kind, '')}"
        rows.append(f"| ticks/s {label}, simulator saturating | {_cell(tmax, 'raw', 'p50', _rate)} "
                    f"| {mine_cell} | {_ratio(mine, raw_t)} | {_cell(tmax, 'ib_async', 'p50', _rate)} "
                    f"| ≥ 0.9 × raw; ≥ 1.0 × ib_async (issue 8) | {_met(ok)}; {_met(ok8)} |")

    tfix = figures["ticks_fixed"]
    peer_cpu = cpu_per_100k(tfix, "ib_async")
    raw_cpu = cpu_per_100k(tfix, "raw")
    rate_label = tfix.name.split("fixed ")[-1]
    for kind, label in (("ours", "`IBClient` with a subscription"), ("bridge", "our Bridge alone")):
        mine = cpu_per_100k(tfix, kind)
        ok8 = None if mine is None or peer_cpu is None else mine <= peer_cpu
        cell = f"{mine:.2f} s" if mine is not None else f"{NA}: {tfix.unavailable.get(kind, '')}"
        rows.append(f"| CPU seconds per 100,000 ticks, {label} (at {rate_label}) "
                    f"| {f'{raw_cpu:.2f} s' if raw_cpu is not None else NA} | {cell} | {_ratio(mine, raw_cpu)} "
                    f"| {f'{peer_cpu:.2f} s' if peer_cpu is not None else NA} | ≤ ib_async (issue 8) | {_met(ok8)} |")
    ours_fixed, ours_fixed_rx = _p(tfix, "ours", "p50"), received_rate(tfix, "ours")
    raw_fixed = _p(tfix, "raw", "p50")
    if ours_fixed is not None and ours_fixed_rx:
        rows.append(f"| ticks/s delivered to `on_tick` at {rate_label} (all decoded: {_rate(ours_fixed_rx)}) "
                    f"| {_cell(tfix, 'raw', 'p50', _rate)} | {_rate(ours_fixed)} | {_ratio(ours_fixed, _p(tfix, 'raw', 'p50'))} "
                    f"| {_cell(tfix, 'ib_async', 'p50', _rate)} | ≥ 0.9 × raw | "
                    f"{_met(ours_fixed >= 0.9 * raw_fixed if raw_fixed else None)} |")

    if rec is None:
        rows.append("| detection and recovery | | skipped (`--skip-recovery`) | | | | |")
        return rows
    lag = Summary.of(rec.listener_lag)
    for name, samples in (("clean drop (FIN) → state leaves CONNECTED", rec.fin), ("clean drop (RST) → state leaves CONNECTED", rec.rst)):
        s = Summary.of(samples)
        rows.append(f"| {name}, p50 / p99 (n={s.n}) | | {ms(s.p50)} / {ms(s.p99)} (state listeners hear it "
                    f"{ms(max(0.0, lag.p50))} / {ms(max(0.0, lag.p99))} later) | | never (no reconnect of its own) "
                    f"| p99 ≤ 50 ms | {_met(s.p99 <= 0.050)} |")
    bound = HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT + 0.1
    s = Summary.of(rec.blackhole)
    rows.append(f"| blackhole → detected, p50 / max (n={s.n}; interval {HEARTBEAT_INTERVAL:g} s + timeout "
                f"{HEARTBEAT_TIMEOUT:g} s) | | {ms(s.p50)} / {ms(s.max)} | | {paper.ib_async_blackhole_detection():g} s "
                f"on paper (Watchdog) | ≤ {bound * 1000:.0f} ms | {_met(s.max <= bound)} |")
    s = Summary.of(rec.restart_over_schedule)
    r = Summary.of(rec.restart_ready)
    rows.append(f"| restart ({RESTART_DOWNTIME:g} s down) → ready: beyond the scheduled attempt, p50 / max (n={s.n}) "
                f"| | {ms(s.p50)} / {ms(s.max)} (gateway back → ready: {ms(r.p50)} / {ms(r.max)}) | "
                f"| {paper.ib_async_watchdog_ready(RESTART_DOWNTIME):g} s on paper (Watchdog) "
                f"| ≤ scheduled backoff delay + 100 ms | {_met(s.max <= 0.100)} |")
    bound = (100 + 4 - 4) / 45  # 100 reqMktData + START_API + 3 sync requests, burst 4, 45/s
    if rec.restore_all:
        a, c = Summary.of(rec.restore_all), Summary.of(rec.restore_connected)
        rows.append(f"| drop → {rec.restore_what} restored, p50 / max (n={a.n}) | | {ms(a.p50)} / {ms(a.max)} "
                    f"(drop → CONNECTED {ms(c.p50)}) | | none: ib_async wipes its state on reconnect | bounded by the pacer: "
                    f"≥ {bound:.2f} s for 104 messages at 45/s, burst 4 (report) | {_met(a.max <= bound + 1.0)} |")
    else:
        why = "; ".join(rec.notes) or "not run"
        rows.append(f"| restore 100 subscriptions and re-adopt 50 open orders | | {NA}: {why} | | | bounded by the pacer | {NA} |")
    if rec.soak:
        first, after = rec.soak[1] if len(rec.soak) > 1 else rec.soak[0], rec.soak[-1]
        flat = (after["threads"] <= first["threads"] and after["fds"] <= first["fds"]
                and after["rss_kib"] - first["rss_kib"] <= 4096)
        span = after["reconnects"] - first["reconnects"]
        slope = (after["rss_kib"] - first["rss_kib"]) / span if span else 0.0
        rows.append(f"| memory / threads / descriptors after {int(after['reconnects'])} reconnects "
                    f"(from {int(first['reconnects'])} on) | | RSS {first['rss_kib'] / 1024:.1f} → "
                    f"{after['rss_kib'] / 1024:.1f} MiB, threads {int(first['threads'])} → {int(after['threads'])}, "
                    f"fds {int(first['fds'])} → {int(after['fds'])} ({slope:+.2f} KiB RSS per reconnect) | | "
                    f"| flat (≤ 4 MiB RSS growth, no thread or fd growth) "
                    f"| {_met(flat)} |")
    return rows


def _decomposition(figures: Dict[str, Figure]) -> List[str]:
    kinds = ["socket", "raw", "bridge", "ours", "ib_async"]
    rows = [
        "| figure | " + " | ".join(KIND_LABEL[k] for k in kinds) + " |",
        "| --- |" + " --- |" * len(kinds),
    ]
    for key, which, fmt in (("rt", "p50", ms), ("rt", "p99", ms), ("price", "p50", ms), ("connect", "p50", ms),
                            ("ticks_max", "p50", _rate), ("ticks_fixed", "p50", _rate)):
        fig = figures[key]
        cells = []
        for k in kinds:
            v = _p(fig, k, which)
            cells.append(fmt(v) if v is not None else NA)
        rows.append(f"| {fig.name}, {which} | " + " | ".join(cells) + " |")
    for key in ("ticks_max", "ticks_fixed"):
        fig = figures[key]
        cells = []
        for k in kinds:
            v = received_rate(fig, k)
            cells.append(_rate(v) if v is not None else NA)
        rows.append(f"| {fig.name}, decoded from the wire (mean) | " + " | ".join(cells) + " |")
    fix = figures["ticks_fixed"]
    cells = []
    for k in kinds:
        v = cpu_per_100k(fix, k)
        cells.append(f"{v:.2f} s" if v is not None else NA)
    rows.append("| CPU s per 100,000 ticks (fixed rate) | " + " | ".join(cells) + " |")
    return rows


def _unavailable(figures: Dict[str, Figure]) -> List[str]:
    out = []
    for fig in figures.values():
        for kind, why in sorted(fig.unavailable.items()):
            out.append(f"- {fig.name} — {KIND_LABEL.get(kind, kind)}: {why}")
    return out


def _paper_rows() -> List[str]:
    rows = [
        "| gateway down for | ours, defaults (base 1 s, cap 300 s), p50 / p99 over the jitter | nautilus_trader | "
        "rust-ibapi | ib_async Watchdog (restarts the gateway itself) | ib_async without Watchdog |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in paper.table([RESTART_DOWNTIME, 10.0, 60.0, 300.0]):
        rows.append(f"| {r['downtime']:g} s | {r['ours_p50']:.1f} s / {r['ours_p99']:.1f} s | {r['nautilus']:g} s "
                    f"| {r['rust_ibapi']:g} s | {r['ib_async_watchdog']:g} s | never |")
    return rows


def render(facts: Dict[str, str], figures: Dict[str, Figure], rec: Optional[Recovery], png: Optional[str],
           doc_dir: str) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `bench/run.py` (`make bench`); do not edit by hand — edit the script. Benchmarks are",
        "scripts, never part of `make test` or CI.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| date | {facts['date']} |",
        f"| command | `{facts['command']}` (took {facts.get('duration', '?')}) |",
        f"| CPUs (`nproc`) | {facts['nproc']} × {facts['cpu']} |",
        f"| OS | {facts['os']} |",
        f"| Python | {facts['python']} |",
        f"| ibapi | {facts['ibapi']} |",
        f"| ib_async | {facts['ib_async']} |",
        f"| matplotlib | {facts['matplotlib']} |",
        "",
        "## Results against the targets (issues 6 and 8)",
        "",
        "Latencies are medians (p50) and p99 over every sample of every round; ratios are ours ÷ raw",
        "unless the cell says otherwise. \"ours\" is `ib_resilience.IBClient` with the default",
        "configuration (pacer included); \"raw\" is the bare official client; both, and ib_async,",
        "ran against the same simulator in the same run, alternating round by round.",
        "",
        *_main_table(figures, rec),
        "",
        "## Every client kind side by side (where the time goes)",
        "",
        "\"bare socket\" is a reader that speaks just enough protocol to subscribe and counts frames: it",
        "is what the simulator can deliver, i.e. its headroom over every client. \"our Bridge\" is our",
        "transport and fast path without the manager, router, pacer or dispatcher.",
        "",
        *_decomposition(figures),
        "",
    ]
    missing = _unavailable(figures) + [f"- {fig.name} — {note}" for fig in figures.values() for note in fig.notes]
    if missing:
        lines += ["### Figures a client could not produce in this run", "", *missing, ""]
    if rec is not None and rec.soak:
        lines += [
            "## Memory, threads and descriptors while reconnecting",
            "",
            "The process holds the simulator and one client; samples after a `gc.collect()`.",
            "",
            "| reconnects | RSS | threads | open fds |",
            "| --- | --- | --- | --- |",
        ]
        for s in rec.soak:
            lines.append(f"| {int(s['reconnects'])} | {s['rss_kib'] / 1024:.1f} MiB | {int(s['threads'])} | {int(s['fds'])} |")
        lines.append("")
    lines += [
        "## Recovery after a gateway restart, on paper",
        "",
        "Time from the drop until the first connection attempt that finds the gateway back, for the",
        "schedules in `shared/reference/peers.md` (see `bench/paper.py` for the derivation). The",
        f"measured row above uses the benchmark's own schedule (base {DELAY_BASE:g} s, cap {DELAY_MAX:g} s,",
        f"heartbeat {HEARTBEAT_INTERVAL:g} s + {HEARTBEAT_TIMEOUT:g} s); this table uses each client's defaults.",
        "",
        *_paper_rows(),
        "",
        "ib_async's Watchdog notices a silent (blackholed) socket only after `appTimeout` 20 s idle and",
        "a 4 s historical-data probe, then restarts the whole gateway (another 32 s).",
        "",
    ]
    if png:
        lines += [
            "## One recovery timeline",
            "",
            f"![recovery timeline]({os.path.relpath(png, doc_dir)})",
            "",
            "State and `get_current_time` latency (probed every 50 ms) through a clean drop, a 2 s",
            f"blackhole and a gateway restart ({RESTART_DOWNTIME:g} s down); red marks are calls that failed:",
            "at once while not connected, or when the connection they waited on was declared dead.",
            "",
        ]
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "## Where ours misses a target, and why",
    "",
    "- **Round trip against ib_async** (issue 8: p50 at most ib_async's). Not met; ours beats the",
    "  bare official client. Every reply costs us one thread wake-up that ib_async does not pay:",
    "  the reader thread decodes the reply and wakes the caller, while ib_async's caller *is* its",
    "  event loop, woken by the socket itself. The issue asks for exactly that split (decoding on",
    "  the reader thread, blocking calls on the caller's thread). On this 2-vCPU VM that wake-up",
    "  costs ~0.13 ms, and after a 25 ms idle every line of Python runs cold (a 0.8 us table insert",
    "  takes ~40 us). `python bench/rt_breakdown.py` times the stages of one `get_current_time`",
    "  (p50 over 300 requests 25 ms apart; two runs on 2026-11-30):",
    "",
    "  | stage | p50 |",
    "  | --- | --- |",
    "  | connected check, call prologue | 58-62 us |",
    "  | pending registration | 24-27 us |",
    "  | official `EClient.reqCurrentTime` encoding | 31-34 us |",
    "  | framing and pacer | 38-41 us |",
    "  | send system call | 49-51 us |",
    "  | network, simulator, reader wake, decode | 224-239 us |",
    "  | routing the reply | 19-21 us |",
    "  | waking the caller: reader's side / until the caller returns | 26-30 us / 91-106 us |",
    "",
    "  The bare-socket client (two threads, no encoding, no pacer) marks the floor of a two-thread",
    "  design here, a little under ib_async; each layer the issue requires (official encoder,",
    "  pacer, generation-tagged pending requests) adds to it. Done so far: one system call per",
    "  send and per read (a socket timeout made Python poll before each), ibapi's log line built",
    "  only when its logger is on, wake-ups deferred to the end of a read (a caller woken while",
    "  the reader still held the GIL blocked on it and had to be woken twice), one table operation",
    "  per reply.",
    "",
    "Found while benchmarking and fixed in the library: ticks reached `on_tick` at only",
    "~100-200/s because every update was coalesced while the dispatcher waited for the GIL (now",
    "every tick is delivered; coalescing only past 100,000 undelivered); a `concurrent.futures.Future`",
    "per request; ibapi's `Decoder` (~1.9 ms to build) rebuilt on every connect; streams restored",
    "*before* CONNECTED, which kept a client with 100 streams unusable for the whole pacer-bound",
    "restore (~2.2 s); benchmarks reading private attributes (the status now carries the bridge's",
    "counters and the order re-sync generation). CPU per tick through `IBClient` went from 0.65 s",
    "to 0.35 s per 100,000 (ib_async 0.43 s): a LAST tick cost two callbacks through the bridge and",
    "router (`tickPrice` with a fresh `TickAttrib`, then `tickSize`), now one `claim_tick` call",
    "for our own streams; the transport called the bridge once per frame, now once per read; six",
    "`int()` calls on small byte strings per tick (~100 ns each) now hit a bounded memo (~20 ns);",
    "and the dispatcher woken per tick while the reader still held the GIL is now woken once per",
    "read.",
    "",
    "Where the raw client is far behind, the cause is its own: the official 9.81 client sends",
    "without `TCP_NODELAY`, so the second and third order of a bracket wait for a delayed ACK",
    "(~40 ms); and its `EReader` thread queues every frame without bound for `run()` to decode,",
    "re-slicing its byte buffer per message, so once a stream outruns the decoder the backlog",
    "grows in memory and its throughput collapses. Worse, under a stream that keeps the socket",
    "full its `Connection.recvMsg` keeps reading 4 KiB chunks until a short read that never",
    "comes, so it may hand `run()` nothing at all for seconds (0 ticks/s in a round is that, not",
    "a benchmark fault). The benchmark therefore runs it in a fresh process for every saturating",
    "round; at the fixed rate it keeps up like every other client.",
    "",
    "## How it is measured",
    "",
    "- The simulator (`ib_resilience.sim.FakeGateway`, server version 157) runs in the benchmark",
    "  process; every client of the hot-path figures runs in its own worker process",
    "  (`bench/worker.py`) so that its CPU time is its own and it never shares a GIL with the",
    "  simulator. Rounds alternate the kinds (A B C D, B C D A, ...).",
    "- Round trips are issued 40 per second: below the gateway's 50 msg/s limit and below our",
    "  pacer's 45/s, so the figure is one request's latency, not pacing. A price snapshot is",
    "  `reqMktData(snapshot=True)` to `tickSnapshotEnd` for the raw client, `get_current_price` for",
    "  ours and `reqTickers` for ib_async.",
    "- Ticks: the simulator streams LAST ticks for one subscription; \"saturating\" asks for far more",
    "  than any client reads (the simulator skips ticks for a client more than 4 MiB behind), the",
    "  fixed rate is one every client keeps up with, so CPU per 100,000 ticks compares the cost of",
    "  the same work. CPU is the worker process's user + system time over the window.",
    "- Connect to ready: from the call to `nextValidId` + `managedAccounts` received (raw:",
    "  `EClient.connect` + `run()` thread; ours: `IBClient.connect()` to CONNECTED, which includes",
    "  re-adopting orders: open orders, completed orders and executions up to their end markers;",
    "  ib_async: its `Client.connect`, the API handshake). ib_async's `IB.connect` additionally synchronises",
    "  positions, orders and account data; the simulator does not serve positions yet, so that",
    "  sync would only measure ib_async's 4 s request timeout and is left out.",
    "- Detection and recovery (ours only; the peers have no comparable mechanism to run): a state",
    "  listener stamps each transition; a fault is stamped just before the simulator call, so",
    "  every figure is an upper bound that includes the listener's dispatch.",
]


def write_png(tl: Timeline, path: str, log: Callable[[str], None]) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no timeline plot")
        return None
    order = ["DISCONNECTED", "ERROR", "RECONNECTING", "CONNECTING", "CONNECTED"]
    t0 = tl.start
    fig, (ax_state, ax_lat) = plt.subplots(2, 1, sharex=True, figsize=(10, 5.5), height_ratios=[1, 2])
    xs, ys = [], []
    for t, name in tl.states:
        xs.append(t - t0)
        ys.append(order.index(name) if name in order else 0)
    end = max([t for t, _ in tl.latencies] + [t for t, _ in tl.states]) - t0
    xs.append(end)
    ys.append(ys[-1] if ys else 0)
    ax_state.step(xs, ys, where="post", color="tab:blue")
    ax_state.set_yticks(range(len(order)), order, fontsize=7)
    ax_state.set_title("ib_resilience: state and get_current_time latency through faults", fontsize=10)
    ok = [(t - t0, lat * 1000) for t, lat in tl.latencies if lat is not None]
    bad = [t - t0 for t, lat in tl.latencies if lat is None]
    if ok:
        ax_lat.plot([x for x, _ in ok], [y for _, y in ok], ".", ms=3, color="tab:green", label="round trip")
    if bad:
        top = max([y for _, y in ok] + [1.0])
        ax_lat.plot(bad, [top] * len(bad), "x", ms=4, color="tab:red", label="failed (not connected, or lost with the connection)")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds")
    for t, label in tl.faults:
        for ax in (ax_state, ax_lat):
            ax.axvline(t - t0, color="grey", ls="--", lw=0.8)
        ax_lat.text(t - t0, 1.01, " " + label, transform=ax_lat.get_xaxis_transform(), fontsize=7, va="bottom")
    ax_lat.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"wrote {path}")
    return path
