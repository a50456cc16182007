"""The hardware kind: a device's memory budget and power physics.

A hardware plugin describes one concrete part (its settings default to that part's published
figures; see ``docs/hardware.md`` for every number and its source). It answers two questions:

* how many bytes of RAM qres may use on the device (:meth:`Hardware.memory_budget_bytes`), which
  ``qres profiles check`` compares with what the other plugins of a profile declare;
* how much energy a schedule of CPU and radio states costs (:meth:`Hardware.energy_joules`,
  :meth:`Hardware.duty_cycle`), which the swarm simulator uses to price wake intervals such as
  Calm (4 h), PreStorm (10 min) and Storm (30 s).

Power model: the device's draw is the sum of its CPU component and its radio component, each in
exactly one of two states at any time (``cpu_active``/``cpu_sleep``,
``radio_active``/``radio_sleep``). All schedule arithmetic is exact (``fractions.Fraction`` over
the configured numbers), so a result does not depend on the order or grouping of its terms;
only the final value is rounded once to a float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar

import attrs

from qres.kernel.config import InvalidSetting, boolean, integer, number, one_of
from qres.kernel.errors import QresError
from qres.kernel.plugins import Plugin

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The power states a hardware plugin prices, in the order :meth:`Hardware.states` lists them.
STATES: tuple[str, ...] = ("cpu_active", "cpu_sleep", "radio_active", "radio_sleep")

#: Radio kinds a device may have; ``wifi6`` is the only one whose standard defines target wake time.
RADIOS: tuple[str, ...] = ("none", "wifi4", "wifi5", "wifi6", "ethernet")

#: Most wake instants :meth:`Hardware.wake_times` returns; a longer schedule is surely a mistake
#: (a 30 s interval for a whole year is about a million wakes).
MAX_WAKES = 10_000_000

# Upper bounds that reject typos (an extra zero or two) without limiting real machines.
_MAX_BYTES = 1 << 50  # 1 PiB
_MAX_MW = 10_000_000.0  # 10 kW
_MAX_US = 3_600_000_000  # one hour


def _field_validators() -> dict[str, Callable]:
    """The validator of every hardware setting, in declaration order."""
    return {
        "ram_bytes": integer(1, _MAX_BYTES),
        "reserved_ram_bytes": integer(0, _MAX_BYTES),
        "flash_bytes": integer(0, _MAX_BYTES),
        "eeprom_bytes": integer(0, _MAX_BYTES),
        "word_bits": one_of(8, 16, 32, 64),
        "clock_hz": integer(1, 100_000_000_000),
        "cores": integer(1, 65_536),
        "cpu_active_mw": number(0, _MAX_MW),
        "cpu_sleep_mw": number(0, _MAX_MW),
        "radio_active_mw": number(0, _MAX_MW),
        "radio_sleep_mw": number(0, _MAX_MW),
        "wake_latency_us": integer(0, _MAX_US),
        "radio": one_of(*RADIOS),
        "twt_supported": boolean(),
        "beacon_interval_us": integer(0, _MAX_US),
        "beacon_listen_us": integer(0, _MAX_US),
    }


#: The settings every hardware plugin has. ``beacon_interval_us`` is how often a radio without
#: (or not using) target wake time must wake to hear its access point's beacons (0: never, e.g.
#: no radio or wired Ethernet); ``beacon_listen_us`` is how long it stays on for each beacon.
FIELDS: tuple[str, ...] = tuple(_field_validators())


class _ConfigChecks:
    """Cross-field checks shared by every hardware ``Config`` (attrs calls the post-init hook)."""

    def __attrs_post_init__(self) -> None:
        if self.reserved_ram_bytes >= self.ram_bytes:
            raise InvalidSetting(
                "reserved_ram_bytes",
                self.reserved_ram_bytes,
                f"an integer below ram_bytes ({self.ram_bytes}) so that some RAM is left for qres",
            )
        if self.cpu_sleep_mw > self.cpu_active_mw:
            raise InvalidSetting(
                "cpu_sleep_mw",
                self.cpu_sleep_mw,
                f"a number <= cpu_active_mw ({self.cpu_active_mw})",
            )
        if self.radio_sleep_mw > self.radio_active_mw:
            raise InvalidSetting(
                "radio_sleep_mw",
                self.radio_sleep_mw,
                f"a number <= radio_active_mw ({self.radio_active_mw})",
            )
        if self.radio == "none":
            for name in ("radio_active_mw", "radio_sleep_mw", "beacon_interval_us"):
                if getattr(self, name):
                    raise InvalidSetting(name, getattr(self, name), '0 when radio = "none"')
        if self.twt_supported and self.radio != "wifi6":
            raise InvalidSetting(
                "twt_supported", True, 'false unless radio = "wifi6" (target wake time is 802.11ax)'
            )
        if self.beacon_listen_us > self.beacon_interval_us:
            raise InvalidSetting(
                "beacon_listen_us",
                self.beacon_listen_us,
                f"an integer <= beacon_interval_us ({self.beacon_interval_us})",
            )


def hardware_config(
    class_name: str, validators: Mapping[str, Callable] | None = None, **defaults: Any
) -> type:
    """Build a hardware ``Config`` attrs class whose defaults are one part's figures.

    Every name in :data:`FIELDS` needs a default; ``validators`` replaces the standard validator
    of some fields (e.g. ``ram_bytes`` limited to the sizes a board is sold with).
    """
    missing = [name for name in FIELDS if name not in defaults]
    unknown = [name for name in defaults if name not in FIELDS]
    if missing or unknown:
        raise TypeError(f"{class_name}: missing defaults {missing}, unknown settings {unknown}")
    checks = {**_field_validators(), **(validators or {})}
    fields = {name: attrs.field(default=defaults[name], validator=checks[name]) for name in FIELDS}
    return attrs.make_class(class_name, fields, bases=(_ConfigChecks,), frozen=True)


@attrs.frozen
class DutyCycle:
    """What one wake interval costs: the fractions of time asleep and the average power.

    ``radio_sleep_fraction`` and ``cpu_sleep_fraction`` are in [0, 1]; ``average_mw`` is the mean
    draw over the interval; ``energy_per_interval_j`` is that power times the interval;
    ``beacon_wakes`` is how many beacon listens the radio makes while the node sleeps (0 with
    target wake time); ``twt`` says whether target wake time was used.
    """

    interval_s: float
    awake_s: float
    twt: bool
    beacon_wakes: int
    radio_sleep_fraction: float
    cpu_sleep_fraction: float
    average_mw: float
    energy_per_interval_j: float


def _seconds(value: Any, what: str, where: str) -> Fraction:
    """A non-negative finite duration in seconds as an exact fraction, or a one-line error."""
    ok = isinstance(value, (int, float, Fraction)) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if not ok or value < 0:
        raise QresError(f"{where}: {what} must be a finite number of seconds >= 0, got {value!r}")
    return Fraction(value)


class Hardware(Plugin):
    """Base of hardware plugins: a device's RAM budget, word size, clock and power per state.

    Subclasses set ``name``, ``part`` (the concrete part the defaults describe) and ``Config``
    (made with :func:`hardware_config`). A hardware plugin consumes no memory itself: it *is* the
    budget, so :meth:`memory_bytes` is 0.
    """

    #: The concrete part (chip, board, CPU) whose published figures are the defaults.
    part: ClassVar[str] = ""
    Config: ClassVar[type] = hardware_config(
        "GenericHardwareConfig",
        ram_bytes=64 * KiB,
        reserved_ram_bytes=0,
        flash_bytes=0,
        eeprom_bytes=0,
        word_bits=32,
        clock_hz=1_000_000,
        cores=1,
        cpu_active_mw=0.0,
        cpu_sleep_mw=0.0,
        radio_active_mw=0.0,
        radio_sleep_mw=0.0,
        wake_latency_us=0,
        radio="none",
        twt_supported=False,
        beacon_interval_us=0,
        beacon_listen_us=0,
    )

    @classmethod
    def memory_bytes(cls, config: Any) -> int:
        """0: a hardware plugin is the memory budget, not a consumer of it."""
        return 0

    def _where(self) -> str:
        return f"hardware {self.name!r}"

    def memory_budget_bytes(self) -> int:
        """Bytes of RAM qres may use: the part's RAM minus what the OS/runtime/radio stack takes."""
        return self.config.ram_bytes - self.config.reserved_ram_bytes

    def states(self) -> tuple[str, ...]:
        """The power states this hardware prices (see :data:`STATES`)."""
        return STATES

    def power_mw(self, state: str) -> float:
        """The draw in mW of one component in ``state`` (e.g. ``"radio_sleep"``)."""
        if state not in STATES:
            raise QresError(
                f"{self._where()}: unknown power state {state!r}; states: {', '.join(STATES)}"
            )
        return float(getattr(self.config, f"{state}_mw"))

    def _power(self, state: str) -> Fraction:
        return Fraction(getattr(self.config, f"{state}_mw"))

    def energy_joules(self, seconds_by_state: Mapping[str, float]) -> float:
        """Energy in J of spending the given seconds in each state.

        Components add: ``{"cpu_active": 2, "radio_active": 2, "cpu_sleep": 8,
        "radio_sleep": 8}`` is ten seconds of which two are awake with the radio on.
        """
        if not isinstance(seconds_by_state, Mapping):
            raise QresError(f"{self._where()}: expected a mapping of state -> seconds")
        total_mj = Fraction(0)
        for state, seconds in seconds_by_state.items():
            if state not in STATES:
                raise QresError(
                    f"{self._where()}: unknown power state {state!r}; states: {', '.join(STATES)}"
                )
            total_mj += self._power(state) * _seconds(seconds, state, self._where())
        return float(total_mj / 1000)

    def wake_times(self, start_s: float, end_s: float, interval_s: float) -> tuple[float, ...]:
        """Wake instants ``start_s, start_s + interval_s, ...`` strictly before ``end_s``.

        Each instant is computed exactly from its index, so a long schedule does not drift.
        """
        start = _seconds(start_s, "start_s", self._where())
        end = _seconds(end_s, "end_s", self._where())
        step = _seconds(interval_s, "interval_s", self._where())
        if step == 0:
            raise QresError(f"{self._where()}: interval_s must be > 0 seconds")
        if end <= start:
            return ()
        count = math.ceil((end - start) / step)
        if count > MAX_WAKES:
            raise QresError(
                f"{self._where()}: schedule has {count} wakes (max {MAX_WAKES}); "
                "shorten the span or lengthen interval_s"
            )
        return tuple(float(start + k * step) for k in range(count))

    def duty_cycle(self, interval_s: float, awake_s: float, twt: bool | None = None) -> DutyCycle:
        """Cost of waking every ``interval_s`` seconds for ``awake_s`` seconds of work and radio.

        Each interval: the CPU spends ``wake_latency_us`` waking (CPU active, radio asleep), then
        ``awake_s`` with CPU and radio active, then sleeps. With target wake time (``twt``; by
        default used when the radio supports it) the radio sleeps through the rest of the
        interval; without it, a Wi-Fi radio still wakes every ``beacon_interval_us`` for
        ``beacon_listen_us`` to hear its access point's beacons and stay associated.
        """
        where = self._where()
        cfg = self.config
        interval = _seconds(interval_s, "interval_s", where)
        awake = _seconds(awake_s, "awake_s", where)
        if interval == 0:
            raise QresError(f"{where}: interval_s must be > 0 seconds")
        use_twt = cfg.twt_supported if twt is None else bool(twt)
        if use_twt and not cfg.twt_supported:
            raise QresError(
                f"{where}: radio {cfg.radio!r} has no target wake time; pass twt=False "
                "or pick hardware with a Wi-Fi 6 radio"
            )
        latency = Fraction(cfg.wake_latency_us, 1_000_000)
        asleep = interval - latency - awake
        if asleep < 0:
            raise QresError(
                f"{where}: awake_s ({float(awake)}) plus wake latency ({float(latency)} s) "
                f"exceeds interval_s ({float(interval)}); lengthen the interval"
            )
        beacon_wakes = 0
        if not use_twt and cfg.beacon_interval_us:
            beacon_wakes = math.floor(asleep / Fraction(cfg.beacon_interval_us, 1_000_000))
        listening = beacon_wakes * Fraction(cfg.beacon_listen_us, 1_000_000)
        radio_on = awake + listening
        radio_off = interval - radio_on
        cpu_on = latency + awake
        cpu_off = interval - cpu_on
        energy_mj = (
            self._power("cpu_active") * cpu_on
            + self._power("cpu_sleep") * cpu_off
            + self._power("radio_active") * radio_on
            + self._power("radio_sleep") * radio_off
        )
        return DutyCycle(
            interval_s=float(interval),
            awake_s=float(awake),
            twt=use_twt,
            beacon_wakes=beacon_wakes,
            radio_sleep_fraction=float(radio_off / interval),
            cpu_sleep_fraction=float(cpu_off / interval),
            average_mw=float(energy_mj / interval),
            energy_per_interval_j=float(energy_mj / 1000),
        )
