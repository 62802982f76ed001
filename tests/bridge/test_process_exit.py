"""A bridge that is never closed does not keep the process alive (the reader is a daemon),
unlike the official EReader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import socket, struct, threading, sys
    from ib_resilience.bridge import Bridge

    def frame(*f):
        b = b"".join(str(x).encode() + b"\\0" for x in f)
        return struct.pack("!I", len(b)) + b

    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(frame(157, "20261130 07:45:00 GMT"))
        conn.recv(65536)
        conn.sendall(frame(15, 1, "DU1") + frame(9, 1, 1))
        while conn.recv(65536):
            pass

    threading.Thread(target=serve, daemon=True).start()

    class Sink:
        pass

    bridge = Bridge(Sink())
    info = bridge.open("127.0.0.1", listener.getsockname()[1], 1, 10.0)
    print("ready", info.generation, bridge.transport.reader_thread.is_alive(), flush=True)
    # no close(): the interpreter must still exit
    """
)


def test_an_unclosed_bridge_does_not_keep_the_process_alive() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=45
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ready", "1", "True"]
