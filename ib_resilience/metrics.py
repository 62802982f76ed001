"""Prometheus metrics for a client: ``pip install 'ib_resilience[metrics]'``.

The exporter is a custom collector that reads ``client.get_connection_status()`` at scrape time,
so nothing is counted twice and nothing goes stale between scrapes::

    exporter = MetricsExporter(client)        # registers with the default registry
    exporter.start_http_server(9108)          # or let your own web app serve the registry

Every metric is prefixed ``ib_resilience_``; see docs/operations.md for the list.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Protocol, Tuple

try:
    from prometheus_client import exposition
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # the extra is optional; say how to get it
    raise ImportError(
        "ib_resilience.metrics needs the prometheus_client package: "
        "pip install 'ib_resilience[metrics]' (or pip install prometheus-client)"
    ) from exc

from .state import ConnectionState

QUALITIES = ("EXCELLENT", "GOOD", "FAIR", "POOR")
BREAKER_STATES = ("closed", "open", "half-open")


class StatusSource(Protocol):
    """Anything with ``get_connection_status()`` — an ``IBClient`` in practice."""

    def get_connection_status(self) -> Dict[str, Any]: ...


class MetricsExporter(Collector):
    """Exports one client's connection status as Prometheus metrics.

    ``registry``: where to register (default: prometheus_client's global ``REGISTRY``);
    ``register=False`` registers nowhere (call :meth:`collect` yourself). ``labels`` are constant
    labels added to every sample (e.g. ``{"bot": "spx-strangles"}``), to tell several clients
    apart in one process.
    """

    def __init__(
        self,
        client: StatusSource,
        registry: Optional[CollectorRegistry] = None,
        *,
        namespace: str = "ib_resilience",
        labels: Optional[Mapping[str, str]] = None,
        register: bool = True,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.labels: Dict[str, str] = dict(labels or {})
        self.registry: Optional[CollectorRegistry] = (registry if registry is not None else REGISTRY) if register else None
        if self.registry is not None:
            self.registry.register(self)

    def unregister(self) -> None:
        """Remove this collector from its registry. Idempotent."""
        if self.registry is not None:
            self.registry.unregister(self)
            self.registry = None

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> Tuple[Any, Any]:
        """Serve this exporter's registry on ``http://addr:port/metrics`` from a daemon thread.

        Port 0 picks a free port (``server.server_port`` tells which). Binds loopback unless
        told otherwise. Returns ``(server, thread)``; stop with ``server.shutdown()``.
        """
        if self.registry is None:
            raise RuntimeError("the exporter is not registered with any registry")
        return exposition.start_http_server(port, addr=addr, registry=self.registry)

    # ------------------------------------------------------------------ collection

    def describe(self) -> Iterable[Metric]:
        # Names are fixed, but label values are only known at scrape time: describing nothing
        # makes the registry skip its collision check instead of calling collect() at register.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.client.get_connection_status()
        except Exception:  # a scrape must never take the bot down; report the failure itself
            yield self._gauge("up", "1 if the status could be read at scrape time.", 0.0)
            return
        yield self._gauge("up", "1 if the status could be read at scrape time.", 1.0)
        yield from self._connection(status)
        yield from self._counters(status)
        yield from self._errors(status)
        yield from self._breakers(status.get("circuit_breakers"))
        yield from self._orders_and_streams(status)

    def _connection(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        current = str(status.get("state", ""))
        state = self._family(
            GaugeMetricFamily, "connection_state", "1 for the current connection state, 0 for the others.", ["state"]
        )
        for s in ConnectionState:
            state.add_metric([*self.labels.values(), s.name], 1.0 if s.name == current else 0.0)
        yield state
        yield self._gauge("connected", "1 while the session is CONNECTED.", 1.0 if current == "CONNECTED" else 0.0)
        yield self._gauge("healthy", "1 while connected, upstream up and heartbeats answered.", _flag(status.get("is_healthy")))
        yield self._gauge("upstream_ok", "0 while the gateway reports its link to IB down (1100).", _flag(status.get("upstream_ok", True)))
        quality = self._family(GaugeMetricFamily, "connection_quality", "1 for the current connection quality.", ["quality"])
        current_quality = str(status.get("connection_quality", ""))
        for q in QUALITIES:
            quality.add_metric([*self.labels.values(), q], 1.0 if q == current_quality else 0.0)
        yield quality
        yield self._gauge(
            "latency_seconds",
            "Average heartbeat round trip over the recent samples.",
            _num(status.get("average_latency_ms")) / 1000.0,
        )
        yield self._gauge("uptime_ratio", "Share of time connected since the first connection.", _num(status.get("uptime_percentage")) / 100.0)
        yield self._gauge("reconnect_attempts", "Failed attempts in the current reconnect streak.", _num(status.get("reconnect_attempts")))
        yield self._gauge("pending_requests", "Requests waiting for a reply.", _num(status.get("pending_requests")))
        yield self._gauge("dispatcher_queue_depth", "Callbacks queued for the dispatcher thread.", _num(status.get("dispatcher_queue_depth")))
        heartbeat = status.get("last_heartbeat_at")
        if heartbeat is not None:
            yield self._gauge("last_heartbeat_timestamp_seconds", "Wall time of the last answered heartbeat.", _num(heartbeat))

    def _counters(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        for key, name, doc in (
            ("total_connections", "connections", "Sessions established."),
            ("total_disconnections", "disconnections", "Established sessions lost or closed."),
            ("failed_attempts", "failed_connection_attempts", "Connection attempts that failed."),
        ):
            if key in status:
                yield self._counter(name, doc, _num(status[key]))

    def _errors(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        by_category = self._family(CounterMetricFamily, "errors", "Gateway error messages by category.", ["category"])
        for category, count in sorted((status.get("errors_by_category") or {}).items()):
            by_category.add_metric([*self.labels.values(), str(category)], _num(count))
        yield by_category
        by_code = self._family(CounterMetricFamily, "errors_by_code", "Gateway error messages by IB error code.", ["code"])
        for code, count in sorted((status.get("errors_by_code") or {}).items(), key=lambda kv: str(kv[0])):
            by_code.add_metric([*self.labels.values(), str(code)], _num(count))
        yield by_code

    def _breakers(self, breakers: Any) -> Iterator[Metric]:
        if not isinstance(breakers, Mapping):
            return
        state = self._family(
            GaugeMetricFamily, "circuit_breaker_state", "1 for each breaker's current state.", ["operation", "state"]
        )
        failures = self._family(
            GaugeMetricFamily, "circuit_breaker_failures", "Counted failures in each breaker's window.", ["operation"]
        )
        opened = self._family(CounterMetricFamily, "circuit_breaker_opened", "Times each breaker opened.", ["operation"])
        for operation, info in sorted(breakers.items()):
            current = _breaker_state(info)
            for s in BREAKER_STATES:
                state.add_metric([*self.labels.values(), str(operation), s], 1.0 if s == current else 0.0)
            if isinstance(info, Mapping):
                failures.add_metric([*self.labels.values(), str(operation)], _num(info.get("failure_count")))
                opened.add_metric([*self.labels.values(), str(operation)], _num(info.get("times_opened")))
        yield state
        yield failures
        yield opened

    def _orders_and_streams(self, status: Mapping[str, Any]) -> Iterator[Metric]:
        if "open_orders" in status:
            yield self._gauge("open_orders", "Orders acknowledged by the gateway and not yet done.", _num(status["open_orders"]))
        subs = status.get("subscriptions")
        if not isinstance(subs, Mapping):
            return
        yield self._gauge("subscriptions_active", "Market data subscriptions held.", _num(subs.get("active")))
        yield self._gauge("subscriptions_blind", "Subscriptions currently without data (lost, not yet restored).", _num(subs.get("blind")))
        yield self._counter("subscriptions_restored", "Streams re-requested after a reconnect or 1101.", _num(subs.get("restored_total")))
        yield self._counter("subscriptions_stale_rerequests", "Streams re-requested because they went silent.", _num(subs.get("stale_rerequests")))
        yield self._counter("ticks_coalesced", "Ticks replaced by newer ones because a callback fell far behind.", _num(subs.get("coalesced")))

    # ------------------------------------------------------------------ helpers

    def _family(self, cls: Any, name: str, doc: str, label_names: Iterable[str]) -> Any:
        return cls(f"{self.namespace}_{name}", doc, labels=[*self.labels, *label_names])

    def _gauge(self, name: str, doc: str, value: float) -> Metric:
        family = self._family(GaugeMetricFamily, name, doc, [])
        family.add_metric(list(self.labels.values()), value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> Metric:
        family = self._family(CounterMetricFamily, name, doc, [])
        family.add_metric(list(self.labels.values()), value)
        return family


def _flag(value: Any) -> float:
    return 1.0 if value else 0.0


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _breaker_state(info: Any) -> str:
    state = info.get("state") if isinstance(info, Mapping) else info
    return str(getattr(state, "name", state) or "").lower().replace("_", "-")
