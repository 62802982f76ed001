"""Settings: frozen dataclasses, loaded from YAML, a dict, or defaults, and validated.

Every value is checked before anything connects: an unknown key, a wrong type (``True`` is not
an int; an int is fine for a float) or an out-of-range value raises :class:`ConfigError`
naming the dotted key (``breakers.cancel_order.fail_max``) and the file it came from.
``config/default.yaml`` documents every key with its default; a test keeps it equal to
``load_config()``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import yaml

from ib_resilience.errors import ConfigError

__all__ = [
    "BreakerSettings",
    "Config",
    "LoggingSettings",
    "MaintenanceSettings",
    "MaintenanceWindow",
    "MarketDataSettings",
    "OrderSettings",
    "PacingSettings",
    "SafetySettings",
    "SubscriptionSettings",
    "DEFAULT_BREAKERS",
    "load_config",
]


def _f(default: Any, **checks: Any) -> Any:
    """A dataclass field with validation rules in its metadata.

    Rules: ``gt``/``ge``/``le`` (numeric bounds), ``choices`` (allowed values),
    ``item_ge``/``item_le`` (bounds for tuple items).
    """
    if isinstance(default, (dict, list)):
        raise TypeError("mutable default")
    return field(default=default, metadata=checks)


@dataclass(frozen=True)
class BreakerSettings:
    """One operation's circuit breaker."""

    fail_max: int = _f(3, ge=1)  # counted failures in a row that open the circuit
    reset_timeout: float = _f(30.0, gt=0)  # seconds open before a trial call is admitted


DEFAULT_BREAKERS: Mapping[str, BreakerSettings] = MappingProxyType(
    {
        "place_bracket_order": BreakerSettings(3, 30.0),
        "place_strangle": BreakerSettings(3, 30.0),
        "get_current_price": BreakerSettings(5, 60.0),
        "cancel_order": BreakerSettings(3, 30.0),
        "close_position_at_market": BreakerSettings(3, 30.0),
    }
)


@dataclass(frozen=True)
class PacingSettings:
    """The outbound token bucket. rate + burst bounds the messages in any one second: the
    gateway allows 50, so the defaults (45 + 4) stay below it with one to spare (jitter)."""

    max_messages_per_second: float = _f(45.0, gt=0)
    burst: int = _f(4, ge=1)
    slowdown_factor: float = _f(0.5, gt=0, le=1)  # rate multiplier after a RATE_LIMIT error
    slowdown_duration: float = _f(10.0, ge=0)  # seconds the lowered rate lasts


@dataclass(frozen=True)
class SafetySettings:
    """Limits checked before an order is sent; None means unlimited."""

    max_order_quantity: Optional[float] = _f(None, gt=0)
    max_order_notional: Optional[float] = _f(None, gt=0)


@dataclass(frozen=True)
class MarketDataSettings:
    delayed_fallback: bool = _f(True)  # use delayed data when live data is not subscribed
    snapshot_timeout: float = _f(10.0, gt=0)  # get_current_price deadline when none is given


@dataclass(frozen=True)
class OrderSettings:
    # An order whose fate is unknown after a reconnect and that the gateway definitely does
    # not have (looked up by its order_ref): send it again, or raise OrderNotPlacedError.
    on_unknown_after_reconnect: str = _f("resubmit", choices=("resubmit", "raise"))
    hold_during_upstream_outage: bool = _f(True)  # wait out 1100 instead of failing orders
    strangle_as_combo: bool = _f(True)  # one BAG order; False = two single-leg orders


@dataclass(frozen=True)
class SubscriptionSettings:
    # Seconds without a tick before a subscription counts as stale; None = never.
    staleness_timeout: Optional[float] = _f(60.0, gt=0)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring local-time window (``end`` before ``start`` wraps past midnight;
    ``days`` are the days the window starts on)."""

    days: Tuple[str, ...] = _f(("sun", "mon", "tue", "wed", "thu", "fri"), choices=_DAYS)
    start: str = _f("00:15", pattern=_HHMM)
    end: str = _f("01:45", pattern=_HHMM)
    tz: str = _f("America/New_York", timezone=True)

    def contains(self, epoch_seconds: float) -> bool:
        """Whether the wall-clock time ``epoch_seconds`` falls inside this window."""
        from zoneinfo import ZoneInfo

        local = _dt.datetime.fromtimestamp(epoch_seconds, ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        today = _DAYS[local.weekday()]
        yesterday = _DAYS[(local.weekday() - 1) % 7]
        if start <= end:
            return today in self.days and start <= minute < end
        # Wrapping window: the evening part belongs to today, the morning part to yesterday.
        return (today in self.days and minute >= start) or (yesterday in self.days and minute < end)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class MaintenanceSettings:
    """Known scheduled disconnects (IB's daily reset; North America by default)."""

    enabled: bool = _f(False)
    windows: Tuple[MaintenanceWindow, ...] = _f((MaintenanceWindow(),))
    hold_orders: bool = _f(False)  # inside a window, order methods wait for the session (to their deadline)

    def active_window(self, epoch_seconds: float) -> Optional[MaintenanceWindow]:
        """The window containing ``epoch_seconds``, if enabled and any does."""
        if not self.enabled:
            return None
        for window in self.windows:
            if window.contains(epoch_seconds):
                return window
        return None


@dataclass(frozen=True)
class LoggingSettings:
    level: str = _f("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


_CLIENT_ID_MAX = 2**31 - 1


@dataclass(frozen=True)
class Config:
    """All settings. Build with :func:`load_config`; change with ``load_config(cfg, key=v)``."""

    host: str = _f("127.0.0.1", nonempty=True)
    port: int = _f(7497, ge=1, le=65535)
    client_id: int = _f(1, ge=0, le=_CLIENT_ID_MAX)
    connect_timeout: float = _f(10.0, gt=0)
    max_reconnect_attempts: int = _f(10, ge=0)  # 0 = forever
    reconnect_delay_base: float = _f(1.0, gt=0)
    reconnect_delay_max: float = _f(300.0, gt=0)
    heartbeat_interval: float = _f(30.0, gt=0)
    heartbeat_timeout: float = _f(10.0, gt=0)
    request_timeout: float = _f(15.0, gt=0)
    stable_after: float = _f(60.0, ge=0)  # a connection up this long resets the backoff
    fallback_client_ids: Tuple[int, ...] = _f((), item_ge=0, item_le=_CLIENT_ID_MAX)
    client_id_in_use_delay: float = _f(5.0, ge=0)
    read_only: bool = _f(False)
    # A read-only mapping is unhashable, so dataclasses wants a factory; the value is shared.
    breakers: Mapping[str, BreakerSettings] = field(default_factory=lambda: DEFAULT_BREAKERS)
    pacing: PacingSettings = _f(PacingSettings())
    safety: SafetySettings = _f(SafetySettings())
    market_data: MarketDataSettings = _f(MarketDataSettings())
    orders: OrderSettings = _f(OrderSettings())
    subscriptions: SubscriptionSettings = _f(SubscriptionSettings())
    maintenance: MaintenanceSettings = _f(MaintenanceSettings())
    logging: LoggingSettings = _f(LoggingSettings())

    def to_dict(self) -> Dict[str, Any]:
        """Plain dicts, lists and scalars (YAML-/JSON-ready); ``load_config`` accepts it back."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _cross_checks(cfg: Config) -> None:
    """Rules that relate two keys."""
    if cfg.reconnect_delay_max < cfg.reconnect_delay_base:
        raise _Invalid(
            f"must be >= reconnect_delay_base ({cfg.reconnect_delay_base}), got {cfg.reconnect_delay_max}",
            "reconnect_delay_max",
        )


# ---------------------------------------------------------------------------------------------
# loading


Source = Union[None, str, Path, Mapping[str, Any], Config]


def load_config(source: Source = None, **overrides: Any) -> Config:
    """Build a validated :class:`Config`.

    ``source`` is None (defaults), a path to a YAML file, a mapping, or a ``Config``; keyword
    ``overrides`` apply on top (``port=4002``; a section takes a partial mapping,
    ``pacing={"burst": 3}``). Raises :class:`ConfigError` on anything invalid.
    """
    if source is None:
        raw: Any = {}
        label = "defaults"
    elif isinstance(source, Config):
        raw = source.to_dict()
        label = "config object"
    elif isinstance(source, (str, Path)):
        raw = _read_yaml(Path(source))
        label = str(source)
    elif isinstance(source, Mapping):
        raw = source
        label = "mapping"
    else:
        raise ConfigError(f"unsupported config source of type {type(source).__name__}")
    # Validate the source alone first, so that an error names the file it is in; then the
    # overrides on top of it (any new error is then theirs).
    cfg = _validated(raw, label)
    if overrides:
        cfg = _validated(_merge(_plain(raw), _plain(overrides)), "keyword overrides")
    return cfg


class _Invalid(Exception):
    """Internal: a validation failure before the source is known."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _validated(raw: Any, label: str) -> Config:
    try:
        if not isinstance(raw, Mapping):
            raise _Invalid(f"the top level must be a mapping, got {_type_name(raw)}", "")
        cfg = _build(Config, raw, "", Config())
        _cross_checks(cfg)
        return cfg
    except _Invalid as exc:
        raise ConfigError(exc.message, key=exc.key or None, source=label) from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=str(path)) from None
    return {} if data is None else data


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge mappings; anything else in ``over`` replaces ``base``."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(cls: type, raw: Any, prefix: str, default: Any) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``, taking missing keys from ``default``."""
    if not isinstance(raw, Mapping):
        raise _Invalid(f"must be a mapping, got {_type_name(raw)}", prefix)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            near = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _Invalid(f"unknown key{hint}", _join(prefix, str(key)))
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if f.name not in raw:
            values[f.name] = getattr(default, f.name)
            continue
        value = _convert(hints[f.name], raw[f.name], key, getattr(default, f.name))
        _check_rules(f.metadata, value, key)
        values[f.name] = value
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, default: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return _convert(inner, value, key, default)
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(f"must be true or false, got {_type_name(value)} {value!r}", key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, got {_type_name(value)} {value!r}", key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be a number, got {_type_name(value)} {value!r}", key)
        if not math.isfinite(value):
            raise _Invalid(f"must be finite, got {value!r}", key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            hint_text = " (quote times in YAML: '23:00')" if isinstance(value, int) else ""
            raise _Invalid(f"must be a string, got {_type_name(value)} {value!r}{hint_text}", key)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"must be a list, got {_type_name(value)} {value!r}", key)
        item_hint = args[0]
        if dataclasses.is_dataclass(item_hint):
            return tuple(_build(item_hint, v, f"{key}[{i}]", item_hint()) for i, v in enumerate(value))
        return tuple(_convert(item_hint, v, f"{key}[{i}]", None) for i, v in enumerate(value))
    if origin is collections.abc.Mapping:
        # Only the breakers section: operation name -> BreakerSettings, merged over defaults.
        if not isinstance(value, Mapping):
            raise _Invalid(f"must be a mapping, got {_type_name(value)}", key)
        out = dict(default)
        for name, sub in value.items():
            if name not in default:
                near = difflib.get_close_matches(str(name), sorted(default), n=1)
                hint_text = f" (did you mean {near[0]!r}?)" if near else ""
                raise _Invalid(f"unknown operation{hint_text}; known: {', '.join(sorted(default))}", f"{key}.{name}")
            out[name] = _build(BreakerSettings, sub, f"{key}.{name}", default[name])
        return MappingProxyType(out)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, default)
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")  # a bug, not bad input


def _check_rules(rules: Mapping[str, Any], value: Any, key: str) -> None:
    if value is None:
        return
    if "gt" in rules and not value > rules["gt"]:
        raise _Invalid(f"must be > {rules['gt']}, got {value!r}", key)
    if "ge" in rules and not value >= rules["ge"]:
        raise _Invalid(f"must be >= {rules['ge']}, got {value!r}", key)
    if "le" in rules and not value <= rules["le"]:
        raise _Invalid(f"must be <= {rules['le']}, got {value!r}", key)
    if "choices" in rules:
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if item not in rules["choices"]:
                raise _Invalid(f"must be one of {', '.join(map(str, rules['choices']))}; got {item!r}", key)
        if isinstance(value, tuple) and not value:
            raise _Invalid("must not be empty", key)
    for i, item in enumerate(value if isinstance(value, tuple) else ()):
        if "item_ge" in rules and not item >= rules["item_ge"]:
            raise _Invalid(f"must be >= {rules['item_ge']}, got {item!r}", f"{key}[{i}]")
        if "item_le" in rules and not item <= rules["item_le"]:
            raise _Invalid(f"must be <= {rules['item_le']}, got {item!r}", f"{key}[{i}]")
    if rules.get("nonempty") and not value.strip():
        raise _Invalid("must not be empty", key)
    if "pattern" in rules and not rules["pattern"].match(value):
        raise _Invalid(f"must be a time 'HH:MM' (24-hour), got {value!r}", key)
    if rules.get("timezone"):
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(value)
        except Exception:
            raise _Invalid(f"unknown time zone {value!r}", key) from None
