"""What flows through the bridge: raw observations from a connector, and the machine events
(shaped like the contract's `EquipmentEventInput`) that the outbox stores and the forwarder
sends."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

# The namespace of derived event ids. Changing it would make replayed notifications look new.
EVENT_NAMESPACE = uuid.UUID("6f1c9a52-3d0e-5b7a-9e41-2c8d7b0f5a13")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# A source timestamp further ahead of the bridge clock than this is not believed.
MAX_SOURCE_AHEAD = dt.timedelta(seconds=5)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Observation:
    """One raw reading of one channel.

    `channel` is the signal name, or `signal#reason`, `signal#code`, `signal#active` for the
    secondary sources of STATE and ALARM signals. `source_ts` is the device's timestamp (OPC UA
    SourceTimestamp), None when the device gives none (Modbus).
    """

    channel: str
    value: Any
    received_at: dt.datetime
    source_ts: dt.datetime | None = None
    replayed: bool = False


def event_id(equipment: str, signal: str, tag: str, source_ts: dt.datetime | None, raw: Any) -> str:
    """The event's id: derived from the source timestamp and raw value when there is a source
    timestamp (so a notification replayed after a reconnect maps to the same id and the MES
    counts it as a duplicate), otherwise random. Either way it is stored before any send, and
    every resend reuses it."""
    if source_ts is None:
        return str(uuid.uuid4())
    ns = (source_ts - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{equipment}|{signal}|{tag}|{ns}|{raw!r}"))


def occurred_at(obs: Observation) -> dt.datetime:
    """The source timestamp when it is sane, else the bridge's receive time."""
    ts = obs.source_ts
    if ts is not None and ts.tzinfo is not None and ts <= obs.received_at + MAX_SOURCE_AHEAD:
        return ts
    return obs.received_at


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat()


@dataclass
class MachineEvent:
    """One `EquipmentEventInput`, with its id fixed at creation."""

    event_id: str
    equipment: str
    kind: str
    at: dt.datetime
    fields: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The GraphQL input object (camelCase keys, ISO time), as stored and sent."""
        return {
            "eventId": self.event_id,
            "equipmentCode": self.equipment,
            "kind": self.kind,
            "occurredAt": iso(self.at),
            **{k: v for k, v in self.fields.items() if v is not None},
        }


@dataclass(frozen=True)
class Quarantined:
    """An event kept out of the send queue, with why."""

    event: MachineEvent
    code: str
    message: str
