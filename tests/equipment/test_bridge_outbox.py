"""The bridge's outbox: committed before sending, survives a SIGKILL, quarantine."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from equipment_bridge.cli import main
from equipment_bridge.events import MachineEvent, Quarantined
from equipment_bridge.outbox import Outbox, Rejection

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
