"""Fault plans: "at time T (seconds after start) do fault F", run against a FakeGateway.

A plan file is YAML (parsed with PyYAML when it is importable), JSON, or - with neither - the
simple YAML subset this module parses itself: a list of flat mappings, or a mapping with
``repeat`` (seconds; the plan restarts after that long) and ``steps`` (that list)::

    repeat: 120          # optional
    steps:
      - at: 5
        fault: drop_connections
      - at: 20
        fault: upstream_outage
        seconds: 10
        data_lost: true

Every other key of a step is a keyword argument of the ``FakeGateway`` method named by
``fault``; unknown faults and arguments are rejected when the plan is loaded.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import FakeGateway

log = logging.getLogger("ib_resilience.sim.faults")

FAULTS = (
    "drop_connections",
    "reset_connections",
    "refuse_connections",
    "blackhole",
    "stall_handshake",
    "set_latency",
    "inject_error",
    "upstream_outage",
    "restart",
    "send_garbage",
    "set_price",
    "hold_order_acks",
    "set_tick_interval",
)


class FaultPlanError(ValueError):
    """A fault plan that cannot be run (bad syntax, unknown fault or argument)."""


@dataclass(frozen=True)
class FaultStep:
    at: float
    fault: str
    kwargs: Tuple[Tuple[str, Any], ...] = ()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"t+{self.at:g}s {self.fault}({args})"


@dataclass(frozen=True)
class FaultPlan:
    steps: Tuple[FaultStep, ...]
    repeat: Optional[float] = None  # seconds; the plan restarts after this long

    @staticmethod
    def from_data(data: Any) -> FaultPlan:
        repeat: Optional[float] = None
        if isinstance(data, dict):
            unknown = set(data) - {"repeat", "steps"}
            if unknown:
                raise FaultPlanError(f"unknown plan keys: {sorted(unknown)}")
            repeat = float(data["repeat"]) if data.get("repeat") is not None else None
            data = data.get("steps", [])
        if not isinstance(data, list):
            raise FaultPlanError("a fault plan is a list of steps (or a mapping with 'steps')")
        steps = [_step(i, raw) for i, raw in enumerate(data)]
        steps.sort(key=lambda s: s.at)
        if repeat is not None and steps and repeat <= steps[-1].at:
            raise FaultPlanError("'repeat' must be longer than the last step's 'at'")
        return FaultPlan(tuple(steps), repeat)

    @staticmethod
    def parse(text: str) -> FaultPlan:
        return FaultPlan.from_data(parse_plan_text(text))

    @staticmethod
    def load(path: str) -> FaultPlan:
        with open(path, encoding="utf-8") as fh:
            return FaultPlan.parse(fh.read())


def _step(index: int, raw: Any) -> FaultStep:
    from .gateway import FakeGateway  # the method signatures are the schema

    if not isinstance(raw, dict) or "fault" not in raw or "at" not in raw:
        raise FaultPlanError(f"step {index}: needs 'at' and 'fault'")
    fault = str(raw["fault"])
    if fault not in FAULTS:
        raise FaultPlanError(f"step {index}: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
    kwargs = {k: v for k, v in raw.items() if k not in ("at", "fault")}
    params = inspect.signature(getattr(FakeGateway, fault)).parameters
    unknown = set(kwargs) - set(params)
    if unknown:
        raise FaultPlanError(f"step {index}: {fault} takes no {sorted(unknown)}")
    missing = [
        n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty and n not in kwargs
    ]
    if missing:
        raise FaultPlanError(f"step {index}: {fault} needs {missing}")
    at = float(raw["at"])
    if at < 0:
        raise FaultPlanError(f"step {index}: 'at' cannot be negative")
    return FaultStep(at, fault, tuple(sorted(kwargs.items())))


def parse_plan_text(text: str) -> Any:
    """YAML via PyYAML if importable, else JSON, else the simple subset (see module doc)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FaultPlanError(f"bad YAML: {exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FaultPlanError(f"bad JSON: {exc}") from exc
    return parse_simple_yaml(text)


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_simple_yaml(text: str) -> Any:
    """The plan subset of YAML: top-level ``key: value`` pairs and one list of flat mappings."""
    top: Dict[str, Any] = {}
    items: List[Dict[str, Any]] = []
    current: Optional[Dict[str, Any]] = None
    saw_list_key = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if body.startswith("- "):
            current = {}
            items.append(current)
            body = body[2:].strip()
        elif indent == 0:
            current = None
        key, sep, value = body.partition(":")
        if not sep:
            raise FaultPlanError(f"line {lineno}: expected 'key: value'")
        key = key.strip()
        if current is not None:
            current[key] = _scalar(value)
        elif value.strip() == "":
            saw_list_key = True  # e.g. "steps:" followed by the list
            top[key] = items
        else:
            top[key] = _scalar(value)
    if top:
        if not saw_list_key and items:
            raise FaultPlanError("list items must follow a 'steps:' key")
        return top
    return items


@dataclass
class FaultPlanRunner:
    """Runs a plan against a gateway on its own thread. ``stop()`` joins it."""

    gateway: FakeGateway
    plan: FaultPlan
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None
    executed: List[str] = field(default_factory=list)

    def start(self) -> FaultPlanRunner:
        self._thread = threading.Thread(target=self._run, name="sim-fault-plan", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def __enter__(self) -> FaultPlanRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until a non-repeating plan has run every step. True if it finished."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            for step in self.plan.steps:
                if self._stop.wait(max(0.0, start + step.at - time.monotonic())):
                    return
                log.warning("fault plan: %s", step.describe())
                try:
                    getattr(self.gateway, step.fault)(**dict(step.kwargs))
                    self.executed.append(step.describe())
                except Exception:
                    log.exception("fault plan step failed: %s", step.describe())
            if self.plan.repeat is None:
                return
            if self._stop.wait(max(0.0, start + self.plan.repeat - time.monotonic())):
                return
