"""The store-and-forward buffer: a SQLite file in WAL mode with synchronous=FULL.

Every event is committed here, with its final `eventId`, before anything is sent; it is
deleted only once the MES has accepted it (or answered that it already has it). The
normalizer's persistent state (last raw counter values, last state, open alarms) is written
in the same transaction as the events it produced, so a crash can neither double-count nor
skip. Events the MES refuses one by one move to the `quarantine` table, with the error.

Capacity (`max_events`): past the limit, VALUE history is thinned, never STATE, COUNTER or
ALARM events. A sweep walks the VALUE events from the oldest to the newest and keeps every
`THIN_KEEP_EVERY`-th of each signal; the next thinning resumes where it stopped and, at the
newest, starts again at the oldest, so the whole history gets evenly coarser instead of losing
one end. Each machine that loses history gets an ALARM `OUTBOX_FULL` (through this outbox, in
the same transaction), cleared once the outbox is back under `CLEAR_AT` of the limit. If only
STATE/COUNTER/ALARM events are left, they are kept over the limit and an error is logged.

The methods are synchronous (and serialised by a lock); the bridge calls them through
`asyncio.to_thread` so a disk flush never stalls the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from equipment_bridge.events import MachineEvent, Quarantined, utcnow

log = logging.getLogger(__name__)

OUTBOX_FULL = "OUTBOX_FULL"
# A thinning sweep keeps every Nth VALUE event of a signal (2: each sweep halves the history).
THIN_KEEP_EVERY = 2
# Each time the limit is passed, this share of max_events is freed (at least one event, at
# most THIN_STEP_MAX: about 0.3 s of deleting on a 2-core VM, so an append never stalls long).
THIN_STEP = 0.01
THIN_STEP_MAX = 10_000
# OUTBOX_FULL is cleared once the outbox holds at most this share of max_events.
CLEAR_AT = 0.9
_THIN_CHUNK = 5000

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
-- Thinning walks the VALUE events only (the literal 'VALUE' in the query selects this index).
CREATE INDEX IF NOT EXISTS events_value ON events (seq) WHERE kind = 'VALUE';
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
-- The capacity policy's own state: thin_cursor, full (JSON list of equipment), thinned.
CREATE TABLE IF NOT EXISTS outbox_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
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


@dataclass(frozen=True)
class Capacity:
    """How full the outbox is and what the capacity policy did: the bridge's health figures."""

    events: int
    max_events: int | None
    thinned: int  # VALUE events thinned since this outbox was opened
    thinned_total: int  # ... over the file's life
    full: tuple[str, ...]  # the equipment whose OUTBOX_FULL alarm is raised


@dataclass
class _Level:
    """The fill level and the capacity policy's state, as of the current transaction."""

    events: int = 0
    cursor: int = 0  # the thinning sweep's position: the last VALUE seq it walked
    full: set[str] = field(default_factory=set)
    thinned_total: int = 0

    def copy(self) -> _Level:
        return replace(self, full=set(self.full))


@dataclass
class _Policy:
    """What the capacity policy did in one transaction, to log once it is committed."""

    events: int = 0
    thinned: Counter[str] = field(default_factory=Counter)
    raised: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    over: bool = False


class Outbox:
    def __init__(self, path: str | Path, max_events: int | None = None) -> None:
        """Opens (creates) the outbox. `max_events` turns the capacity policy on; without it
        (the operator commands) nothing is ever thinned, raised or cleared."""
        if max_events is not None and max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = Path(path)
        self.max_events = max_events
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
            self._version, self._level = self._read_level()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise OutboxError(f"cannot use the outbox {self.path}: {error}") from error
        self._thinned_at_open = self._level.thinned_total
        self._overflow_logged = False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ fill level

    def _read_level(self) -> tuple[int, _Level]:
        db = self._db
        db.execute("BEGIN")
        try:
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
            level = _load_level(db)
        finally:
            db.execute("COMMIT")
        return version, level

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, _Level]]:
        """One write transaction, with the fill level as of its start (counted again only when
        another connection, such as an operator command, changed the file). The level is
        adopted when the transaction commits, and its policy state stored with it."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                version = int(db.execute("PRAGMA data_version").fetchone()[0])
                start = self._level if version == self._version else _load_level(db)
                level = start.copy()
                yield db, level
                meta = []
                if level.cursor != start.cursor:
                    meta.append(("thin_cursor", str(level.cursor)))
                if level.full != start.full:
                    meta.append(("full", json.dumps(sorted(level.full))))
                if level.thinned_total != start.thinned_total:
                    meta.append(("thinned", str(level.thinned_total)))
                db.executemany(
                    "INSERT INTO outbox_meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    meta,
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._level, self._version = level, version

    def capacity(self) -> Capacity:
        with self._lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version:
                self._version, self._level = self._read_level()
            level = self._level
            return Capacity(
                level.events,
                self.max_events,
                level.thinned_total - self._thinned_at_open,
                level.thinned_total,
                tuple(sorted(level.full)),
            )

    # ------------------------------------------------------------ capacity policy

    def _policy(self, db: sqlite3.Connection, level: _Level, adding: set[str]) -> _Policy:
        """Makes room (thinning VALUE history) past the limit, else clears OUTBOX_FULL once
        the outbox is back under CLEAR_AT of it. `adding`: the equipment of the events just
        stored, alarmed when nothing is left to thin."""
        policy = _Policy()
        limit = self.max_events
        if limit is not None and level.events > limit:
            step = max(1, min(int(limit * THIN_STEP), THIN_STEP_MAX))
            policy.thinned = self._thin(db, level, level.events - (limit - step))
            affected = set(policy.thinned)
            if level.events > limit:
                policy.over = True
                affected |= adding
            message = f"the bridge's outbox is full (limit {limit} events): " + (
                "only STATE/COUNTER/ALARM events left, kept over the limit"
                if policy.over and not policy.thinned
                else "VALUE history thinned; STATE, COUNTER and ALARM events kept"
            )
            policy.raised = sorted(affected - level.full)
            for equipment in policy.raised:
                level.events += self._alarm(db, equipment, True, message)
            level.full |= affected
        elif limit is not None and level.full and level.events <= limit * CLEAR_AT:
            policy.cleared = sorted(level.full)
            for equipment in policy.cleared:
                level.events += self._alarm(db, equipment, False, None)
            level.full = set()
        policy.events = level.events
        return policy

    def _thin(self, db: sqlite3.Connection, level: _Level, need: int) -> Counter[str]:
        """Deletes up to `need` VALUE events, sweeping on from `level.cursor` and keeping every
        THIN_KEEP_EVERY-th event of each signal. Returns the count deleted per equipment."""
        thinned: Counter[str] = Counter()
        phase: Counter[tuple[str, Any]] = Counter()
        cursor = level.cursor
        from_start = cursor == 0
        swept = removed = 0
        while removed < need:
            rows = db.execute(
                "SELECT seq, equipment, json_extract(body, '$.name') FROM events"
                " WHERE kind = 'VALUE' AND seq > ? ORDER BY seq LIMIT ?",
                (cursor, _THIN_CHUNK),
            ).fetchall()
            if not rows:
                if from_start and swept == 0:
                    break  # every signal is down to one VALUE event
                cursor, from_start, swept = 0, True, 0
                phase.clear()
                continue
            doomed: list[tuple[int]] = []
            for seq, equipment, name in rows:
                cursor = seq
                key = (equipment, name)
                phase[key] += 1
                if (phase[key] - 1) % THIN_KEEP_EVERY:
                    doomed.append((seq,))
                    thinned[equipment] += 1
                    if removed + len(doomed) >= need:
                        break
            db.executemany("DELETE FROM events WHERE seq = ?", doomed)
            removed += len(doomed)
            swept += len(doomed)
        level.cursor = cursor
        level.events -= removed
        level.thinned_total += removed
        return thinned

    def _alarm(
        self, db: sqlite3.Connection, equipment: str, active: bool, message: str | None
    ) -> int:
        """Queues an OUTBOX_FULL raise/clear, shaped like the normaliser's COMM_LOSS."""
        event = MachineEvent(
            str(uuid.uuid4()),
            equipment,
            "ALARM",
            utcnow(),
            {"alarmCode": OUTBOX_FULL, "alarmActive": active, "message": message},
        )
        return _insert(db, event, time.time())

    def _report(self, policy: _Policy) -> None:
        if policy.thinned:
            log.info(
                "outbox over its limit of %d events: %d VALUE events thinned (%s); "
                "%d events waiting",
                self.max_events,
                sum(policy.thinned.values()),
                ", ".join(f"{eq} {n}" for eq, n in sorted(policy.thinned.items())),
                policy.events,
            )
        if policy.raised:
            log.warning("%s raised on %s", OUTBOX_FULL, ", ".join(policy.raised))
        if policy.over and not self._overflow_logged:
            self._overflow_logged = True
            log.error(
                "outbox over its limit of %d events with no VALUE history left to thin: "
                "%d events kept anyway (STATE, COUNTER and ALARM events are never dropped); "
                "is the MES reachable?",
                self.max_events,
                policy.events,
            )
        if policy.cleared:
            self._overflow_logged = False
            log.info(
                "outbox back to %d events (limit %d): %s cleared on %s",
                policy.events,
                self.max_events,
                OUTBOX_FULL,
                ", ".join(policy.cleared),
            )

    # ------------------------------------------------------------ writing

    def append(
        self,
        events: Sequence[MachineEvent],
        state: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        quarantined: Sequence[Quarantined] = (),
    ) -> int:
        """Stores events (in order), normaliser state and locally quarantined events in one
        transaction, with whatever the capacity policy does to make room. An event whose id
        is already stored is skipped (a replay). Returns the number of events added to the
        send queue."""
        now = time.time()
        with self._write() as (db, level):
            added = 0
            for event in events:
                added += _insert(db, event, now)
            level.events += added
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
            policy = self._policy(db, level, {e.equipment for e in events})
        self._report(policy)
        return added

    def delete(self, seqs: Iterable[int]) -> None:
        """Removes events the MES acknowledged."""
        self.settle(seqs, ())

    def settle(self, delivered: Iterable[int], rejected: Sequence[Rejection]) -> None:
        """One answered batch: delivered events deleted, refused ones quarantined, together."""
        now = time.time()
        with self._write() as (db, level):
            for r in rejected:
                db.execute(
                    "INSERT OR REPLACE INTO quarantine (event_id, equipment, kind, body,"
                    " code, message, field, quarantined_at)"
                    " SELECT event_id, equipment, kind, body, ?, ?, ?, ?"
                    " FROM events WHERE seq = ?",
                    (r.code, r.message, r.field, now, r.seq),
                )
                level.events -= db.execute("DELETE FROM events WHERE seq = ?", (r.seq,)).rowcount
            cursor = db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in delivered])
            level.events -= cursor.rowcount
            policy = self._policy(db, level, set())
        self._report(policy)

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
        with self._write() as (db, level):
            where, args = _in_ids(ids)
            rows = db.execute(
                f"SELECT id, event_id, equipment, kind, body FROM quarantine{where} ORDER BY id",
                args,
            ).fetchall()
            for qid, eid, equipment, kind, body in rows:
                level.events += db.execute(
                    "INSERT OR IGNORE INTO events (event_id, equipment, kind, body, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (eid, equipment, kind, body, now),
                ).rowcount
                db.execute("DELETE FROM quarantine WHERE id = ?", (qid,))
            policy = self._policy(db, level, set())
        self._report(policy)
        return len(rows)

    def discard(self, ids: Sequence[int] | None = None) -> int:
        """Deletes quarantined events (all, or the given ones). Returns how many."""
        where, args = _in_ids(ids)
        with self._lock:
            return self._db.execute(f"DELETE FROM quarantine{where}", args).rowcount


def _load_level(db: sqlite3.Connection) -> _Level:
    events = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    meta = dict(db.execute("SELECT key, value FROM outbox_meta").fetchall())
    return _Level(
        events,
        int(meta.get("thin_cursor", 0)),
        set(json.loads(meta.get("full", "[]"))),
        int(meta.get("thinned", 0)),
    )


def _insert(db: sqlite3.Connection, event: MachineEvent, now: float) -> int:
    return db.execute(
        "INSERT OR IGNORE INTO events (event_id, equipment, kind, body, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            event.event_id,
            event.equipment,
            event.kind,
            json.dumps(event.body(), separators=(",", ":")),
            now,
        ),
    ).rowcount


def _in_ids(ids: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    if ids is None:
        return "", ()
    if not ids:
        return " WHERE 0", ()
    return f" WHERE id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids)
