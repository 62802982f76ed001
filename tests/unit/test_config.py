from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from ib_resilience.config import (
    DEFAULT_BREAKERS,
    BreakerSettings,
    Config,
    MaintenanceSettings,
    MaintenanceWindow,
    load_config,
)
from ib_resilience.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "config" / "default.yaml"


def test_default_yaml_equals_builtin_defaults():
    assert load_config(DEFAULT_YAML) == load_config() == Config()


def _assert_all_fields_present(cls, raw, path):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}{f.name}"
        assert f.name in raw, f"{key} is missing from config/default.yaml"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            _assert_all_fields_present(hint, raw[f.name], key + ".")
    assert set(raw) == {f.name for f in dataclasses.fields(cls)}


def test_default_yaml_lists_every_key():
    raw = yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    _assert_all_fields_present(Config, raw, "")
    assert set(raw["breakers"]) == set(DEFAULT_BREAKERS)
    for name, sub in raw["breakers"].items():
        _assert_all_fields_present(BreakerSettings, sub, f"breakers.{name}.")
    for i, window in enumerate(raw["maintenance"]["windows"]):
        _assert_all_fields_present(MaintenanceWindow, window, f"maintenance.windows[{i}].")


def test_every_top_level_key_is_commented_in_default_yaml():
    for line in DEFAULT_YAML.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.endswith(":"):
            assert "#" in line, f"no comment on: {line!r}"


def test_issue_defaults():
    cfg = load_config()
    assert (cfg.host, cfg.port, cfg.client_id) == ("127.0.0.1", 7497, 1)
    assert cfg.connect_timeout == 10 and cfg.max_reconnect_attempts == 10
    assert (cfg.reconnect_delay_base, cfg.reconnect_delay_max) == (1.0, 300.0)
    assert (cfg.heartbeat_interval, cfg.heartbeat_timeout, cfg.request_timeout) == (30, 10, 15)
    assert cfg.stable_after == 60 and cfg.fallback_client_ids == () and cfg.client_id_in_use_delay == 5
    assert cfg.read_only is False
    expected = {
        "place_bracket_order": (3, 30),
        "place_strangle": (3, 30),
        "get_current_price": (5, 60),
        "cancel_order": (3, 30),
        "close_position_at_market": (3, 30),
    }
    assert {k: (v.fail_max, v.reset_timeout) for k, v in cfg.breakers.items()} == expected
    assert cfg.pacing.max_messages_per_second == 45
    assert cfg.pacing.max_messages_per_second + cfg.pacing.burst < 50
    assert cfg.safety.max_order_quantity is None and cfg.safety.max_order_notional is None
    assert cfg.orders.on_unknown_after_reconnect == "resubmit"


def test_values_are_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.breakers["cancel_order"] = BreakerSettings()  # type: ignore[index]
    assert isinstance(cfg.fallback_client_ids, tuple)
    assert isinstance(cfg.maintenance.windows, tuple)


def test_overrides_dict_and_config_sources():
    cfg = load_config({"port": 4002, "fallback_client_ids": [7, 8]}, client_id=3)
    assert (cfg.port, cfg.client_id, cfg.fallback_client_ids) == (4002, 3, (7, 8))
    again = load_config(cfg, pacing={"burst": 2})
    assert again.port == 4002 and again.pacing.burst == 2
    assert again.pacing.max_messages_per_second == 45  # partial section override keeps the rest
    assert cfg.pacing.burst == 4  # the original is untouched


def test_int_accepted_for_float_and_converted():
    cfg = load_config({"connect_timeout": 3})
    assert cfg.connect_timeout == 3.0 and isinstance(cfg.connect_timeout, float)


def test_partial_breaker_section_merges_with_defaults():
    cfg = load_config({"breakers": {"cancel_order": {"fail_max": 7}}})
    assert cfg.breakers["cancel_order"] == BreakerSettings(7, 30.0)
    assert cfg.breakers["get_current_price"] == BreakerSettings(5, 60.0)


def test_to_dict_round_trips():
    cfg = load_config({"fallback_client_ids": [5], "safety": {"max_order_quantity": 100}})
    plain = cfg.to_dict()
    assert plain["fallback_client_ids"] == [5]
    assert plain["breakers"]["cancel_order"] == {"fail_max": 3, "reset_timeout": 30.0}
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # plain types only
    assert load_config(plain) == cfg


@pytest.mark.parametrize(
    "raw, key, fragment",
    [
        ({"port": True}, "port", "integer"),
        ({"port": "7497"}, "port", "integer"),
        ({"port": 0}, "port", ">= 1"),
        ({"port": 65536}, "port", "<= 65535"),
        ({"client_id": 1.0}, "client_id", "integer"),
        ({"client_id": -1}, "client_id", ">= 0"),
        ({"connect_timeout": -1}, "connect_timeout", "> 0"),
        ({"connect_timeout": True}, "connect_timeout", "number"),
        ({"connect_timeout": float("inf")}, "connect_timeout", "finite"),
        ({"heartbeat_timeout": 0}, "heartbeat_timeout", "> 0"),
        ({"request_timeout": None}, "request_timeout", "number"),
        ({"max_reconnect_attempts": -1}, "max_reconnect_attempts", ">= 0"),
        ({"reconnect_delay_max": 0.5}, "reconnect_delay_max", "reconnect_delay_base"),
        ({"stable_after": -0.1}, "stable_after", ">= 0"),
        ({"fallback_client_ids": 5}, "fallback_client_ids", "list"),
        ({"fallback_client_ids": [1, True]}, "fallback_client_ids[1]", "integer"),
        ({"fallback_client_ids": [-2]}, "fallback_client_ids[0]", ">= 0"),
        ({"read_only": "yes"}, "read_only", "true or false"),
        ({"host": ""}, "host", "empty"),
        ({"hots": "x"}, "hots", "did you mean 'host'"),
        ({"breakers": {"cancel_order": {"fail_max": 0}}}, "breakers.cancel_order.fail_max", ">= 1"),
        ({"breakers": {"cancel_order": {"fail_max": True}}}, "breakers.cancel_order.fail_max", "integer"),
        ({"breakers": {"cancel_order": {"reset_timeout": 0}}}, "breakers.cancel_order.reset_timeout", "> 0"),
        ({"breakers": {"cancel_order": {"fail": 1}}}, "breakers.cancel_order.fail", "unknown"),
        ({"breakers": {"cancel": {}}}, "breakers.cancel", "unknown operation"),
        ({"breakers": []}, "breakers", "mapping"),
        ({"pacing": {"max_messages_per_second": 0}}, "pacing.max_messages_per_second", "> 0"),
        ({"pacing": {"burst": 0}}, "pacing.burst", ">= 1"),
        ({"pacing": {"slowdown_factor": 1.5}}, "pacing.slowdown_factor", "<= 1"),
        ({"pacing": {"slowdown_duration": -1}}, "pacing.slowdown_duration", ">= 0"),
        ({"pacing": 45}, "pacing", "mapping"),
        ({"safety": {"max_order_quantity": 0}}, "safety.max_order_quantity", "> 0"),
        ({"safety": {"max_order_notional": "1e6"}}, "safety.max_order_notional", "number"),
        ({"market_data": {"delayed_fallback": 1}}, "market_data.delayed_fallback", "true or false"),
        ({"market_data": {"snapshot_timeout": 0}}, "market_data.snapshot_timeout", "> 0"),
        ({"orders": {"on_unknown_after_reconnect": "retry"}}, "orders.on_unknown_after_reconnect", "one of"),
        ({"orders": {"strangle_as_combo": None}}, "orders.strangle_as_combo", "true or false"),
        ({"subscriptions": {"staleness_timeout": -5}}, "subscriptions.staleness_timeout", "> 0"),
        ({"maintenance": {"enabled": "no"}}, "maintenance.enabled", "true or false"),
        ({"maintenance": {"windows": {}}}, "maintenance.windows", "list"),
        ({"maintenance": {"windows": [{"start": 1380}]}}, "maintenance.windows[0].start", "quote"),
        ({"maintenance": {"windows": [{"end": "25:00"}]}}, "maintenance.windows[0].end", "HH:MM"),
        ({"maintenance": {"windows": [{"days": ["monday"]}]}}, "maintenance.windows[0].days", "one of"),
        ({"maintenance": {"windows": [{"days": []}]}}, "maintenance.windows[0].days", "empty"),
        ({"maintenance": {"windows": [{"tz": "Nowhere/City"}]}}, "maintenance.windows[0].tz", "time zone"),
        ({"maintenance": {"windows": [{"when": 1}]}}, "maintenance.windows[0].when", "unknown"),
        ({"logging": {"level": "LOUD"}}, "logging.level", "one of"),
    ],
)
def test_invalid_values_name_the_key(raw, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    assert info.value.key == key
    assert repr(key) in str(info.value)
    assert fragment in str(info.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_config({"port": -1})


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("port: 1\npacing:\n  burst: -3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "pacing.burst" and info.value.source == str(path)
    assert str(path) in str(info.value) and "'pacing.burst'" in str(info.value)


def test_error_in_overrides_is_attributed_to_them(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("port: 4002\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), port=0)
    assert info.value.key == "port" and info.value.source == "keyword overrides"
    with pytest.raises(ConfigError) as info:
        load_config(None, no_such_key=1)
    assert info.value.key == "no_such_key"


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("port: [1, 2\nhost: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "YAML" in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_non_mapping_top_level(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_config(path) == load_config()


def test_unsupported_source_type():
    with pytest.raises(ConfigError):
        load_config(42)  # type: ignore[arg-type]


# --- maintenance windows -------------------------------------------------------------------

# 2024-01-08 is a Monday. New York is UTC-5 in January.
MON_0030_NY = 1704691800  # 2024-01-08 00:30 America/New_York == 05:30 UTC
MON_0200_NY = MON_0030_NY + 90 * 60
SAT_0030_NY = MON_0030_NY - 2 * 86400


def test_default_window_contains_the_daily_reset():
    window = MaintenanceWindow()
    assert window.contains(MON_0030_NY)
    assert not window.contains(MON_0200_NY)
    assert not window.contains(SAT_0030_NY)  # not a reset day


def test_wrapping_window_belongs_to_its_start_day():
    window = MaintenanceWindow(days=("sun",), start="23:00", end="01:00", tz="America/New_York")
    assert window.contains(MON_0030_NY)  # Sunday 23:00 .. Monday 01:00
    assert not window.contains(MON_0030_NY + 86400)  # Tuesday 00:30: Monday is not listed


def test_maintenance_enabled_flag():
    assert MaintenanceSettings().active_window(MON_0030_NY) is None
    enabled = load_config({"maintenance": {"enabled": True}}).maintenance
    assert enabled.active_window(MON_0030_NY) == MaintenanceWindow()
    assert enabled.active_window(MON_0200_NY) is None


def _dotted_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        yield key
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _dotted_keys(hints[f.name], key + ".")


def test_configuration_doc_mentions_every_key():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    keys = list(_dotted_keys(Config))
    keys += [f"breakers.{name}" for name in DEFAULT_BREAKERS]
    keys += [f"maintenance.windows[].{f.name}" for f in dataclasses.fields(MaintenanceWindow)]
    missing = [key for key in keys if f"`{key}`" not in doc]
    assert missing == []
