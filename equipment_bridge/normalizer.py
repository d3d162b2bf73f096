"""Turns raw observations of one machine into machine events.

- STATE: mapped per device, sent on change only, with the reason read in the same batch.
- COUNTER: deltas of a cumulative counter, with rollover, reset and implausible jumps
  (`counter_delta`); the last raw value is persisted with the events it produced.
- VALUE: absolute deadband plus heartbeat.
- ALARM: raised/cleared edges from a code and/or an active flag.
- Link loss and restore: an ALARM `COMM_LOSS` (never a DOWN state: that would corrupt OEE).

The normalizer does no I/O. `process` returns `Changes` (events, quarantined events and the
persistent per-signal state to write in the same transaction); the caller commits them to the
outbox and then calls `commit`, so the in-memory state only advances with what is on disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from equipment_bridge.config import (
    AlarmText,
    EquipmentState,
    ModbusAlarmSignal,
    ModbusCounterSignal,
    ModbusEquipment,
    ModbusStateSignal,
    ModbusValueSignal,
    OpcUaAlarmSignal,
    OpcUaCounterSignal,
    OpcUaEquipment,
    OpcUaStateSignal,
    OpcUaValueSignal,
    counter_span,
    value_name,
)
from equipment_bridge.events import (
    MachineEvent,
    Observation,
    Quarantined,
    event_id,
    occurred_at,
)

log = logging.getLogger(__name__)

COMM_LOSS = "COMM_LOSS"
COUNTER_ANOMALY = "COUNTER_ANOMALY"
CONFIG_ERROR = "CONFIG_ERROR"
COMM_KEY = "#comm"
# Slack added to the elapsed time when judging a counter jump, so sampling jitter is no anomaly.
PLAUSIBILITY_SLACK_S = 1.0
# An older source timestamp than this before the last one is a device clock reset, not a replay.
CLOCK_RESET = dt.timedelta(hours=1)

StateSignal = OpcUaStateSignal | ModbusStateSignal
CounterSignal = OpcUaCounterSignal | ModbusCounterSignal
ValueSignal = OpcUaValueSignal | ModbusValueSignal
AlarmSignal = OpcUaAlarmSignal | ModbusAlarmSignal
Signal = StateSignal | CounterSignal | ValueSignal | AlarmSignal


def counter_delta(
    prev: int | None, cur: int, span: int, max_plausible: int | None
) -> tuple[int, str]:
    """The increment of a cumulative counter from `prev` to `cur`, and why.

    `span` is where the counter wraps to 0 (2**bits, or a device's rollover value).
    `max_plausible` is the largest increment believable since `prev` (None: no limit).

    - no previous value: 0, BASELINE (the first sample only sets the baseline)
    - `cur >= prev`: the difference, NORMAL
    - `cur < prev` and the way round through the wrap point is plausible: ROLLOVER
      (without a plausibility limit: when `prev` was in the top 10 % of the span)
    - otherwise the device was reset or power-cycled: `cur` counts from 0, RESET
    - any increment above `max_plausible`: 0, ANOMALY (never silently added)
    """
    if prev is None:
        return 0, "BASELINE"
    if cur >= prev:
        delta, why = cur - prev, "NORMAL"
    else:
        wrap = span - prev + cur
        near_top = prev >= span * 0.9 if max_plausible is None else wrap <= max_plausible
        if wrap > 0 and near_top:
            delta, why = wrap, "ROLLOVER"
        else:
            delta, why = cur, "RESET"
    if max_plausible is not None and delta > max_plausible:
        return 0, "ANOMALY"
    return delta, why


@dataclass
class Changes:
    """What one batch produced: to be committed together."""

    events: list[MachineEvent] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.events or self.quarantined or self.state)


@dataclass
class _ValueMemory:
    last_sent: float | None = None
    last_sent_at: dt.datetime | None = None
    last_seen: float | None = None


def _epoch(ts: dt.datetime | None) -> float | None:
    return None if ts is None else ts.timestamp()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _text(raw: Any, mapping: Mapping[int | str, Any] | None) -> Any:
    """A raw reason/alarm code looked up in its map; "" / 0 / None mean "none"."""
    if mapping:
        key: int | str | None = raw
        if key not in mapping:
            number = _as_int(raw)
            key = number if number in mapping else None
        if key is not None:
            return mapping[key]
    if raw is None or raw == "" or raw == 0 or raw is False:
        return None
    return str(raw)


class Normalizer:
    """The event logic of one machine. Not thread-safe: one batch at a time."""

    def __init__(
        self, equipment: OpcUaEquipment | ModbusEquipment, persisted: Mapping[str, dict[str, Any]]
    ) -> None:
        self.code = equipment.code
        self.signals: dict[str, Signal] = dict(equipment.signals)
        self._persisted: dict[str, dict[str, Any]] = {k: dict(v) for k, v in persisted.items()}
        self._pending: dict[str, dict[str, Any]] = {}
        # channel -> (signal name, role)
        self.channels: dict[str, tuple[str, str]] = {}
        for name, sig in self.signals.items():
            if isinstance(sig, OpcUaStateSignal):
                self.channels[name] = (name, "primary")
                if sig.reason_node:
                    self.channels[f"{name}#reason"] = (name, "attr")
            elif isinstance(sig, ModbusStateSignal):
                self.channels[name] = (name, "primary")
                if sig.reason is not None:
                    self.channels[f"{name}#reason"] = (name, "attr")
            elif isinstance(sig, OpcUaAlarmSignal | ModbusAlarmSignal):
                has_active = (
                    sig.active_node is not None
                    if isinstance(sig, OpcUaAlarmSignal)
                    else sig.active is not None
                )
                has_code = (
                    sig.code_node is not None
                    if isinstance(sig, OpcUaAlarmSignal)
                    else sig.code is not None
                )
                if has_active:
                    self.channels[f"{name}#active"] = (name, "primary")
                    if has_code:
                        self.channels[f"{name}#code"] = (name, "attr")
                else:
                    self.channels[f"{name}#code"] = (name, "primary")
            else:
                self.channels[name] = (name, "primary")
        self._last_source: dict[str, tuple[dt.datetime, Any]] = {}
        self._last_sample: dict[str, float] = {}
        self._attr: dict[str, Any] = {}
        self._values: dict[str, _ValueMemory] = {}
        self._warned: set[tuple[str, Any]] = set()
        self._config_errors: set[str] = set()
        self.connected = False

    # ------------------------------------------------------------ persistent state

    def _row(self, key: str) -> dict[str, Any] | None:
        row = self._pending.get(key)
        return row if row is not None else self._persisted.get(key)

    def _put(self, key: str, row: dict[str, Any]) -> None:
        self._pending[key] = row

    def _finish(self, changes: Changes) -> Changes:
        changes.state = dict(self._pending)
        self._pending = {}
        return changes

    def commit(self, changes: Changes) -> None:
        """Adopts the persistent state of changes that are now on disk."""
        self._persisted.update(changes.state)

    # ------------------------------------------------------------ batches

    def process(self, batch: Sequence[Observation]) -> Changes:
        """Events from one poll or one notification batch, in order.

        Devices write a state and its reason (an alarm flag and its code) as two variables,
        delivered as two notifications in either order; a batch may hold several changes of
        one machine (a backlog after a reconnect). `_pair` gives each reason to its state.
        """
        self._pending = {}
        admitted: list[tuple[Observation, str, str]] = []
        for obs in batch:
            target = self.channels.get(obs.channel)
            if target is None:
                continue
            kept = self._admit(obs)
            if kept is not None:
                admitted.append((kept, *target))
        plan = _pair(admitted)
        changes = Changes()
        for obs, attr in plan:
            name, role = self.channels[obs.channel]
            sig = self.signals[name]
            if isinstance(sig, OpcUaStateSignal | ModbusStateSignal):
                if role == "primary":
                    self._state(changes, name, sig, obs, attr)
                else:
                    self._reason_only(changes, name, sig, obs)
            elif isinstance(sig, OpcUaCounterSignal | ModbusCounterSignal):
                self._counter(changes, name, sig, obs)
            elif isinstance(sig, OpcUaValueSignal | ModbusValueSignal):
                self._value(changes, name, sig, obs)
            elif role == "primary":
                self._alarm(changes, name, sig, obs, attr)
            else:
                self._alarm_code_only(changes, name, sig, obs)
        return self._finish(changes)

    def _admit(self, obs: Observation) -> Observation | None:
        """None for a notification already processed: an older source timestamp, or the same
        one with the same value (a replay after a reconnect; a coarse device clock may stamp
        two different values alike). A source clock that went back by more than CLOCK_RESET
        (a PLC that lost its time) is not a replay: kept, on the bridge's clock."""
        if obs.source_ts is None:
            return obs
        last, last_value = self._last_source.get(obs.channel, (None, None))
        if last is None:
            name, _ = self.channels[obs.channel]
            if isinstance(self.signals[name], OpcUaCounterSignal | ModbusCounterSignal):
                row = self._row(name)
                if row is not None and row.get("src") is not None:
                    last = dt.datetime.fromtimestamp(row["src"], dt.UTC)
                    last_value = row.get("raw")
        if last is not None and (
            obs.source_ts < last or (obs.source_ts == last and obs.value == last_value)
        ):
            if obs.source_ts > last - CLOCK_RESET:
                return None
            self._warn_once(
                (obs.channel, "clock"),
                "%s: %s's source timestamp went back from %s to %s: the device clock was "
                "reset? Using the bridge's clock",
                self.code,
                obs.channel,
                last.isoformat(),
                obs.source_ts.isoformat(),
            )
            self._last_source[obs.channel] = (obs.source_ts, obs.value)
            return replace(obs, source_ts=None)
        self._last_source[obs.channel] = (obs.source_ts, obs.value)
        return obs

    def _warn_once(self, key: tuple[str, Any], message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # ------------------------------------------------------------ STATE

    def _reason_of(self, sig: StateSignal, raw: Any) -> str | None:
        if isinstance(sig, OpcUaStateSignal):
            mapping = sig.reason_map
        else:
            mapping = sig.reason.map if sig.reason is not None else None
        text = _text(raw, mapping)
        return None if text is None or text == "" else str(text)

    def _state(
        self,
        changes: Changes,
        name: str,
        sig: StateSignal,
        obs: Observation,
        attr: Observation | None,
    ) -> None:
        if attr is not None:
            self._attr[name] = self._reason_of(sig, attr.value)
        code = _as_int(obs.value)
        state = sig.map.get(code) if code is not None else None
        if state is None:
            self._warn_once(
                (name, obs.value),
                "%s: state code %r of signal %s is not in its map; ignored",
                self.code,
                obs.value,
                name,
            )
            return
        reason = self._attr.get(name)
        prev = self._row(name)
        if prev is not None and prev.get("state") == state.value and prev.get("reason") == reason:
            return
        self._emit_state(changes, name, obs, state.value, reason, code)

    def _reason_only(self, changes: Changes, name: str, sig: StateSignal, obs: Observation) -> None:
        reason = self._reason_of(sig, obs.value)
        self._attr[name] = reason
        prev = self._row(name)
        if prev is None or prev.get("state") in (None, EquipmentState.RUNNING.value):
            return
        # The stop is re-classified (its reason came late, or changed). A reason cleared
        # while still stopped is not: devices clear it just before they restart.
        if reason is not None and prev.get("reason") != reason:
            self._emit_state(changes, name, obs, prev["state"], reason, obs.value)

    def _emit_state(
        self,
        changes: Changes,
        name: str,
        obs: Observation,
        state: str,
        reason: str | None,
        raw: Any,
    ) -> None:
        changes.events.append(
            MachineEvent(
                event_id(self.code, name, "STATE", obs.source_ts, (raw, reason)),
                self.code,
                "STATE",
                occurred_at(obs),
                {"state": state, "reason": reason},
            )
        )
        self._put(name, {"state": state, "reason": reason})

    # ------------------------------------------------------------ COUNTER

    def _counter(self, changes: Changes, name: str, sig: CounterSignal, obs: Observation) -> None:
        cur = _as_int(obs.value)
        if cur is None or cur < 0:
            self._warn_once(
                (name, "bad"), "%s: counter %s read %r; ignored", self.code, name, obs.value
            )
            return
        span = counter_span(sig)
        prev = self._row(name)
        sample_at = occurred_at(obs)
        prev_raw = prev.get("raw") if prev else None
        # Since the previous sample (this run), else since the persisted value last changed.
        last_at = self._last_sample.get(name, prev["ts"] if prev else None)
        elapsed = max(0.0, sample_at.timestamp() - last_at) if last_at is not None else 0.0
        self._last_sample[name] = sample_at.timestamp()
        limit = (
            None
            if sig.max_per_s is None
            else math.ceil(sig.max_per_s * (elapsed + PLAUSIBILITY_SLACK_S))
        )
        delta, why = counter_delta(prev_raw, cur, span, limit)
        anomaly_open = bool(prev and prev.get("anomaly"))
        row = {
            "raw": cur,
            "ts": sample_at.timestamp(),
            "src": obs.source_ts.timestamp() if obs.source_ts else (prev or {}).get("src"),
            "anomaly": anomaly_open,
        }
        at = occurred_at(obs)
        if why == "ANOMALY":
            jump = cur - prev_raw if prev_raw is not None and cur >= prev_raw else cur
            log.error(
                "%s: counter %s jumped from %s to %s in %.1f s (plausible at most %s): "
                "quarantined, not counted",
                self.code,
                name,
                prev_raw,
                cur,
                elapsed,
                limit,
            )
            message = (
                f"counter {sig.counter} ({name}) jumped from {prev_raw} to {cur} in "
                f"{elapsed:.1f} s; at most {limit} is plausible"
            )
            changes.quarantined.append(
                Quarantined(
                    MachineEvent(
                        event_id(self.code, name, "COUNTER", obs.source_ts, cur),
                        self.code,
                        "COUNTER",
                        at,
                        {"counter": sig.counter, "increment": jump},
                    ),
                    COUNTER_ANOMALY,
                    message,
                )
            )
            if not anomaly_open:
                changes.events.append(
                    MachineEvent(
                        event_id(self.code, name, "ANOMALY", obs.source_ts, cur),
                        self.code,
                        "ALARM",
                        at,
                        {"alarmCode": COUNTER_ANOMALY, "alarmActive": True, "message": message},
                    )
                )
            row["anomaly"] = True
            self._put(name, row)
            return
        if why == "RESET":
            log.warning(
                "%s: counter %s went back from %s to %s: taken as a reset to 0",
                self.code,
                name,
                prev_raw,
                cur,
            )
        if delta > 0:
            changes.events.append(
                MachineEvent(
                    event_id(self.code, name, "COUNTER", obs.source_ts, cur),
                    self.code,
                    "COUNTER",
                    at,
                    {"counter": sig.counter, "increment": delta},
                )
            )
        if anomaly_open and why != "BASELINE":
            row["anomaly"] = False
            changes.events.append(
                MachineEvent(
                    event_id(self.code, name, "ANOMALY-CLEAR", obs.source_ts, cur),
                    self.code,
                    "ALARM",
                    at,
                    {"alarmCode": COUNTER_ANOMALY, "alarmActive": False},
                )
            )
        if prev is None or prev.get("raw") != cur or row["anomaly"] != anomaly_open:
            self._put(name, row)

    # ------------------------------------------------------------ VALUE

    def _value(self, changes: Changes, name: str, sig: ValueSignal, obs: Observation) -> None:
        raw = obs.value
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self._warn_once((name, "type"), "%s: value %s read %r; ignored", self.code, name, raw)
            return
        value = float(raw) * sig.scale + sig.offset
        if not math.isfinite(value):
            return
        memory = self._values.setdefault(name, _ValueMemory())
        memory.last_seen = value
        if memory.last_sent is not None:
            moved = abs(value - memory.last_sent)
            if sig.deadband is None:
                if moved == 0:
                    return
            elif moved < sig.deadband.absolute:
                return
        self._emit_value(
            changes,
            name,
            sig,
            value,
            occurred_at(obs),
            event_id(self.code, name, "VALUE", obs.source_ts, raw),
        )

    def _emit_value(
        self,
        changes: Changes,
        name: str,
        sig: ValueSignal,
        value: float,
        at: dt.datetime,
        eid: str,
    ) -> None:
        memory = self._values.setdefault(name, _ValueMemory())
        changes.events.append(
            MachineEvent(
                eid,
                self.code,
                "VALUE",
                at,
                {"name": value_name(name, sig), "value": value, "unit": sig.unit},
            )
        )
        memory.last_sent = value
        memory.last_sent_at = at

    def tick(self, now: dt.datetime) -> Changes:
        """Heartbeats: a VALUE not sent for `heartbeat_s` is sent again (while connected)."""
        self._pending = {}
        changes = Changes()
        if not self.connected:
            return changes
        for name, sig in self.signals.items():
            if not isinstance(sig, OpcUaValueSignal | ModbusValueSignal) or not sig.heartbeat_s:
                continue
            memory = self._values.get(name)
            if memory is None or memory.last_seen is None or memory.last_sent_at is None:
                continue
            if (now - memory.last_sent_at).total_seconds() >= sig.heartbeat_s:
                self._emit_value(
                    changes,
                    name,
                    sig,
                    memory.last_seen,
                    now,
                    event_id(self.code, name, "HEARTBEAT", None, None),
                )
        return self._finish(changes)

    # ------------------------------------------------------------ ALARM

    def _alarm_text(self, sig: AlarmSignal, raw: Any) -> tuple[str | None, str | None]:
        text = _text(raw, sig.map)
        if text is None:
            return None, None
        if isinstance(text, AlarmText):
            return text.code, text.message
        if sig.map and (raw in sig.map or _as_int(raw) in sig.map):
            return str(raw), str(text)
        return str(text), None

    def _alarm(
        self,
        changes: Changes,
        name: str,
        sig: AlarmSignal,
        obs: Observation,
        attr: Observation | None,
    ) -> None:
        if obs.channel.endswith("#active"):
            if attr is not None:
                self._attr[name] = self._alarm_text(sig, attr.value)
            active = bool(obs.value)
            code, message = self._attr.get(name, (None, None))
        else:
            code, message = self._alarm_text(sig, obs.value)
            active = code is not None
        prev = self._row(name) or {"active": False, "code": None}
        if active and not prev["active"]:
            self._raise(changes, name, sig, obs, code, message)
        elif not active and prev["active"]:
            self._clear(changes, name, obs, prev["code"])
            self._put(name, {"active": False, "code": None})
        elif active and code is not None and code != prev["code"]:
            self._clear(changes, name, obs, prev["code"])
            self._raise(changes, name, sig, obs, code, message)

    def _alarm_code_only(
        self, changes: Changes, name: str, sig: AlarmSignal, obs: Observation
    ) -> None:
        code, message = self._alarm_text(sig, obs.value)
        self._attr[name] = (code, message)
        prev = self._row(name)
        if prev and prev["active"] and code is not None and code != prev["code"]:
            self._clear(changes, name, obs, prev["code"])
            self._raise(changes, name, sig, obs, code, message)

    def _raise(
        self,
        changes: Changes,
        name: str,
        sig: AlarmSignal,
        obs: Observation,
        code: str | None,
        message: str | None,
    ) -> None:
        effective = code or sig.default_code or name.upper()
        changes.events.append(
            MachineEvent(
                event_id(self.code, name, f"RAISE|{effective}", obs.source_ts, obs.value),
                self.code,
                "ALARM",
                occurred_at(obs),
                {"alarmCode": effective, "alarmActive": True, "message": message},
            )
        )
        self._put(name, {"active": True, "code": effective})

    def _clear(self, changes: Changes, name: str, obs: Observation, code: str) -> None:
        changes.events.append(
            MachineEvent(
                event_id(self.code, name, f"CLEAR|{code}", obs.source_ts, obs.value),
                self.code,
                "ALARM",
                occurred_at(obs),
                {"alarmCode": code, "alarmActive": False},
            )
        )

    # ------------------------------------------------------------ link and config

    def link(self, up: bool, now: dt.datetime, detail: str = "") -> Changes:
        """Connection restored (`up`) or lost: COMM_LOSS raised or cleared, once per edge
        (the edge is persisted, so a restart neither repeats nor forgets it)."""
        self.connected = up
        self._pending = {}
        changes = Changes()
        lost = bool((self._row(COMM_KEY) or {}).get("lost"))
        if up == (not lost):
            return changes
        if not up:
            log.warning("%s: connection lost: %s", self.code, detail or "no answer")
        else:
            log.info("%s: connection restored", self.code)
        changes.events.append(
            MachineEvent(
                event_id(self.code, COMM_KEY, "", None, None),
                self.code,
                "ALARM",
                now,
                {
                    "alarmCode": COMM_LOSS,
                    "alarmActive": not up,
                    "message": (detail[:500] or "no answer") if not up else None,
                },
            )
        )
        self._put(COMM_KEY, {"lost": not up})
        return self._finish(changes)

    def config_error(self, signal: str, detail: str, now: dt.datetime) -> Changes:
        """A signal the device does not have (bad node id / register): one ALARM per run."""
        changes = Changes()
        if signal in self._config_errors:
            return changes
        self._config_errors.add(signal)
        log.error("%s: signal %s cannot be read: %s", self.code, signal, detail)
        changes.events.append(
            MachineEvent(
                event_id(self.code, signal, "CONFIG", None, None),
                self.code,
                "ALARM",
                now,
                {
                    "alarmCode": CONFIG_ERROR,
                    "alarmActive": True,
                    "message": f"signal {signal}: {detail}"[:2000],
                },
            )
        )
        return changes


# A reason (alarm code) and its state (alarm flag) are written together; one further apart than
# this from every state of the batch is a change of its own (a stop re-classified).
PAIR_WINDOW = dt.timedelta(seconds=1)


def _pair(
    items: Sequence[tuple[Observation, str, str]],
) -> list[tuple[Observation, Observation | None]]:
    """The batch as (observation, its secondary) in order; a secondary (reason, alarm code)
    goes with the nearer of the states before and after it, by source timestamp, then by
    position, preferring the state after it (devices mostly write the reason first); the
    nearest pair wins where two secondaries want one state. A secondary left over stands on
    its own, where it came."""
    n = len(items)
    before: list[int | None] = [None] * n
    after: list[int | None] = [None] * n
    last: dict[str, int] = {}
    for i, (_, name, role) in enumerate(items):
        if role == "primary":
            last[name] = i
        else:
            before[i] = last.get(name)
    last = {}
    for i in range(n - 1, -1, -1):
        _, name, role = items[i]
        if role == "primary":
            last[name] = i
        else:
            after[i] = last.get(name)
    wishes: list[tuple[tuple[float, int, int], int, int]] = []
    for i, (obs, _, role) in enumerate(items):
        if role == "primary":
            continue
        for j, later in ((after[i], 0), (before[i], 1)):
            if j is None:
                continue
            other = items[j][0]
            seconds = 0.0
            if obs.source_ts is not None and other.source_ts is not None:
                gap = abs(obs.source_ts - other.source_ts)
                if gap > PAIR_WINDOW:
                    continue
                seconds = gap.total_seconds()
            wishes.append(((seconds, abs(i - j), later), i, j))
    wishes.sort()
    partner: dict[int, int] = {}
    taken: set[int] = set()
    for _, i, j in wishes:
        if i not in taken and j not in partner:
            partner[j] = i
            taken.add(i)
    plan: list[tuple[Observation, Observation | None]] = []
    for i, (obs, _, role) in enumerate(items):
        if role == "primary":
            k = partner.get(i)
            plan.append((obs, items[k][0] if k is not None else None))
        elif i not in taken:
            plan.append((obs, None))
    return plan
