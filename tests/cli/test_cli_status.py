"""``ib-resilience status``: JSON and exit code 0 when healthy, non-zero otherwise (health check).

``gw`` is the shared simulated gateway of tests/conftest.py."""

from __future__ import annotations

import json
import socket

import pytest

from ib_resilience.cli import main
from ib_resilience.client import IBClient
from ib_resilience.sim import FakeGateway
from ib_resilience.state import ConnectionState


def test_healthy_gateway_exit_0_and_json(gw: FakeGateway, capsys: pytest.CaptureFixture) -> None:
    code = main(["status", "--port", str(gw.port), "--client-id", "17", "--timeout", "10"])
    out = capsys.readouterr().out
    status = json.loads(out)
    assert code == 0, status
    assert status["state"] == "CONNECTED" and status["is_healthy"] is True and status["healthy"] is True
    assert status["probe_ok"] is True and status["gateway_time"] > 0
    assert status["client_id"] == 17 and status["port"] == gw.port
    assert "circuit_breakers" in status and "errors_by_category" in status
    # The check disconnected again: nothing of it is left on the gateway.
    assert gw.wait_for(lambda: not gw.connections, timeout=10.0)


def test_nothing_listening_exits_non_zero(capsys: pytest.CaptureFixture) -> None:
    # A bound but not listening socket: the port refuses, and nobody else can take it meanwhile.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        code = main(["status", "--port", str(port), "--timeout", "5"])
    captured = capsys.readouterr()
    assert code == 1
    status = json.loads(captured.out)
    assert status["state"] != "CONNECTED" and status["healthy"] is False
    assert "refused" in (status["last_error"] or "").lower()
    assert "unhealthy" in captured.err


def test_client_id_in_use_is_unhealthy(gw: FakeGateway, capsys: pytest.CaptureFixture) -> None:
    bot = IBClient(config={"port": gw.port, "client_id": 999, "heartbeat_interval": 5.0})
    try:
        assert bot.connect(timeout=10.0)
        code = main(["status", "--port", str(gw.port), "--timeout", "5"])  # default id 999: taken
        captured = capsys.readouterr()
        assert code == 1
        assert "326" in captured.err or "in use" in captured.err.lower()
        assert bot.state is ConnectionState.CONNECTED  # the bot's session was not disturbed
    finally:
        bot.disconnect()


def test_config_file_supplies_the_address(gw: FakeGateway, tmp_path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "bot.yaml"
    cfg.write_text(f"host: 127.0.0.1\nport: {gw.port}\nclient_id: 1\n", encoding="utf-8")
    code = main(["status", "--config", str(cfg), "--timeout", "10"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0 and status["port"] == gw.port and status["client_id"] == 999


def test_bad_config_and_bad_timeout_are_usage_errors(tmp_path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("port: nope\n", encoding="utf-8")
    assert main(["status", "--config", str(cfg)]) == 2
    assert "port" in capsys.readouterr().err
    assert main(["status", "--timeout", "0"]) == 2


def test_a_gateway_that_never_answers_the_handshake_is_unhealthy_not_a_hang(
    gw: FakeGateway, capsys: pytest.CaptureFixture
) -> None:
    gw.stall_handshake(60.0)  # TCP accepted, version reply withheld (e.g. the "accept?" dialog)
    code = main(["status", "--port", str(gw.port), "--timeout", "1"])
    status = json.loads(capsys.readouterr().out)
    assert code == 1
    assert status["state"] != "CONNECTED" and status["healthy"] is False
