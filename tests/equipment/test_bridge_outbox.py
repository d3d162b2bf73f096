"""The bridge's outbox: committed before sending, survives a SIGKILL, quarantine, and its
capacity policy (VALUE history thinned past max_events, nothing else ever dropped)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from equipment_bridge.app import Bridge
from equipment_bridge.cli import main
from equipment_bridge.config import parse_config
from equipment_bridge.events import MachineEvent, Quarantined
from equipment_bridge.forwarder import Forwarder
from equipment_bridge.outbox import OUTBOX_FULL, Outbox, Rejection

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)

WRITER = textwrap.dedent(
    """
    import datetime as dt, sys, uuid
    from equipment_bridge.events import MachineEvent
    from equipment_bridge.outbox import Outbox

    outbox = Outbox(sys.argv[1])
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    batch = 0
    while True:
        batch += 1
        events = [
            MachineEvent(str(uuid.uuid4()), "PRESS-01", "COUNTER", t0,
                         {"counter": "good", "increment": 1, "message": f"{batch}"})
            for _ in range(50)
        ]
        # The counter's last raw value goes in the same transaction as its events.
        outbox.append(events, {("PRESS-01", "good"): {"raw": batch}})
        print(batch, " ".join(e.event_id for e in events), flush=True)
    """
)


def test_committed_events_survive_a_kill_with_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    root = Path(__file__).resolve().parents[2]
    acknowledged: list[str] = []
    batches = 0
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                number, *ids = line.split()
                batches = int(number)
                acknowledged += ids
                if batches == 30:
                    break
            child.send_signal(signal.SIGKILL)  # while it is writing the next batches
        finally:
            child.kill()
            child.wait(10)
    assert batches == 30

    outbox = Outbox(path)  # runs PRAGMA quick_check: raises if damaged
    try:
        stored = outbox.event_ids()
        # Every event reported as committed is there, with its id, in order; only whole
        # batches (50 events) are there: no torn transaction.
        assert stored[: len(acknowledged)] == acknowledged
        assert len(stored) % 50 == 0
        pending = outbox.peek(100_000)
        last_batch = int(pending[-1].body["message"])
        assert last_batch >= 30
        # The persisted counter state is exactly that of the last committed batch.
        assert outbox.load_state("PRESS-01") == {"good": {"raw": last_batch}}
        assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    finally:
        outbox.close()


def event(n: int, kind: str = "COUNTER") -> MachineEvent:
    return MachineEvent(
        f"id-{n}",
        "PRESS-01",
        kind,
        T0 + dt.timedelta(seconds=n),
        {"counter": "good", "increment": n},
    )


def test_settle_deletes_delivered_and_quarantines_refused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    try:
        assert outbox.append([event(i) for i in range(1, 6)]) == 5
        # A replayed event (same id) is not queued twice.
        assert outbox.append([event(3)]) == 0
        batch = outbox.peek(10)
        assert [p.event_id for p in batch] == [f"id-{i}" for i in range(1, 6)]
        assert batch[0].body == {
            "eventId": "id-1",
            "equipmentCode": "PRESS-01",
            "kind": "COUNTER",
            "occurredAt": "2026-03-01T08:00:01+00:00",
            "counter": "good",
            "increment": 1,
        }

        outbox.settle(
            [batch[0].seq, batch[1].seq, batch[3].seq],
            [
                Rejection(
                    batch[2].seq, "NOT_FOUND", "no equipment 'PRESS-01'", "events.2.equipmentCode"
                )
            ],
        )
        assert outbox.event_ids() == ["id-5"]
        (kept,) = outbox.quarantined()
        assert (kept.event_id, kept.code, kept.field) == (
            "id-3",
            "NOT_FOUND",
            "events.2.equipmentCode",
        )
        assert kept.body["increment"] == 3

        # Locally quarantined (a counter anomaly) at append time, never queued.
        outbox.append([], None, [Quarantined(event(9), "COUNTER_ANOMALY", "jumped")])
        assert [q.event_id for q in outbox.quarantined()] == ["id-3", "id-9"]
        assert outbox.event_ids() == ["id-5"]

        # An operator puts one back: same id, at the end of the queue.
        assert outbox.requeue([kept.id]) == 1
        assert outbox.event_ids() == ["id-5", "id-3"]
        assert outbox.discard([]) == 0
        assert outbox.discard(None) == 1
        assert outbox.quarantined() == []
    finally:
        outbox.close()


def test_the_outbox_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.close()
    db = sqlite3.connect(tmp_path / "o.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    # synchronous is per connection: check the outbox's own.
    outbox = Outbox(tmp_path / "o.sqlite")
    try:
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        outbox.close()


def test_operators_list_retry_and_discard_quarantined_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "o.sqlite"
    config = tmp_path / "bridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "bridge": {
                    "id": "t",
                    "outbox": {"path": str(path)},
                    "mes": {"url": "http://127.0.0.1/graphql", "token_env": "T"},
                },
                "equipment": [
                    {
                        "code": "M",
                        "protocol": "modbus_tcp",
                        "host": "127.0.0.1",
                        "signals": {"g": {"kind": "COUNTER", "address": 0, "counter": "good"}},
                    }
                ],
            }
        )
    )
    outbox = Outbox(path)
    outbox.append(
        [],
        None,
        [
            Quarantined(event(1), "COUNTER_ANOMALY", "jumped"),
            Quarantined(event(2), "NOT_FOUND", "no equipment"),
        ],
    )
    outbox.close()

    main(["quarantine", "list", "--config", str(config)])
    listing = capsys.readouterr().out.splitlines()
    assert listing[-1] == "2 quarantined events"
    assert listing[0].split("\t")[2:6] == ["PRESS-01", "COUNTER", "COUNTER_ANOMALY", ""]
    with pytest.raises(SystemExit) as exited:
        main(["quarantine", "discard", "--config", str(config)])
    assert exited.value.code == 2
    assert "give --all" in capsys.readouterr().err
    main(["quarantine", "retry", "--config", str(config), "--id", listing[0].split("\t")[0]])
    assert capsys.readouterr().out == "1 events put back in the send queue\n"
    main(["quarantine", "discard", "--config", str(config), "--all"])
    assert capsys.readouterr().out == "1 quarantined events deleted\n"
    outbox = Outbox(path)
    try:
        assert outbox.event_ids() == ["id-1"]
        assert outbox.quarantined() == []
    finally:
        outbox.close()


# ---------------------------------------------------------------- capacity policy


def machine_events(batch: int) -> list[MachineEvent]:
    """One poll's events at T0 + batch seconds: PRESS-01 sends two VALUE signals (3 samples
    each), a COUNTER, now and then a STATE and an ALARM; BLENDER-01 only counts."""
    at = T0 + dt.timedelta(seconds=batch)

    def make(eq: str, kind: str, tag: str, fields: dict[str, object]) -> MachineEvent:
        return MachineEvent(f"{eq}-{kind}-{tag}-{batch}", eq, kind, at, fields)

    events = [
        make("PRESS-01", "VALUE", f"{name}{i}", {"name": name, "value": batch + i / 3})
        for i in range(3)
        for name in ("temperature", "pressure")
    ]
    events.append(make("PRESS-01", "COUNTER", "good", {"counter": "good", "increment": 1}))
    events.append(make("BLENDER-01", "COUNTER", "good", {"counter": "good", "increment": 2}))
    if batch % 5 == 0:
        events.append(
            make("PRESS-01", "STATE", "s", {"state": "RUNNING" if batch % 10 else "DOWN"})
        )
    if batch % 10 == 0:
        events.append(make("BLENDER-01", "ALARM", "a", {"alarmCode": "JAM", "alarmActive": True}))
    return events


def outbox_full(bodies: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [
        (b["equipmentCode"], b["alarmActive"]) for b in bodies if b.get("alarmCode") == OUTBOX_FULL
    ]


def drain(outbox: Outbox, until: int = 0) -> list[dict[str, object]]:
    """Sends (deletes) the oldest events, 20 at a time, as the forwarder does, until at most
    `until` are left; returns what was sent."""
    sent: list[dict[str, object]] = []
    while (waiting := outbox.pending_count()) > until:
        batch = outbox.peek(min(20, waiting - until))
        outbox.settle([p.seq for p in batch], [])
        sent += [p.body for p in batch]
    return sent


def test_past_its_limit_only_value_history_is_thinned_evenly_and_alarmed_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    appended: list[MachineEvent] = []
    outbox = Outbox(path, max_events=500)
    try:
        for batch in range(80):
            appended += machine_events(batch)
            outbox.append(machine_events(batch))
        raised = outbox.capacity()
        assert raised.full == ("PRESS-01",)
    finally:
        outbox.close()
    # The policy's state survives a restart: the alarm is not raised again.
    outbox = Outbox(path, max_events=500)
    try:
        reopened = outbox.capacity()
        assert (reopened.thinned, reopened.thinned_total) == (0, raised.thinned)
        assert reopened.full == ("PRESS-01",)
        for batch in range(80, 150):
            appended += machine_events(batch)
            outbox.append(machine_events(batch))
        capacity = outbox.capacity()
        stored = outbox.peek(10_000)
    finally:
        outbox.close()

    values = [e for e in appended if e.kind == "VALUE"]
    others = [e for e in appended if e.kind != "VALUE"]
    assert (len(values), len(others)) == (900, 345)
    # Never over the limit by more than the alarm, and never far under it (thinned in steps).
    assert capacity.max_events == 500
    assert 490 <= capacity.events == len(stored) <= 501
    ids = [p.event_id for p in stored]
    # Every STATE, COUNTER and ALARM event is kept; the order of what is kept is unchanged.
    assert {e.event_id for e in others} <= set(ids)
    order = {e.event_id: i for i, e in enumerate(appended)}
    kept = [i for i in ids if i in order]
    assert kept == sorted(kept, key=order.__getitem__)
    kept_values = [p.body for p in stored if p.body["kind"] == "VALUE"]
    assert capacity.thinned + reopened.thinned_total == len(values) - len(kept_values)
    # Spread over the whole outage, not cut at one end: every tenth of it keeps samples of
    # both signals, and the very first sample of each signal is still there.
    for name in ("temperature", "pressure"):
        seconds = {
            int(dt.datetime.fromisoformat(str(b["occurredAt"])).timestamp() - T0.timestamp())
            for b in kept_values
            if b["name"] == name
        }
        assert 0 in seconds
        assert {s * 10 // 150 for s in seconds} == set(range(10)), sorted(seconds)
    # One OUTBOX_FULL for the machine that lost history; none for BLENDER-01 (nothing lost).
    (alarm,) = [p.body for p in stored if p.body.get("alarmCode") == OUTBOX_FULL]
    assert alarm["equipmentCode"] == "PRESS-01"
    assert alarm["kind"] == "ALARM"
    assert alarm["alarmActive"] is True
    assert "VALUE history thinned" in str(alarm["message"])

    # The MES is back: the outbox drains; the alarm clears once, at 90 % of the limit.
    outbox = Outbox(path, max_events=500)
    try:
        sent = drain(outbox, until=451)
        assert outbox.capacity().full == ("PRESS-01",)
        sent += drain(outbox, until=450)
        assert outbox.capacity().full == ()
        sent += drain(outbox)
        for batch in range(150, 160):
            outbox.append(machine_events(batch))
        sent += drain(outbox)
        assert outbox.capacity().thinned == 0
    finally:
        outbox.close()
    assert outbox_full(sent) == [("PRESS-01", True), ("PRESS-01", False)]


def test_state_counter_and_alarm_events_are_kept_over_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_events=20)
    try:
        with caplog.at_level(logging.ERROR, logger="equipment_bridge.outbox"):
            for n in range(1, 31):
                outbox.append([MachineEvent(f"c-{n}", "BLENDER-01", "COUNTER", T0, {"n": n})])
        stored = outbox.peek(100)
        assert [p.event_id for p in stored if p.body["kind"] == "COUNTER"] == [
            f"c-{n}" for n in range(1, 31)
        ]
        assert outbox_full([p.body for p in stored]) == [("BLENDER-01", True)]
        assert outbox.capacity().thinned == 0
        (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "no VALUE history left to thin" in error.getMessage()
        sent = drain(outbox)
        assert outbox_full(sent + drain(outbox)) == [("BLENDER-01", True), ("BLENDER-01", False)]
    finally:
        outbox.close()


def test_the_fill_level_follows_changes_made_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    bridge = Outbox(path, max_events=10)
    operator = Outbox(path)  # an operator command: no capacity policy of its own
    try:
        operator.append([event(n, "VALUE") for n in range(1, 9)])
        assert bridge.capacity().events == 8
        bridge.append([event(n, "VALUE") for n in range(9, 12)])
        # 11 > 10: down to 9 (one step under the limit) by thinning the oldest VALUE events,
        # keeping every other one; then the alarm is queued.
        assert bridge.event_ids() == [f"id-{n}" for n in (1, 3, 5, 6, 7, 8, 9, 10, 11)] + [
            bridge.peek(10)[-1].event_id
        ]
        assert bridge.peek(10)[-1].body["alarmCode"] == OUTBOX_FULL
        assert bridge.capacity().events == 10
        assert operator.capacity().full == ("PRESS-01",)
    finally:
        operator.close()
        bridge.close()


async def test_the_status_line_reports_the_limit_and_the_thinning(tmp_path: Path) -> None:
    config = parse_config(
        {
            "bridge": {
                "id": "t",
                "outbox": {"path": str(tmp_path / "o.sqlite"), "max_events": 10},
                "mes": {"url": "http://127.0.0.1:9/graphql", "token_env": "T"},
            },
            "equipment": [
                {
                    "code": "PRESS-01",
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "signals": {"t": {"kind": "VALUE", "address": 0}},
                }
            ],
        },
        {},
    )
    bridge = Bridge(config, "token")
    assert await bridge.status_line() == ""
    outbox = bridge.outbox = Outbox(config.bridge.outbox.path, config.bridge.outbox.max_events)
    bridge.forwarder = Forwarder(outbox, config.bridge.mes, "token")
    try:
        outbox.append([event(n, "VALUE") for n in range(1, 16)])
        line = await bridge.status_line()
    finally:
        await bridge.forwarder.aclose()
        outbox.close()
    assert line.startswith(
        "status: 10 events waiting (limit 10), 6 VALUE events thinned (OUTBOX FULL: PRESS-01); "
        "sent 0 (+0 duplicates), 0 quarantined, 0 failed attempts; machines: "
    )
