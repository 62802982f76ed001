"""Running the CLI as a user does: ``python -m ib_resilience.cli`` in a subprocess."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence


def run_cli(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ib_resilience.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


class LineReader:
    """A running CLI process whose output lines (stdout and stderr) can be awaited with a deadline."""

    def __init__(self, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ib_resilience.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe, always drained: a chatty log can never block it
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: List[str] = []
        self._queue: queue.Queue[Optional[str]] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> Optional[str]:
        """The first line (seen so far or arriving before ``timeout``) containing ``needle``."""
        for line in self.lines:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if needle in line:
                return line

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit code (killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        self._thread.join(5)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code
