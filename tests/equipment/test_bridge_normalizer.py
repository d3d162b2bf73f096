"""The bridge's event logic: counter deltas, state changes with reasons, deadband and
heartbeat, alarm edges, link loss. Pure functions and objects: no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from equipment_bridge.config import ModbusEquipment, OpcUaEquipment, parse_config
from equipment_bridge.events import Observation
from equipment_bridge.normalizer import Changes, Normalizer, counter_delta

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def equipment(signals: dict[str, Any], protocol: str = "modbus_tcp") -> Any:
    eq: dict[str, Any] = {"code": "M-1", "protocol": protocol, "signals": signals}
    if protocol == "modbus_tcp":
        eq["host"] = "127.0.0.1"
    else:
        eq["endpoint"] = "opc.tcp://127.0.0.1:4840/x"
    config = parse_config(
        {
            "bridge": {
                "id": "t",
                "outbox": {"path": "x.sqlite"},
                "mes": {"url": "http://127.0.0.1/graphql", "token_env": "T"},
            },
            "equipment": [eq],
        },
        {},
    )
    machine = config.equipment[0]
    assert isinstance(machine, ModbusEquipment | OpcUaEquipment)
    return machine


class Machine:
    """A normaliser whose changes are 'committed' at once, like the pipeline does."""

    def __init__(self, signals: dict[str, Any], protocol: str = "modbus_tcp") -> None:
        self.eq = equipment(signals, protocol)
        self.disk: dict[str, dict[str, Any]] = {}
        self.norm = Normalizer(self.eq, self.disk)
        self.quarantined: list[Any] = []

    def _commit(self, changes: Changes) -> list[dict[str, Any]]:
        self.norm.commit(changes)
        self.disk.update(changes.state)
        self.quarantined += changes.quarantined
        return [e.body() for e in changes.events]

    def feed(self, t: float, source: bool = False, **values: Any) -> list[dict[str, Any]]:
        batch = [
            Observation(channel.replace("__", "#"), v, at(t), at(t) if source else None)
            for channel, v in values.items()
        ]
        return self._commit(self.norm.process(batch))

    def batch(self, observations: list[Observation]) -> list[dict[str, Any]]:
        return self._commit(self.norm.process(observations))

    def tick(self, t: float) -> list[dict[str, Any]]:
        return self._commit(self.norm.tick(at(t)))

    def link(self, up: bool, t: float) -> list[dict[str, Any]]:
        return self._commit(self.norm.link(up, at(t), "" if up else "refused"))

    def restart(self) -> None:
        """A new process: only what was committed survives."""
        self.norm = Normalizer(self.eq, self.disk)


def essentials(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in ("eventId", "equipmentCode")} for e in events]


# ---------------------------------------------------------------- counter_delta


def test_counter_delta_baseline_normal_rollover_reset_anomaly() -> None:
    assert counter_delta(None, 1234, 2**32, None) == (0, "BASELINE")
    assert counter_delta(100, 130, 2**32, None) == (30, "NORMAL")
    assert counter_delta(100, 100, 2**32, None) == (0, "NORMAL")
    # AVEVA's example: rollover at 10,000, 9,900 → 100 is 200 units.
    assert counter_delta(9_900, 100, 10_000, 1_000) == (200, "ROLLOVER")
    assert counter_delta(2**32 - 5, 3, 2**32, None) == (8, "ROLLOVER")
    assert counter_delta(65_535, 3, 2**16, 50) == (4, "ROLLOVER")
    # Going back from the middle of the range: the PLC restarted at 0.
    assert counter_delta(5_000, 12, 2**32, None) == (12, "RESET")
    assert counter_delta(5_000, 12, 2**32, 100) == (12, "RESET")
    # Too far for the rate, either way round: never added.
    assert counter_delta(100, 1_000_100, 2**32, 500) == (0, "ANOMALY")
    assert counter_delta(5_000, 800, 2**32, 500) == (0, "ANOMALY")


def test_counter_delta_small_rollover_uses_the_rate_not_the_top_decile() -> None:
    # rollover 1000 at a fast rate: 850 → 50 is 200 counts, a wrap (850 is below 90 %).
    assert counter_delta(850, 50, 1_000, 300) == (200, "ROLLOVER")
    # Without a rate limit only the top 10 % of the span counts as "about to wrap".
    assert counter_delta(850, 50, 1_000, None) == (50, "RESET")


# ---------------------------------------------------------------- counters


COUNTERS = {
    "good": {
        "kind": "COUNTER",
        "address": 2,
        "type": "UINT32",
        "counter": "good",
        "rollover": 1000,
        "max_per_s": 100,
    },
}


def test_counter_events_are_increments_with_rollover_and_reset() -> None:
    m = Machine(COUNTERS)
    assert m.feed(0, good=990) == []  # baseline only
    assert essentials(m.feed(1, good=995)) == [
        {"kind": "COUNTER", "occurredAt": at(1).isoformat(), "counter": "good", "increment": 5}
    ]
    assert m.feed(2, good=995) == []  # no change, no event
    assert [e["increment"] for e in m.feed(3, good=20)] == [25]  # 995 → 1000=0 → 20
    assert m.disk["good"]["raw"] == 20
    # A restart of the bridge continues from the committed raw value: nothing double-counted.
    m.restart()
    assert [e["increment"] for e in m.feed(4, good=30)] == [10]
    # 30 → 5: the way round through 1000 would be 975 counts in 1 s (at most 100/s): so the
    # PLC was reset, and counts from 0.
    assert [e["increment"] for e in m.feed(5, good=5)] == [5]


def test_an_implausible_jump_is_quarantined_and_alarmed_not_counted() -> None:
    m = Machine(COUNTERS)
    m.feed(0, good=10)
    events = m.feed(1, good=900)  # 890 in 1 s, at most 100/s (+1 s slack) = 200
    assert essentials(events) == [
        {
            "kind": "ALARM",
            "occurredAt": at(1).isoformat(),
            "alarmCode": "COUNTER_ANOMALY",
            "alarmActive": True,
            "message": "counter good (good) jumped from 10 to 900 in 1.0 s; at most 200 is "
            "plausible",
        }
    ]
    assert len(m.quarantined) == 1
    kept = m.quarantined[0]
    assert kept.code == "COUNTER_ANOMALY"
    assert kept.event.body()["increment"] == 890
    # Counting resumes from the new value; the alarm clears with the next normal delta.
    events = m.feed(2, good=950)
    assert [(e["kind"], e.get("increment"), e.get("alarmActive")) for e in events] == [
        ("COUNTER", 50, None),
        ("ALARM", None, False),
    ]


def test_replayed_counter_notifications_are_dropped() -> None:
    m = Machine(
        {"good": {"kind": "COUNTER", "node": "ns=2;s=G", "counter": "good"}}, protocol="opcua"
    )
    m.feed(0, source=True, good=100)
    first = m.feed(1, source=True, good=110)
    assert [e["increment"] for e in first] == [10]
    # After a reconnect the server republishes older notifications: same or older source
    # timestamps. Run through counter_delta they would look like a reset; they are dropped.
    assert m.batch([Observation("good", 105, at(5), at(0.5), replayed=True)]) == []
    assert m.batch([Observation("good", 110, at(5), at(1))]) == []
    # ...also after a restart of the bridge (the source timestamp is persisted).
    m.restart()
    assert m.batch([Observation("good", 105, at(6), at(0.5), replayed=True)]) == []
    assert [e["increment"] for e in m.feed(7, source=True, good=112)] == [2]


def test_event_ids_come_from_the_source_timestamp_when_there_is_one() -> None:
    opc = {"good": {"kind": "COUNTER", "node": "ns=2;s=G", "counter": "good"}}
    a, b = Machine(opc, "opcua"), Machine(opc, "opcua")
    for m in (a, b):
        m.feed(0, source=True, good=1)
    # The same notification seen by two bridge runs gets the same id (the MES dedupes it).
    assert (
        a.feed(1, source=True, good=5)[0]["eventId"] == b.feed(1, source=True, good=5)[0]["eventId"]
    )
    # Without a source timestamp (Modbus) ids are random, and unique.
    c, d = Machine(COUNTERS), Machine(COUNTERS)
    for m in (c, d):
        m.feed(0, good=1)
    assert c.feed(1, good=5)[0]["eventId"] != d.feed(1, good=5)[0]["eventId"]


# ---------------------------------------------------------------- states


STATE = {
    "state": {
        "kind": "STATE",
        "address": 0,
        "map": {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "PLANNED_STOP"},
        "reason": {"address": 1, "map": {0: None, 1: "Jam", 3: "Break"}},
    }
}


def test_states_are_sent_on_change_with_their_reason() -> None:
    m = Machine(STATE)
    assert essentials(m.feed(0, state=1, state__reason=0)) == [
        {"kind": "STATE", "occurredAt": at(0).isoformat(), "state": "RUNNING"}
    ]
    assert m.feed(1, state=1, state__reason=0) == []
    assert essentials(m.feed(2, state=3, state__reason=1)) == [
        {"kind": "STATE", "occurredAt": at(2).isoformat(), "state": "DOWN", "reason": "Jam"}
    ]
    assert m.feed(3, state=3, state__reason=1) == []
    # The reason changes while the machine stays down: the stop is re-classified.
    assert [(e["state"], e.get("reason")) for e in m.feed(4, state=3, state__reason=3)] == [
        ("DOWN", "Break")
    ]
    assert [(e["state"], e.get("reason")) for e in m.feed(5, state=1, state__reason=0)] == [
        ("RUNNING", None)
    ]
    # An unmapped code is ignored (and logged), never a crash or a made-up state.
    assert m.feed(6, state=9, state__reason=0) == []
    # After a restart the committed state is known: no repeated event.
    m.restart()
    assert m.feed(7, state=1, state__reason=0) == []


def test_a_reason_written_just_after_its_state_belongs_to_it() -> None:
    m = Machine(
        {
            "state": {
                "kind": "STATE",
                "node": "ns=2;s=S",
                "map": {1: "RUNNING", 3: "DOWN"},
                "reason_node": "ns=2;s=R",
            }
        },
        protocol="opcua",
    )
    m.feed(0, source=True, state=1, state__reason="")
    # One notification batch: State then StateReason, as two variables.
    events = m.batch(
        [
            Observation("state", 3, at(1), at(1)),
            Observation("state#reason", "Jam", at(1), at(1.001)),
            Observation("state", 1, at(2), at(2)),
            Observation("state#reason", "", at(2), at(2.001)),
        ]
    )
    assert [(e["state"], e.get("reason")) for e in events] == [("DOWN", "Jam"), ("RUNNING", None)]
    # The other order (reason first, then state) pairs the same way: no instant of "DOWN
    # without a reason" before RUNNING.
    m.batch(
        [
            Observation("state#reason", "Jam", at(2.5), at(2.5)),
            Observation("state", 3, at(2.5), at(2.501)),
        ]
    )
    events = m.batch(
        [
            Observation("state#reason", "", at(2.7), at(2.7)),
            Observation("state", 1, at(2.7), at(2.701)),
        ]
    )
    assert [(e["state"], e.get("reason")) for e in events] == [("RUNNING", None)]
    # A reason written first (while still running) is used by the stop that follows.
    assert m.batch([Observation("state#reason", "Material starved", at(3), at(3))]) == []
    events = m.batch([Observation("state", 3, at(4), at(4))])
    assert [(e["state"], e.get("reason")) for e in events] == [("DOWN", "Material starved")]


def test_a_backlog_of_changes_in_one_batch_keeps_each_reason_with_its_state() -> None:
    """After a reconnect the server delivers the changes it kept in one batch. Each reason goes
    with the state written next to it, also where a state changes without a new reason."""
    m = Machine(
        {
            "state": {
                "kind": "STATE",
                "node": "ns=2;s=S",
                "map": {1: "RUNNING", 2: "IDLE", 3: "DOWN"},
                "reason_node": "ns=2;s=R",
            },
            "alarm": {"kind": "ALARM", "active_node": "ns=2;s=A", "code_node": "ns=2;s=C"},
        },
        protocol="opcua",
    )
    m.feed(0, source=True, state=2, state__reason="")
    us = dt.timedelta(microseconds=1)

    def ob(channel: str, value: Any, t: float, nudge: int = 0) -> Observation:
        return Observation(channel, value, at(10), at(t) + nudge * us)

    events = m.batch(
        [
            ob("state", 1, 1),  # IDLE -> RUNNING, reason unchanged ("")
            ob("state#reason", "Jam", 2),  # reason first, 1 µs before its state
            ob("state", 3, 2, 1),
            ob("alarm#code", "GUARD_OPEN", 2, 2),  # raised: code, then flag
            ob("alarm#active", True, 2, 3),
            ob("alarm#active", False, 3),  # cleared: flag, then code
            ob("alarm#code", "", 3, 1),
            ob("state#reason", "", 3, 2),
            ob("state", 1, 3, 3),
            ob("state#reason", "Break", 4),
            ob("state", 3, 4, 1),
            ob("state#reason", "Material", 5),  # the stop re-classified, on its own
        ]
    )
    states = [(e["state"], e.get("reason")) for e in events if e["kind"] == "STATE"]
    assert states == [
        ("RUNNING", None),
        ("DOWN", "Jam"),
        ("RUNNING", None),
        ("DOWN", "Break"),
        ("DOWN", "Material"),
    ]
    alarms = [(e["alarmCode"], e["alarmActive"]) for e in events if e["kind"] == "ALARM"]
    assert alarms == [("GUARD_OPEN", True), ("GUARD_OPEN", False)]


# ---------------------------------------------------------------- values


VALUE = {
    "temp": {
        "kind": "VALUE",
        "address": 6,
        "type": "INT16",
        "scale": 0.1,
        "name": "temperature",
        "unit": "degC",
        "deadband": {"absolute": 0.5},
        "heartbeat_s": 10,
    }
}


def test_values_use_an_absolute_deadband() -> None:
    m = Machine(VALUE)
    m.link(True, 0)
    assert essentials(m.feed(0, temp=200)) == [
        {
            "kind": "VALUE",
            "occurredAt": at(0).isoformat(),
            "name": "temperature",
            "value": 20.0,
            "unit": "degC",
        }
    ]
    assert m.feed(1, temp=204) == []  # 0.4 from the last sent value
    assert m.feed(2, temp=196) == []  # still within 0.5 of 20.0 (not of 20.4)
    assert [e["value"] for e in m.feed(3, temp=205)] == [pytest.approx(20.5)]
    assert [e["value"] for e in m.feed(4, temp=199)] == [pytest.approx(19.9)]


def test_a_heartbeat_repeats_a_quiet_value() -> None:
    m = Machine(VALUE)
    m.link(True, 0)
    m.feed(0, temp=200)
    m.feed(5, temp=203)  # within the deadband: not sent, but seen
    assert m.tick(9) == []
    beat = m.tick(10)
    assert essentials(beat) == [
        {
            "kind": "VALUE",
            "occurredAt": at(10).isoformat(),
            "name": "temperature",
            "value": pytest.approx(20.3),
            "unit": "degC",
        }
    ]
    assert m.tick(15) == []
    assert len(m.tick(20)) == 1
    # No heartbeat while the machine is unreachable: it would present a stale value as fresh.
    m.link(False, 21)
    assert m.tick(40) == []


# ---------------------------------------------------------------- alarms


ALARM = {
    "alarm": {
        "kind": "ALARM",
        "code": {"address": 7},
        "active": {"address": 8},
        "map": {101: {"code": "MOTOR_OVERLOAD", "message": "Motor overload"}, 102: "Guard open"},
        "default_code": "MACHINE_ALARM",
    }
}


def edges(events: list[dict[str, Any]]) -> list[tuple[str, bool, str | None]]:
    return [(e["alarmCode"], e["alarmActive"], e.get("message")) for e in events]


def test_alarms_are_raised_and_cleared_on_edges() -> None:
    m = Machine(ALARM)
    assert m.feed(0, alarm__code=0, alarm__active=0) == []
    assert edges(m.feed(1, alarm__code=101, alarm__active=1)) == [
        ("MOTOR_OVERLOAD", True, "Motor overload")
    ]
    assert m.feed(2, alarm__code=101, alarm__active=1) == []
    # Another alarm replaces it while active: the first clears, the second is raised.
    assert edges(m.feed(3, alarm__code=102, alarm__active=1)) == [
        ("MOTOR_OVERLOAD", False, None),
        ("102", True, "Guard open"),
    ]
    assert edges(m.feed(4, alarm__code=0, alarm__active=0)) == [("102", False, None)]
    assert m.feed(5, alarm__code=0, alarm__active=0) == []
    # Active without a known code: the configured default code.
    assert edges(m.feed(6, alarm__code=0, alarm__active=1)) == [("MACHINE_ALARM", True, None)]
    # A bridge restart neither repeats the raise nor forgets to clear it.
    m.restart()
    assert m.feed(7, alarm__code=0, alarm__active=1) == []
    assert edges(m.feed(8, alarm__code=0, alarm__active=0)) == [("MACHINE_ALARM", False, None)]


def test_an_alarm_given_by_its_code_alone() -> None:
    m = Machine({"alarm": {"kind": "ALARM", "code_node": "ns=2;s=A"}}, protocol="opcua")
    assert edges(m.feed(0, source=True, alarm__code="")) == []
    assert edges(m.feed(1, source=True, alarm__code="Feeder jam")) == [("Feeder jam", True, None)]
    assert edges(m.feed(2, source=True, alarm__code="")) == [("Feeder jam", False, None)]


# ---------------------------------------------------------------- link loss


def test_link_loss_is_a_comm_loss_alarm_once_per_edge_never_a_state() -> None:
    m = Machine(STATE)
    m.feed(0, state=1, state__reason=0)
    lost = m.link(False, 1)
    assert essentials(lost) == [
        {
            "kind": "ALARM",
            "occurredAt": at(1).isoformat(),
            "alarmCode": "COMM_LOSS",
            "alarmActive": True,
            "message": "refused",
        }
    ]
    assert m.link(False, 2) == []  # still lost: nothing new
    m.restart()  # the bridge restarts while the machine is unreachable
    assert m.link(False, 3) == []
    restored = m.link(True, 4)
    assert edges(restored) == [("COMM_LOSS", False, None)]
    assert m.link(True, 5) == []
    assert all(e["kind"] == "ALARM" for e in lost + restored)


def test_a_device_clock_reset_is_not_taken_for_a_replay() -> None:
    m = Machine(
        {"good": {"kind": "COUNTER", "node": "ns=2;s=G", "counter": "good"}}, protocol="opcua"
    )
    m.feed(0, source=True, good=100)
    m.feed(10, source=True, good=110)
    # The PLC restarted with its clock a day behind: its values are not replays.
    behind = at(20) - dt.timedelta(days=1)
    events = m.batch([Observation("good", 4, at(20), behind)])
    assert [(e["increment"], e["occurredAt"]) for e in events] == [(4, at(20).isoformat())]
    later = m.batch([Observation("good", 9, at(21), behind + dt.timedelta(seconds=1))])
    assert [e["increment"] for e in later] == [5]


def test_two_values_with_the_same_coarse_timestamp_both_count() -> None:
    m = Machine(
        {"good": {"kind": "COUNTER", "node": "ns=2;s=G", "counter": "good"}}, protocol="opcua"
    )
    m.feed(0, source=True, good=10)
    tick = at(1)  # a device clock with a 15 ms resolution stamps both alike
    events = m.batch([Observation("good", 11, at(1), tick), Observation("good", 12, at(1), tick)])
    assert [e["increment"] for e in events] == [1, 1]
    assert events[0]["eventId"] != events[1]["eventId"]
    # The same (timestamp, value) again is a replay.
    assert m.batch([Observation("good", 12, at(2), tick, replayed=True)]) == []
