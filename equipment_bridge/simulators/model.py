"""The seeded machine behaviour that both simulators publish.

A machine advances in fixed simulated ticks of `TICK_SECONDS`; everything random comes from one
`random.Random` per machine seeded with `(seed, machine code)`, so the same seed gives the same
state changes and counts at the same tick numbers, however the wall clock jitters.

Codes shared by both protocols:

- state: 1 RUNNING, 2 IDLE, 3 DOWN, 4 PLANNED_STOP, 5 SETUP (0 is unused)
- reason: 0 none, 1 "Jam" (DOWN), 2 "Material starved" (IDLE), 3 "Break" (PLANNED_STOP),
  4 "Changeover" (SETUP)
- alarm: 0 none, 101 "Motor overload" (OPC UA code "MOTOR_OVERLOAD"),
  102 "Guard open" (OPC UA code "GUARD_OPEN"); raised on some jams at the tick the jam starts,
  cleared at the tick it ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum

TICK_SECONDS = 0.1
"""One simulated tick. `--speed X` makes a tick last TICK_SECONDS / X of wall time."""

MAX_ROLLOVER = 2**32


class MachineState(IntEnum):
    RUNNING = 1
    IDLE = 2
    DOWN = 3
    PLANNED_STOP = 4
    SETUP = 5


class Reason(IntEnum):
    NONE = 0
    JAM = 1
    MATERIAL_STARVED = 2
    BREAK = 3
    CHANGEOVER = 4


REASON_TEXT: dict[Reason, str] = {
    Reason.NONE: "",
    Reason.JAM: "Jam",
    Reason.MATERIAL_STARVED: "Material starved",
    Reason.BREAK: "Break",
    Reason.CHANGEOVER: "Changeover",
}


class Alarm(IntEnum):
    NONE = 0
    MOTOR_OVERLOAD = 101
    GUARD_OPEN = 102


ALARM_CODE: dict[Alarm, str] = {
    Alarm.NONE: "",
    Alarm.MOTOR_OVERLOAD: "MOTOR_OVERLOAD",
    Alarm.GUARD_OPEN: "GUARD_OPEN",
}
ALARM_TEXT: dict[Alarm, str] = {
    Alarm.NONE: "",
    Alarm.MOTOR_OVERLOAD: "Motor overload",
    Alarm.GUARD_OPEN: "Guard open",
}


@dataclass(frozen=True)
class Stop:
    """A way a run ends: the state and reason it goes to, how likely, how long (seconds)."""

    state: MachineState
    reason: Reason
    weight: float
    seconds: tuple[float, float]


@dataclass(frozen=True)
class MachineProfile:
    code: str
    ideal_cycle_seconds: float
    run_seconds: tuple[float, float]
    stops: tuple[Stop, ...]
    ambient_c: float
    running_c: float
    reject_rate: float = 0.02
    pace: tuple[float, float] = (0.85, 0.98)
    """Fraction of the ideal rate a run achieves (drawn per run), so performance is below 1."""
    jam_alarm_probability: float = 0.4
    temperature_tau_seconds: float = 60.0
    temperature_noise_c: float = 0.03


def _stops(jam: tuple[float, float], brk: tuple[float, float]) -> tuple[Stop, ...]:
    return (
        Stop(MachineState.DOWN, Reason.JAM, 0.45, jam),
        Stop(MachineState.IDLE, Reason.MATERIAL_STARVED, 0.25, (1.0, 4.0)),
        Stop(MachineState.PLANNED_STOP, Reason.BREAK, 0.15, brk),
        Stop(MachineState.SETUP, Reason.CHANGEOVER, 0.15, (8.0, 20.0)),
    )


PRESS = MachineProfile(
    code="PRESS-01",
    ideal_cycle_seconds=0.05,
    run_seconds=(10.0, 45.0),
    stops=_stops(jam=(2.0, 6.0), brk=(15.0, 30.0)),
    ambient_c=24.0,
    running_c=38.0,
)
BLENDER = MachineProfile(
    code="BLENDER-01",
    ideal_cycle_seconds=3.0,
    run_seconds=(20.0, 60.0),
    stops=_stops(jam=(3.0, 8.0), brk=(15.0, 30.0)),
    ambient_c=21.0,
    running_c=27.0,
)


@dataclass(frozen=True)
class Snapshot:
    """What a machine shows at one tick. Counters are already rolled over."""

    state: MachineState
    reason: Reason
    good: int
    reject: int
    temperature: float
    """°C rounded to 0.1 (the resolution both servers publish)."""
    alarm: Alarm
    tick: int = field(compare=False)

    @property
    def reason_text(self) -> str:
        return REASON_TEXT[self.reason]

    @property
    def alarm_code(self) -> str:
        return ALARM_CODE[self.alarm]


class Machine:
    """One simulated machine. `step()` advances one tick; nothing here reads the clock."""

    def __init__(self, profile: MachineProfile, *, seed: int, rollover: int = MAX_ROLLOVER) -> None:
        if not 2 <= rollover <= MAX_ROLLOVER:
            raise ValueError(f"rollover must be between 2 and {MAX_ROLLOVER}, not {rollover}")
        self.profile = profile
        self.rollover = rollover
        # A str seed is hashed with SHA-512 by random.seed: stable across runs and processes.
        self._rng = random.Random(f"{seed}:{profile.code}")
        self.tick = 0
        self.state = MachineState.RUNNING
        self.reason = Reason.NONE
        self.alarm = Alarm.NONE
        self.good_total = 0
        self.reject_total = 0
        self._remaining = self._ticks(profile.run_seconds)
        self._pace = self._rng.uniform(*profile.pace)
        self._fraction = 0.0
        self._temperature = profile.ambient_c

    def _ticks(self, seconds: tuple[float, float]) -> int:
        return max(1, round(self._rng.uniform(*seconds) / TICK_SECONDS))

    def step(self) -> bool:
        """Advances one tick; True when the state, reason or alarm changed at this tick.

        The state shown at tick t holds during [t, t+1): what is made and how the temperature
        moves during that tick follows it, and a change takes effect at the end of the tick.
        """
        self.tick += 1
        if self.state is MachineState.RUNNING:
            self._produce()
        self._drift_temperature()
        self._remaining -= 1
        changed = self._remaining <= 0
        if changed:
            self._transition()
        return changed

    def _transition(self) -> None:
        profile = self.profile
        if self.state is MachineState.RUNNING:
            stop = self._rng.choices(profile.stops, weights=[s.weight for s in profile.stops])[0]
            self.state, self.reason = stop.state, stop.reason
            self._remaining = self._ticks(stop.seconds)
            if stop.reason is Reason.JAM and self._rng.random() < profile.jam_alarm_probability:
                self.alarm = self._rng.choice((Alarm.MOTOR_OVERLOAD, Alarm.GUARD_OPEN))
        else:
            self.state, self.reason, self.alarm = MachineState.RUNNING, Reason.NONE, Alarm.NONE
            self._remaining = self._ticks(profile.run_seconds)
            self._pace = self._rng.uniform(*profile.pace)

    def _produce(self) -> None:
        self._fraction += self._pace * TICK_SECONDS / self.profile.ideal_cycle_seconds
        made = int(self._fraction)
        self._fraction -= made
        for _ in range(made):
            if self._rng.random() < self.profile.reject_rate:
                self.reject_total += 1
            else:
                self.good_total += 1

    def _drift_temperature(self) -> None:
        profile = self.profile
        target = profile.running_c if self.state is MachineState.RUNNING else profile.ambient_c
        self._temperature += (target - self._temperature) * TICK_SECONDS / (
            profile.temperature_tau_seconds
        ) + self._rng.gauss(0.0, profile.temperature_noise_c)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            state=self.state,
            reason=self.reason,
            good=self.good_total % self.rollover,
            reject=self.reject_total % self.rollover,
            temperature=round(self._temperature, 1),
            alarm=self.alarm,
            tick=self.tick,
        )
