"""Hardware plugins: registration, configs, budgets, power maths, errors and the device profiles."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qres.kernel import plugins
from qres.kernel.config import Location
from qres.kernel.errors import ProfileError, QresError
from qres.kinds.hardware import FIELDS, MAX_WAKES, STATES, GiB, Hardware

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

NAMES = ("esp32-c6", "arduino-mega", "cortex-a55", "rpi4", "x86-server")
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
DEVICE_PROFILES = ("edge", "esp32", "arduino-mega", "cortex-a55", "rpi4", "server")


def make(name: str, **settings_) -> Hardware:
    """A hardware plugin built the way a profile builds it."""
    return plugins.create("hardware", {"use": name, **settings_}, Location("t.toml", "hardware"))


def simple(**overrides) -> Hardware:
    """An ESP32-C6 with round power figures, so expected values are easy to compute by hand."""
    base = {
        "cpu_active_mw": 100,
        "cpu_sleep_mw": 1,
        "radio_active_mw": 200,
        "radio_sleep_mw": 10,
        "wake_latency_us": 0,
        "beacon_interval_us": 100_000,
        "beacon_listen_us": 1_000,
    }
    return make("esp32-c6", **{**base, **overrides})


# --- registration and configs -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_device_registers_as_hardware(name):
    cls = plugins.get_plugin("hardware", name)
    assert issubclass(cls, Hardware)
    assert cls.name == name
    assert cls.part  # the concrete part the defaults describe
    assert plugins.registry()["hardware"][name].package == "qres"


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_plain_data_and_json(name):
    hw = plugins.get_plugin("hardware", name)()
    table = hw.get_config()
    assert table["use"] == name
    assert set(table) == {"use", *FIELDS}
    again = type(hw).from_config(json.loads(json.dumps(table)))
    assert again.config == hw.config
    assert again.get_config() == table


@pytest.mark.parametrize("name", NAMES)
def test_budget_is_positive_below_ram_and_not_a_consumer(name):
    hw = plugins.get_plugin("hardware", name)()
    budget = hw.memory_budget_bytes()
    assert 0 < budget <= hw.config.ram_bytes
    assert budget == hw.config.ram_bytes - hw.config.reserved_ram_bytes
    assert type(hw).memory_bytes(hw.config) == 0


@pytest.mark.parametrize("name", NAMES)
def test_sleep_draws_less_than_active(name):
    hw = plugins.get_plugin("hardware", name)()
    assert hw.states() == STATES
    assert 0 <= hw.power_mw("cpu_sleep") < hw.power_mw("cpu_active")
    assert 0 <= hw.power_mw("radio_sleep") <= hw.power_mw("radio_active")


def test_published_figures_are_pinned():
    esp = make("esp32-c6")
    assert esp.config.ram_bytes == 512 * 1024
    assert esp.config.clock_hz == 160_000_000 and esp.config.word_bits == 32
    assert (esp.power_mw("cpu_active"), esp.power_mw("radio_active")) == (120.0, 230.0)
    assert esp.power_mw("radio_sleep") == 35.0
    assert esp.config.twt_supported and esp.config.radio == "wifi6"
    mega = make("arduino-mega")
    assert (mega.config.ram_bytes, mega.config.flash_bytes) == (8192, 262144)
    assert (mega.config.eeprom_bytes, mega.config.word_bits) == (4096, 8)
    assert mega.config.clock_hz == 16_000_000 and mega.config.radio == "none"
    assert mega.memory_budget_bytes() == 6144
    pi = make("rpi4")
    assert (pi.config.cores, pi.config.word_bits, pi.config.clock_hz) == (4, 64, 1_500_000_000)
    assert pi.power_mw("cpu_active") == 3000.0  # 600 mA x 5 V
    a55 = make("cortex-a55")
    assert (a55.config.cores, a55.config.clock_hz) == (4, 1_800_000_000)
    server = make("x86-server")
    assert (server.config.cores, server.power_mw("cpu_active")) == (16, 155_000.0)


def test_rpi4_ram_variant_is_selectable():
    assert make("rpi4", ram_bytes=8 * GiB).memory_budget_bytes() == 8 * GiB - 256 * 1024 * 1024
    assert make("rpi4", ram_bytes=1 * GiB).config.ram_bytes == GiB


# --- energy and duty-cycle maths ----------------------------------------------------------


def test_energy_adds_components_in_joules():
    hw = make("esp32-c6")
    # 2 s CPU at 120 mW + 1.5 s radio at 230 mW = 240 mJ + 345 mJ.
    assert hw.energy_joules({"cpu_active": 2, "radio_active": 1.5}) == pytest.approx(0.585)
    assert hw.energy_joules({}) == 0.0
    mega = make("arduino-mega")
    # One hour powered down at 0.075 mW = 270 mJ.
    assert mega.energy_joules({"cpu_sleep": 3600}) == pytest.approx(0.27)


def test_energy_does_not_depend_on_the_order_of_states():
    hw = make("esp32-c6")
    parts = {"cpu_active": 0.1, "cpu_sleep": 1e7 + 0.3, "radio_active": 0.7, "radio_sleep": 2.2}
    forward = hw.energy_joules(parts)
    backward = hw.energy_joules(dict(reversed(list(parts.items()))))
    assert forward == backward


def test_duty_cycle_with_target_wake_time_matches_hand_computation():
    hw = simple()
    dc = hw.duty_cycle(100, 1)
    # CPU: 100 mW x 1 s + 1 mW x 99 s = 199 mJ; radio: 200 x 1 + 10 x 99 = 1190 mJ.
    assert dc.twt is True and dc.beacon_wakes == 0
    assert dc.energy_per_interval_j == pytest.approx(1.389)
    assert dc.average_mw == pytest.approx(13.89)
    assert dc.radio_sleep_fraction == pytest.approx(0.99)
    assert dc.cpu_sleep_fraction == pytest.approx(0.99)


def test_duty_cycle_without_twt_wakes_for_beacons():
    hw = simple()
    dc = hw.duty_cycle(100, 1, twt=False)
    # 99 s asleep / 0.1 s beacons = 990 listens of 1 ms: the radio is on 1.99 s.
    assert dc.twt is False and dc.beacon_wakes == 990
    assert dc.radio_sleep_fraction == pytest.approx(0.9801)
    # CPU 199 mJ + radio 200 x 1.99 + 10 x 98.01 = 199 + 1378.1 mJ.
    assert dc.average_mw == pytest.approx(15.771)
    assert dc.average_mw > hw.duty_cycle(100, 1).average_mw


def test_wake_latency_keeps_the_cpu_on_but_not_the_radio():
    dc = simple(wake_latency_us=500_000).duty_cycle(100, 1)
    # CPU on 1.5 s: 150 + 98.5 = 248.5 mJ; radio unchanged: 1190 mJ.
    assert dc.average_mw == pytest.approx(14.385)
    assert dc.cpu_sleep_fraction == pytest.approx(0.985)
    assert dc.radio_sleep_fraction == pytest.approx(0.99)


def test_swarm_wake_intervals_cost_more_the_more_often_a_node_wakes():
    hw = make("esp32-c6")
    calm, prestorm, storm = (hw.duty_cycle(s, 0.5).average_mw for s in (4 * 3600, 600, 30))
    assert calm < prestorm < storm
    # Always between the all-asleep and the all-awake draw.
    floor = hw.power_mw("cpu_sleep") + hw.power_mw("radio_sleep")
    ceiling = hw.power_mw("cpu_active") + hw.power_mw("radio_active")
    assert floor < calm and storm < ceiling


def test_device_without_radio_spends_nothing_on_it():
    mega = make("arduino-mega")
    dc = mega.duty_cycle(60, 0.25)
    assert dc.beacon_wakes == 0 and dc.twt is False
    assert dc.energy_per_interval_j == pytest.approx(
        mega.energy_joules({"cpu_active": 0.25 + 0.001024, "cpu_sleep": 60 - 0.25 - 0.001024})
    )


def test_wake_times_are_exact_and_end_exclusive():
    hw = make("esp32-c6")
    assert hw.wake_times(0, 100, 30) == (0.0, 30.0, 60.0, 90.0)
    assert hw.wake_times(0, 90, 30) == (0.0, 30.0, 60.0)
    assert hw.wake_times(10, 10, 5) == ()
    times = hw.wake_times(0, 1, 0.1)
    assert len(times) == 10
    # Computed from the index, not by repeated addition: no drift over a long schedule.
    long = hw.wake_times(0, 4 * 3600, 0.1)
    assert long[-1] == float(143_999 * Fraction(0.1))


@settings(max_examples=60, deadline=None)
@given(
    interval=st.floats(min_value=0.01, max_value=86_400, allow_nan=False),
    share=st.floats(min_value=0, max_value=1, allow_nan=False),
    twt=st.booleans(),
)
def test_duty_cycle_is_bounded_by_the_state_powers(interval, share, twt):
    hw = make("esp32-c6")
    # Shrink a hair so float rounding of the sum cannot exceed the interval in exact maths.
    awake = (interval - hw.config.wake_latency_us / 1e6) * share * (1 - 1e-9)
    if awake < 0:
        return
    dc = hw.duty_cycle(interval, awake, twt=twt)
    assert 0 <= dc.radio_sleep_fraction <= 1 and 0 <= dc.cpu_sleep_fraction <= 1
    floor = hw.power_mw("cpu_sleep") + hw.power_mw("radio_sleep")
    ceiling = hw.power_mw("cpu_active") + hw.power_mw("radio_active")
    assert floor * (1 - 1e-12) <= dc.average_mw <= ceiling * (1 + 1e-12)
    assert dc.energy_per_interval_j == pytest.approx(dc.average_mw * interval / 1000)


# --- errors -------------------------------------------------------------------------------


def test_unknown_state_is_a_clear_error():
    hw = make("rpi4")
    with pytest.raises(QresError, match="unknown power state 'gpu'.*cpu_active"):
        hw.power_mw("gpu")
    with pytest.raises(QresError, match="unknown power state 'radio_tx'"):
        hw.energy_joules({"radio_tx": 1})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda hw: hw.energy_joules({"cpu_active": -1}), "cpu_active must be a finite"),
        (lambda hw: hw.energy_joules({"cpu_active": float("inf")}), "finite"),
        (lambda hw: hw.energy_joules({"cpu_active": True}), "finite"),
        (lambda hw: hw.energy_joules([("cpu_active", 1)]), "mapping"),
        (lambda hw: hw.duty_cycle(10, 11), "exceeds interval_s"),
        (lambda hw: hw.duty_cycle(0, 0), "interval_s must be > 0"),
        (lambda hw: hw.wake_times(0, 10, 0), "interval_s must be > 0"),
        (lambda hw: hw.wake_times(0, 1e9, 1), f"max {MAX_WAKES}"),
    ],
)
def test_bad_arguments_raise_qres_errors(call, message):
    with pytest.raises(QresError, match=message):
        call(make("esp32-c6"))


def test_target_wake_time_needs_a_wifi6_radio():
    with pytest.raises(QresError, match="no target wake time"):
        make("rpi4").duty_cycle(30, 1, twt=True)
    assert make("rpi4").duty_cycle(30, 1).twt is False


@pytest.mark.parametrize(
    ("name", "settings_", "key"),
    [
        ("esp32-c6", {"reserved_ram_bytes": 512 * 1024}, "hardware.reserved_ram_bytes"),
        ("esp32-c6", {"word_bits": 12}, "hardware.word_bits"),
        ("esp32-c6", {"ram_bytes": "512K"}, "hardware.ram_bytes"),
        ("esp32-c6", {"clock_hz": True}, "hardware.clock_hz"),
        ("esp32-c6", {"cpu_active_mw": -1}, "hardware.cpu_active_mw"),
        ("esp32-c6", {"cpu_sleep_mw": 500}, "hardware.cpu_sleep_mw"),
        ("esp32-c6", {"radio": "lora"}, "hardware.radio"),
        ("esp32-c6", {"beacon_listen_us": 200_000}, "hardware.beacon_listen_us"),
        ("rpi4", {"ram_bytes": 3 * GiB}, "hardware.ram_bytes"),
        ("rpi4", {"twt_supported": True}, "hardware.twt_supported"),
        ("arduino-mega", {"radio_active_mw": 50}, "hardware.radio_active_mw"),
        ("arduino-mega", {"sram": 8192}, "hardware.sram"),
    ],
)
def test_bad_settings_are_profile_errors_naming_the_key(name, settings_, key):
    with pytest.raises(ProfileError) as info:
        make(name, **settings_)
    message = str(info.value)
    assert message.startswith(f"t.toml: {key}")
    assert "\n" not in message
    assert info.value.exit_code == 3


# --- the device profiles ------------------------------------------------------------------


@pytest.mark.parametrize("stem", DEVICE_PROFILES)
def test_device_profile_parses_and_has_the_profile_keys(stem):
    data = tomllib.loads((PROFILES_DIR / f"{stem}.toml").read_text(encoding="utf-8"))
    meta = data["profile"]
    assert list(data)[0] == "profile"  # [profile] heads the file
    assert meta["name"] == stem
    assert isinstance(meta["description"], str) and meta["description"]
    if "extends" in meta:
        assert (PROFILES_DIR / f"{meta['extends']}.toml").is_file()
    if "hardware" in data:
        assert list(data)[1] == "hardware"  # then [hardware], before the lead's sections
        hw = plugins.create("hardware", data["hardware"], Location(f"{stem}.toml", "hardware"))
        assert hw.memory_budget_bytes() > 0


def test_device_profiles_name_the_expected_hardware():
    expected = {
        "esp32": "esp32-c6",
        "arduino-mega": "arduino-mega",
        "cortex-a55": "cortex-a55",
        "rpi4": "rpi4",
        "server": "x86-server",
    }
    for stem, use in expected.items():
        data = tomllib.loads((PROFILES_DIR / f"{stem}.toml").read_text(encoding="utf-8"))
        assert data["hardware"]["use"] == use
    edge = tomllib.loads((PROFILES_DIR / "edge.toml").read_text(encoding="utf-8"))
    assert "hardware" not in edge  # the base names no part: its budget is unknown
    for stem in ("esp32", "arduino-mega", "cortex-a55", "rpi4"):
        data = tomllib.loads((PROFILES_DIR / f"{stem}.toml").read_text(encoding="utf-8"))
        assert data["profile"]["extends"] == "edge"
