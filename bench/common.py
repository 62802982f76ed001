"""Shared pieces of the benchmark scripts: summaries, the worker processes, machine facts."""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(len(samples), percentile(samples, 50), percentile(samples, 99), max(samples) if samples else math.nan)


def ms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    value = seconds * 1000.0
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


class WorkerError(RuntimeError):
    pass


class Worker:
    """One client process (``bench/worker.py``) answering JSON commands."""

    def __init__(self, kind: str, port: int, client_id: int, timeout: float = 60.0) -> None:
        self.kind = kind
        self.port = port
        self.client_id = client_id
        self.timeout = timeout
        self.unavailable: Optional[str] = None
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(BENCH_DIR, "worker.py"), "--kind", kind, "--port", str(port),
             "--client-id", str(client_id)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name=f"bench-pump-{kind}", daemon=True).start()
        first = self._read()
        if "ready" not in first:
            self.close()
            raise WorkerError(f"{kind} worker did not start: {first}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _read(self) -> Dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty as exc:
            raise WorkerError(f"{self.kind} worker did not answer within {self.timeout:g} s") from exc
        if not line:
            raise WorkerError(f"{self.kind} worker exited (code {self.proc.poll()})")
        return json.loads(line)

    def call(self, cmd: str, **args: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def kill(self) -> None:
        """End the process at once (a client busy working off a backlog cannot be asked)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (WorkerError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def machine() -> Dict[str, str]:
    """The facts the performance table is published with."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import ibapi

    try:
        import ib_async

        ib_async_version = ib_async.__version__
    except ImportError:
        ib_async_version = "not installed"
    try:
        import matplotlib

        mpl = matplotlib.__version__
    except ImportError:
        mpl = "not installed"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "ibapi": getattr(ibapi, "__version__", None) or ibapi.get_version_string(),
        "ib_async": ib_async_version,
        "matplotlib": mpl,
        "os": f"{platform.system()} {platform.release()}",
    }


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def flatten(chunks: List[List[float]]) -> List[float]:
    return [x for chunk in chunks for x in chunk]
