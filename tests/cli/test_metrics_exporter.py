"""The Prometheus exporter, scraped over HTTP while a real client rides through a drop."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from typing import Any, Callable, Dict, Tuple

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ib_resilience.client import IBClient  # noqa: E402
from ib_resilience.metrics import MetricsExporter  # noqa: E402
from ib_resilience.sim import FakeGateway  # noqa: E402
from ib_resilience.state import ConnectionState  # noqa: E402


def samples(text: str) -> Dict[tuple, float]:
    """(name, sorted label items) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> Dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return samples(reply.read().decode())


@pytest.fixture
def client(gw: FakeGateway, new_client: Callable[..., IBClient]) -> Tuple[FakeGateway, IBClient]:
    c = new_client(client_id=5)
    assert c.connect(timeout=15.0)
    return gw, c


def test_scraped_over_http_through_a_drop(client: tuple) -> None:
    gw, c = client
    registry = CollectorRegistry()
    exporter = MetricsExporter(c, registry, labels={"bot": "demo"})
    server, thread = exporter.start_http_server(0)
    try:
        port = server.server_port
        first = scrape(port)
        bot = ("bot", "demo")
        assert first[("ib_resilience_up", (bot,))] == 1.0
        assert first[("ib_resilience_connected", (bot,))] == 1.0
        assert first[("ib_resilience_connection_state", (bot, ("state", "CONNECTED")))] == 1.0
        assert first[("ib_resilience_connection_state", (bot, ("state", "RECONNECTING")))] == 0.0
        assert first[("ib_resilience_connections_total", (bot,))] == 1.0
        assert first[("ib_resilience_disconnections_total", (bot,))] == 0.0
        assert first[("ib_resilience_errors_total", (bot, ("category", "INFO")))] >= 3  # the startup notices
        assert first[("ib_resilience_errors_by_code_total", (bot, ("code", "2104")))] == 1.0
        breaker = ("ib_resilience_circuit_breaker_state", (bot, ("operation", "place_bracket_order"), ("state", "closed")))
        assert first[breaker] == 1.0
        assert ("ib_resilience_latency_seconds", (bot,)) in first
        assert first[("ib_resilience_open_orders", (bot,))] == 0.0
        assert first[("ib_resilience_subscriptions_active", (bot,))] == 0.0

        back = threading.Event()
        ticking_again = threading.Event()
        c.add_state_listener(
            lambda old, new, reason: back.set() if (old, new) == (ConnectionState.RECONNECTING, ConnectionState.CONNECTED) else None
        )
        c.subscribe_market_data("AAPL", lambda tick: ticking_again.set() if back.is_set() else None)
        assert scrape(port)[("ib_resilience_subscriptions_active", (bot,))] == 1.0
        gw.drop_connections()
        assert back.wait(15.0)
        assert ticking_again.wait(15.0)  # the stream was restored on the new session
        second = scrape(port)
        assert second[("ib_resilience_subscriptions_restored_total", (bot,))] >= 1.0
        assert second[("ib_resilience_subscriptions_active", (bot,))] == 1.0
        assert second[("ib_resilience_connections_total", (bot,))] == 2.0
        assert second[("ib_resilience_disconnections_total", (bot,))] == 1.0
        assert second[("ib_resilience_connected", (bot,))] == 1.0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        exporter.unregister()


def test_a_failing_status_source_reports_up_0() -> None:
    class Broken:
        def get_connection_status(self) -> Dict[str, Any]:
            raise RuntimeError("boom")

    registry = CollectorRegistry()
    MetricsExporter(Broken(), registry)
    assert samples(generate_latest(registry).decode()) == {("ib_resilience_up", ()): 0.0}


def test_breaker_states_from_a_status_dict() -> None:
    class Fixed:
        def get_connection_status(self) -> Dict[str, Any]:
            return {"state": "RECONNECTING", "circuit_breakers": {"cancel_order": {"state": "open", "failure_count": 3, "times_opened": 1}}}

    registry = CollectorRegistry()
    MetricsExporter(Fixed(), registry)
    got = samples(generate_latest(registry).decode())
    op = ("operation", "cancel_order")
    assert got[("ib_resilience_circuit_breaker_state", (op, ("state", "open")))] == 1.0
    assert got[("ib_resilience_circuit_breaker_state", (op, ("state", "closed")))] == 0.0
    assert got[("ib_resilience_circuit_breaker_failures", (op,))] == 3.0
    assert got[("ib_resilience_connected", ())] == 0.0
    assert got[("ib_resilience_connection_state", (("state", "RECONNECTING"),))] == 1.0


def test_missing_prometheus_client_gives_a_clear_import_error() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n    import ib_resilience.metrics\nexcept ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'ib_resilience[metrics]'" in result.stdout, result.stderr
