"""Energy: wake schedules by regime, the hardware plugin's power per state, and each node's
energy pool with harvesting. Vectorised over nodes.

Time: round ``r`` covers ``[r * T, (r + 1) * T)`` seconds, ``T = round_seconds``. A node wakes
every ``interval = base(regime) * (0.5 + 0.5 * reputation)`` seconds (target wake time; base
Calm 4 h, PreStorm 10 min, Storm 30 s by default) and takes part in a round if it woke at least
once in it. Each wake costs ``wake_latency`` of CPU alone, then ``awake_s`` with CPU and radio
on; the bytes a node sends and receives add radio airtime at ``link_bps``. The rest of the
round both components sleep. Power per state comes from the profile's hardware plugin
(:meth:`qres.kinds.hardware.Hardware.power_mw`); without a ``[hardware]`` table every power is 0 and
only the schedule is simulated.

The pool (joules, capped at ``energy_capacity_j``) gains ``harvest_mw`` and pays the round's
energy; a node that cannot pay for one wake sleeps through the round; below
``forced_calm_level`` of capacity it is forced to Calm.
"""

from __future__ import annotations

from typing import Any

from qres.swarm.regimes import CALM, PRESTORM, STORM


class EnergyModel:
    """Wake schedule and energy pool of every node."""

    def __init__(self, n: int, settings: Any, hardware: Any | None):
        import numpy as np

        self.s = settings
        self.hardware = hardware
        p = (lambda state: hardware.power_mw(state)) if hardware is not None else (lambda _: 0.0)
        self.cpu_active, self.cpu_sleep = p("cpu_active"), p("cpu_sleep")
        self.radio_active, self.radio_sleep = p("radio_active"), p("radio_sleep")
        latency = hardware.config.wake_latency_us if hardware is not None else 0
        self.latency_s = latency / 1e6
        self.capacity = settings.energy_capacity_j
        self.pool = np.full(n, settings.energy_initial * settings.energy_capacity_j)
        self.next_wake = np.zeros(n)
        self.base = np.zeros(3)
        self.base[CALM] = settings.wake_calm_s
        self.base[PRESTORM] = settings.wake_prestorm_s
        self.base[STORM] = settings.wake_storm_s
        # Totals over the run, per node: seconds with the radio on, joules spent.
        self.radio_on_s = np.zeros(n)
        self.spent_j = np.zeros(n)
        self.elapsed_s = np.zeros(n)

    @property
    def always_on_mw(self) -> float:
        """Draw of a node that never sleeps: CPU and radio both active."""
        return self.cpu_active + self.radio_active

    def wake_energy_j(self) -> float:
        """Energy of one wake (latency plus ``awake_s`` with CPU and radio on), in J."""
        s = self.s
        mj = self.cpu_active * (self.latency_s + s.awake_s) + self.radio_active * s.awake_s
        return mj / 1000.0

    def intervals(self, regime: Any, reputation: Any) -> Any:
        """Wake interval per node, in seconds: the regime's base scaled by 0.5 + 0.5 x rep."""
        return self.base[regime] * (0.5 + 0.5 * reputation)

    def wakes(self, r: int, regime: Any, reputation: Any, alive: Any) -> Any:
        """How many times each node wakes in round ``r`` (int ``(n,)``); moves the schedule.

        A node that cannot pay for one wake from its pool, or is not ``alive`` (not yet
        joined), does not wake; its schedule restarts when it can.
        """
        import numpy as np

        T = self.s.round_seconds
        start, end = r * T, (r + 1) * T
        interval = self.intervals(regime, reputation)
        nxt = np.maximum(self.next_wake, start)
        can = alive & (self.pool >= self.wake_energy_j())
        due = can & (nxt < end)
        count = np.zeros(self.pool.shape[0], np.int64)
        # wakes at nxt, nxt + interval, ... strictly before the end of the round
        count[due] = np.ceil((end - nxt[due]) / interval[due]).astype(np.int64)
        # Never more wakes than fit in the round back to back.
        per_wake = max(self.s.awake_s + self.latency_s, 1e-9)
        count = np.minimum(count, int(T // per_wake) + 1)
        # The pool may not afford every wake: a node wakes while it can pay.
        affordable = np.floor(self.pool / max(self.wake_energy_j(), 1e-300)).astype(np.int64)
        count = np.minimum(count, affordable) if self.wake_energy_j() > 0 else count
        self.next_wake = np.where(due, nxt + count * interval, np.maximum(self.next_wake, end))
        return count

    def spend(self, wakes: Any, tx_bytes: Any, rx_bytes: Any) -> Any:
        """Pay one round: wakes, radio airtime of the bytes moved, sleep; add harvest.

        Returns the radio-on seconds of each node this round.
        """
        import numpy as np

        s = self.s
        T = s.round_seconds
        airtime = (tx_bytes + rx_bytes) * 8.0 / s.link_bps
        radio_on = np.minimum(wakes * s.awake_s + np.where(wakes > 0, airtime, 0.0), T)
        cpu_on = np.minimum(wakes * (s.awake_s + self.latency_s), T)
        mj = (
            self.cpu_active * cpu_on
            + self.cpu_sleep * (T - cpu_on)
            + self.radio_active * radio_on
            + self.radio_sleep * (T - radio_on)
        )
        joules = mj / 1000.0
        self.pool = np.clip(self.pool - joules + s.harvest_mw * T / 1000.0, 0.0, self.capacity)
        self.radio_on_s += radio_on
        self.spent_j += joules
        self.elapsed_s += T
        return radio_on

    def low(self) -> Any:
        """Nodes whose pool is below the forced-calm level."""
        return self.pool < self.s.forced_calm_level * self.capacity

    def level(self) -> Any:
        """Each node's pool as a fraction of capacity."""
        return self.pool / self.capacity
