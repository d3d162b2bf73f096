"""The store-and-forward buffer: a SQLite file in WAL mode with synchronous=FULL.

Every event is committed here, with its final `eventId`, before anything is sent; it is
deleted only once the MES has accepted it (or answered that it already has it). The
normalizer's persistent state (last raw counter values, last state, open alarms) is written
in the same transaction as the events it produced, so a crash can neither double-count nor
skip. Events the MES refuses one by one move to the `quarantine` table, with the error.

The methods are synchronous (and serialised by a lock); the bridge calls them through
`asyncio.to_thread` so a disk flush never stalls the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equipment_bridge.events import MachineEvent, Quarantined

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    equipment  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    equipment      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    body           TEXT NOT NULL,
    code           TEXT NOT NULL,
    message        TEXT NOT NULL,
    field          TEXT,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signal_state (
    equipment TEXT NOT NULL,
    signal    TEXT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (equipment, signal)
);
"""


class OutboxError(Exception):
    """The outbox file cannot be opened or is damaged."""


@dataclass(frozen=True)
class Pending:
    seq: int
    event_id: str
    body: dict[str, Any]
    created_at: float
    attempts: int


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    event_id: str
    equipment: str
    kind: str
    body: dict[str, Any]
    code: str
    message: str
    field: str | None
    quarantined_at: float


@dataclass(frozen=True)
class Rejection:
    """A per-event refusal from the MES, for `Outbox.quarantine`."""

    seq: int
    code: str
    message: str
    field: str | None = None


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except (OSError, sqlite3.Error) as error:
            raise OutboxError(f"cannot open the outbox {self.path}: {error}") from error
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OutboxError(f"the outbox {self.path} is damaged: {check}")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise OutboxError(f"cannot use the outbox {self.path}: {error}") from error

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ writing

    def append(
        self,
        events: Sequence[MachineEvent],
        state: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        quarantined: Sequence[Quarantined] = (),
    ) -> int:
        """Stores events (in order), normaliser state and locally quarantined events in one
        transaction. An event whose id is already stored is skipped (a replay). Returns the
        number of events added to the send queue."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                for event in events:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO events (event_id, equipment, kind, body, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            event.event_id,
                            event.equipment,
                            event.kind,
                            json.dumps(event.body(), separators=(",", ":")),
                            now,
                        ),
                    )
                    added += cursor.rowcount
                for item in quarantined:
                    db.execute(
                        "INSERT OR IGNORE INTO quarantine (event_id, equipment, kind, body,"
                        " code, message, field, quarantined_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                        (
                            item.event.event_id,
                            item.event.equipment,
                            item.event.kind,
                            json.dumps(item.event.body(), separators=(",", ":")),
                            item.code,
                            item.message,
                            now,
                        ),
                    )
                for (equipment, signal), data in (state or {}).items():
                    db.execute(
                        "INSERT INTO signal_state (equipment, signal, data) VALUES (?, ?, ?)"
                        " ON CONFLICT (equipment, signal) DO UPDATE SET data = excluded.data",
                        (equipment, signal, json.dumps(data, separators=(",", ":"))),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added

    def delete(self, seqs: Iterable[int]) -> None:
        """Removes events the MES acknowledged."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def settle(self, delivered: Iterable[int], rejected: Sequence[Rejection]) -> None:
        """One answered batch: delivered events deleted, refused ones quarantined, together."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for r in rejected:
                    db.execute(
                        "INSERT OR REPLACE INTO quarantine (event_id, equipment, kind, body,"
                        " code, message, field, quarantined_at)"
                        " SELECT event_id, equipment, kind, body, ?, ?, ?, ?"
                        " FROM events WHERE seq = ?",
                        (r.code, r.message, r.field, now, r.seq),
                    )
                    db.execute("DELETE FROM events WHERE seq = ?", (r.seq,))
                db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in delivered])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def note_failure(self, seqs: Sequence[int], error: str) -> None:
        """Counts a failed attempt on the events of a batch (for operators)."""
        if not seqs:
            return
        with self._lock:
            # One statement, one transaction: a commit per row would fsync per row.
            self._db.execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ?"
                " WHERE seq BETWEEN ? AND ?",
                (error[:500], min(seqs), max(seqs)),
            )

    def quarantine(self, rejected: Sequence[Rejection]) -> None:
        self.settle((), rejected)

    # ------------------------------------------------------------ reading

    def peek(self, limit: int) -> list[Pending]:
        """The oldest unsent events, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, body, created_at, attempts FROM events ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Pending(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def event_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT event_id FROM events ORDER BY seq")]

    def load_state(self, equipment: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT signal, data FROM signal_state WHERE equipment = ?", (equipment,)
            ).fetchall()
        return {signal: json.loads(data) for signal, data in rows}

    # ------------------------------------------------------------ quarantine

    def quarantined(self) -> list[QuarantineRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event_id, equipment, kind, body, code, message, field,"
                " quarantined_at FROM quarantine ORDER BY id"
            ).fetchall()
        return [
            QuarantineRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def requeue(self, ids: Sequence[int] | None = None) -> int:
        """Puts quarantined events (all, or the given ones) back at the end of the send queue,
        with the same event ids. Returns how many."""
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                where, args = _in_ids(ids)
                rows = db.execute(
                    f"SELECT id, event_id, equipment, kind, body FROM quarantine{where}"
                    " ORDER BY id",
                    args,
                ).fetchall()
                for qid, eid, equipment, kind, body in rows:
                    db.execute(
                        "INSERT OR IGNORE INTO events (event_id, equipment, kind, body, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (eid, equipment, kind, body, now),
                    )
                    db.execute("DELETE FROM quarantine WHERE id = ?", (qid,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(rows)

    def discard(self, ids: Sequence[int] | None = None) -> int:
        """Deletes quarantined events (all, or the given ones). Returns how many."""
        where, args = _in_ids(ids)
        with self._lock:
            return self._db.execute(f"DELETE FROM quarantine{where}", args).rowcount


def _in_ids(ids: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if ids is None:
        return "", ()
    if not ids:
        return " WHERE 0", ()
    return f" WHERE id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids)
