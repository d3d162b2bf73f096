"""recordEquipmentEvents: each event checked on its own, duplicates by (equipment, eventId)
counted and ignored, only EQUIPMENT and ADMIN may send, at most 1000 events a batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from equipment_events_support import (
    EQUIPMENT,
    ERRORS,
    EVENT,
    RECORD,
    Caller,
    alarm,
    counter,
    equipment,
    make_plant,
    record,
    state,
    value,
)
from sqlalchemy import func, select

from backend.audit.models import AuditEntry
from backend.db import Database
from backend.equipment.models import CounterHour, EquipmentEvent, StateHour
from backend.principal import Role

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T0 = NOW - dt.timedelta(hours=2)
EVENTS = f"""
query($code: String!, $kinds: [EquipmentEventKind!], $first: Int) {{
  equipment(code: $code) {{
    events(kinds: $kinds, first: $first) {{ totalCount edges {{ node {{ {EVENT} }} }} }}
  }}
}}
"""


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    caller = await as_role(Role.ERP, username="erp")
    await make_plant(caller)
    return caller


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]], erp: Caller) -> Caller:
    return await as_role(Role.EQUIPMENT, username="bridge")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def codes(payload: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def stored(db: Database) -> list[tuple[str, str]]:
    """(equipment id, eventId) of every stored event."""
    async with db.read() as session:
        rows = await session.execute(
            select(EquipmentEvent.equipment_id, EquipmentEvent.event_id).order_by(EquipmentEvent.id)
        )
        return [(str(e), i) for e, i in rows.all()]


async def events_of(caller: Caller, code: str, kinds: list[str] | None = None) -> list[Any]:
    data = await caller.data(EVENTS, {"code": code, "kinds": kinds, "first": 500})
    return [edge["node"] for edge in data["equipment"]["events"]["edges"]]


async def test_good_events_are_stored_and_each_bad_one_comes_back_with_its_field(
    bridge: Caller,
) -> None:
    batch: list[dict[str, Any]] = [
        state("s-1", "M-1", at(0), "RUNNING"),  # 0 good
        {**state("s-2", "M-1", at(1), "DOWN"), "state": None},  # 1 no state
        counter("c-1", "M-1", at(2), "good", 10),  # 2 good
        {**counter("c-2", "M-1", at(3), "good", 1), "counter": None},  # 3 no counter
        counter("c-3", "M-1", at(3), "   ", 1),  # 4 blank counter
        {**counter("c-4", "M-1", at(3), "good", 1), "increment": None},  # 5 no increment
        counter("c-5", "M-1", at(3), "good", -1),  # 6 negative increment
        counter("c-6", "M-1", at(3), "reject", 0),  # 7 good: zero is fine
        value("v-1", "M-1", at(4), "temperature", 71.5, "degC"),  # 8 good
        {**value("v-2", "M-1", at(4), "temperature", 1.0), "name": None},  # 9 no name
        {**value("v-3", "M-1", at(4), "temperature", 1.0), "value": None},  # 10 no value
        alarm("a-1", "M-1", at(5), "OVERHEAT", True),  # 11 good
        {**alarm("a-2", "M-1", at(5), "OVERHEAT", True), "alarmCode": None},  # 12 no code
        {**alarm("a-3", "M-1", at(5), "OVERHEAT", True), "alarmActive": None},  # 13 no flag
        state("s-3", "NO-SUCH-MACHINE", at(6), "RUNNING"),  # 14 unknown equipment
        state(" ", "M-1", at(6), "RUNNING"),  # 15 blank eventId
        state("x" * 101, "M-1", at(6), "RUNNING"),  # 16 eventId too long
        state("s-4", "M-1", NOW + dt.timedelta(minutes=10), "RUNNING"),  # 17 future
        state("s-5", "M-1", at(7), "DOWN", "r" * 201),  # 18 reason too long
        counter("c-7", "M-1", at(7), "c" * 65, 1),  # 19 counter name too long
        value("v-4", "M-1", at(7), "n" * 65, 1.0),  # 20 value name too long
        value("v-5", "M-1", at(7), "temperature", 1.0, "u" * 21),  # 21 unit too long
        alarm("a-4", "M-1", at(7), "A" * 65, True),  # 22 alarm code too long
        {**alarm("a-5", "M-1", at(7), "OVERHEAT", False), "message": "m" * 2001},  # 23
        # 24: two faults in one event, both reported
        {**counter("c-8", "NOPE", at(8), "good", -5)},
        # 25: within the allowed clock skew (4 minutes ahead) is fine
        value("v-6", "M-2", NOW + dt.timedelta(minutes=4), "speed", 12.0),
        # 26: the longest allowed strings are fine
        {
            **alarm("e" * 100, "M-2", at(9), "B" * 64, False),
            "message": "m" * 2000,
            "unit": "u" * 20,
        },
        # 27: a time without a zone is ambiguous
        {**value("v-7", "M-2", at(9), "speed", 1.0), "occurredAt": "2026-01-01T10:00:00"},
    ]
    payload = await record(bridge, batch)

    assert codes(payload) == [
        ("INVALID_INPUT", "events.1.state"),
        ("INVALID_INPUT", "events.3.counter"),
        ("INVALID_INPUT", "events.4.counter"),
        ("INVALID_INPUT", "events.5.increment"),
        ("INVALID_INPUT", "events.6.increment"),
        ("INVALID_INPUT", "events.9.name"),
        ("INVALID_INPUT", "events.10.value"),
        ("INVALID_INPUT", "events.12.alarmCode"),
        ("INVALID_INPUT", "events.13.alarmActive"),
        ("NOT_FOUND", "events.14.equipmentCode"),
        ("INVALID_INPUT", "events.15.eventId"),
        ("INVALID_INPUT", "events.16.eventId"),
        ("INVALID_INPUT", "events.17.occurredAt"),
        ("INVALID_INPUT", "events.18.reason"),
        ("INVALID_INPUT", "events.19.counter"),
        ("INVALID_INPUT", "events.20.name"),
        ("INVALID_INPUT", "events.21.unit"),
        ("INVALID_INPUT", "events.22.alarmCode"),
        ("INVALID_INPUT", "events.23.message"),
        ("INVALID_INPUT", "events.24.increment"),
        ("NOT_FOUND", "events.24.equipmentCode"),
        ("INVALID_INPUT", "events.27.occurredAt"),
    ]
    assert all(e["message"] for e in payload["errors"])
    assert (payload["accepted"], payload["duplicates"]) == (7, 0)

    m1 = await events_of(bridge, "M-1")
    assert [e["eventId"] for e in m1] == ["s-1", "c-1", "c-6", "v-1", "a-1"]
    by_id = {e["eventId"]: e for e in m1}
    assert (by_id["s-1"]["kind"], by_id["s-1"]["state"]) == ("STATE", "RUNNING")
    assert (by_id["c-1"]["counter"], by_id["c-1"]["increment"]) == ("good", 10)
    assert (by_id["c-6"]["counter"], by_id["c-6"]["increment"]) == ("reject", 0)
    assert (by_id["v-1"]["name"], by_id["v-1"]["value"], by_id["v-1"]["unit"]) == (
        "temperature",
        71.5,
        "degC",
    )
    assert (by_id["a-1"]["alarmCode"], by_id["a-1"]["alarmActive"]) == ("OVERHEAT", True)
    assert all(e["equipment"] == {"code": "M-1"} for e in m1)
    assert dt.datetime.fromisoformat(by_id["s-1"]["occurredAt"]) == at(0)
    received = dt.datetime.fromisoformat(by_id["s-1"]["receivedAt"])
    assert abs(received - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    m2 = await events_of(bridge, "M-2")
    assert [e["eventId"] for e in m2] == ["v-6", "e" * 100]
    alarm_event = m2[1]
    assert (alarm_event["alarmCode"], alarm_event["alarmActive"]) == ("B" * 64, False)
    assert (len(alarm_event["message"]), alarm_event["unit"]) == (2000, "u" * 20)
    assert (await equipment(bridge, "M-1"))["state"] == "RUNNING"


async def test_only_the_fields_of_the_events_kind_are_kept(bridge: Caller) -> None:
    """A COUNTER event that also carries a state does not change the machine's state."""
    payload = await record(
        bridge,
        [
            {
                **counter("c-1", "M-1", at(0), " good ", 3),
                "state": "DOWN",
                "name": "temperature",
                "value": 5.0,
                "alarmCode": "X",
                "alarmActive": True,
            },
            {**state("s-1", "M-2", at(0), "IDLE", ""), "counter": "good", "increment": 4},
        ],
    )
    assert payload == {"accepted": 2, "duplicates": 0, "errors": []}

    [event] = await events_of(bridge, "M-1")
    assert (event["counter"], event["increment"], event["state"], event["name"]) == (
        "good",
        3,
        None,
        None,
    )
    assert (event["value"], event["alarmCode"], event["alarmActive"]) == (None, None, None)
    assert (await equipment(bridge, "M-1"))["state"] == "OFFLINE"
    [event] = await events_of(bridge, "M-2")
    assert (event["state"], event["reason"], event["counter"], event["increment"]) == (
        "IDLE",
        None,
        None,
        None,
    )


async def test_duplicates_are_counted_and_change_nothing(bridge: Caller, db: Database) -> None:
    first = [
        state("e-1", "M-1", at(0), "RUNNING"),
        counter("e-2", "M-1", at(1), "good", 5),
        # the same eventId again in the same batch, with other content: a duplicate
        counter("e-2", "M-1", at(2), "good", 500),
        # the same eventId on another machine is another event
        counter("e-2", "M-2", at(1), "good", 7),
        state("e-1", "M-2", at(0), "DOWN", "jam"),
    ]
    assert await record(bridge, first) == {"accepted": 4, "duplicates": 1, "errors": []}

    # the whole batch again (a resend after a timeout): nothing new
    assert await record(bridge, first) == {"accepted": 0, "duplicates": 5, "errors": []}
    # a resend mixed with new events and a bad one
    again = [
        state("e-1", "M-1", at(3), "DOWN", "changed"),  # duplicate: the stored one stays
        counter("e-3", "M-1", at(4), "good", 1),
        counter("e-4", "M-1", at(4), "good", -1),
        counter("e-3", "M-1", at(4), "good", 1),
    ]
    payload = await record(bridge, again)
    assert (payload["accepted"], payload["duplicates"]) == (1, 2)
    assert codes(payload) == [("INVALID_INPUT", "events.2.increment")]

    rows = await stored(db)
    assert len(rows) == len(set(rows)) == 5
    m1 = await events_of(bridge, "M-1")
    assert [(e["eventId"], e["increment"]) for e in m1] == [
        ("e-1", None),
        ("e-2", 5),
        ("e-3", 1),
    ]
    assert (m1[0]["state"], m1[0]["reason"]) == ("RUNNING", None)
    machine = await equipment(bridge, "M-1")
    assert (machine["state"], machine["stateReason"]) == ("RUNNING", None)
    async with db.read() as session:
        good = await session.scalar(
            select(func.sum(CounterHour.total)).where(CounterHour.counter == "good")
        )
        starts = await session.scalar(select(func.sum(StateHour.starts)))
    assert (good, starts) == (5 + 7 + 1, 2)


async def test_a_bad_event_id_is_checked_before_duplicates(bridge: Caller) -> None:
    """Ids are trimmed: ' e-1 ' is e-1; a rejected event does not hide a later good one."""
    payload = await record(
        bridge,
        [
            counter("e-1", "M-1", at(0), "good", -1),
            counter(" e-1 ", "M-1", at(0), "good", 2),
            counter("e-1", "M-1", at(0), "good", 3),
        ],
    )
    assert (payload["accepted"], payload["duplicates"], codes(payload)) == (
        1,
        1,
        [("INVALID_INPUT", "events.0.increment")],
    )
    [event] = await events_of(bridge, "M-1")
    assert (event["eventId"], event["increment"]) == ("e-1", 2)


@pytest.mark.parametrize(
    "roles",
    [
        (Role.OPERATOR,),
        (Role.SUPERVISOR,),
        (Role.QUALITY,),
        (Role.INTEGRATOR,),
        (Role.ERP,),
        (Role.OPERATOR, Role.SUPERVISOR, Role.QUALITY, Role.INTEGRATOR, Role.ERP),
    ],
    ids=["operator", "supervisor", "quality", "integrator", "erp", "all-but-two"],
)
async def test_other_roles_are_refused_and_nothing_is_written(
    as_role: Callable[..., Awaitable[Caller]], erp: Caller, db: Database, roles: tuple[Role, ...]
) -> None:
    caller = await as_role(*roles)
    async with db.read() as session:
        audits_before = await session.scalar(select(func.count()).select_from(AuditEntry))
    payload = await record(caller, [state("s-1", "M-1", at(0), "RUNNING")])
    assert (payload["accepted"], payload["duplicates"], codes(payload)) == (
        0,
        0,
        [("FORBIDDEN", None)],
    )
    assert await stored(db) == []
    assert (await equipment(caller, "M-1"))["state"] == "OFFLINE"
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == audits_before


async def test_anonymous_is_refused(anonymous: Caller, erp: Caller, db: Database) -> None:
    body = await anonymous(RECORD, {"events": [state("s-1", "M-1", at(0), "RUNNING")]})
    payload = (body.get("data") or {}).get("recordEquipmentEvents")
    if payload is not None:
        assert codes(payload) == [("FORBIDDEN", None)]
    else:
        assert body["errors"]
    assert await stored(db) == []


async def test_equipment_and_admin_may_send_also_with_an_api_token(
    as_role: Callable[..., Awaitable[Caller]], erp: Caller, client: httpx.AsyncClient, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)
    assert (await record(admin, [state("a-1", "M-1", at(0), "IDLE")]))["accepted"] == 1
    user = await as_role(Role.EQUIPMENT)
    assert (await record(user, [state("u-1", "M-1", at(1), "RUNNING")]))["accepted"] == 1

    created = await admin.data(
        f"""mutation {{ createApiToken(input: {{name: "line-1-bridge", roles: [EQUIPMENT]}}) {{
            token {ERRORS} }} }}"""
    )
    token = created["createApiToken"]["token"]
    assert token
    response = await client.post(
        "/graphql",
        json={"query": RECORD, "variables": {"events": [state("t-1", "M-1", at(2), "DOWN")]}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.json()["data"]["recordEquipmentEvents"] == {
        "accepted": 1,
        "duplicates": 0,
        "errors": [],
    }
    assert [i for _, i in await stored(db)] == ["a-1", "u-1", "t-1"]
    async with db.read() as session:
        actors = list(
            await session.scalars(
                select(AuditEntry.actor)
                .where(AuditEntry.action == "equipment.events")
                .order_by(AuditEntry.sequence)
            )
        )
    assert actors[-1] == "line-1-bridge"


async def test_a_batch_may_hold_at_most_1000_events(bridge: Caller, db: Database) -> None:
    too_many = [counter(f"c-{i}", "M-1", at(i / 100), "good", 1) for i in range(1001)]
    payload = await record(bridge, too_many)
    assert (payload["accepted"], payload["duplicates"], codes(payload)) == (
        0,
        0,
        [("INVALID_INPUT", "events")],
    )
    assert await stored(db) == []

    payload = await record(bridge, too_many[:1000])
    assert payload == {"accepted": 1000, "duplicates": 0, "errors": []}
    async with db.read() as session:
        assert await session.scalar(select(func.sum(CounterHour.total))) == 1000
    assert await record(bridge, []) == {"accepted": 0, "duplicates": 0, "errors": []}


async def test_an_event_the_schema_cannot_read_is_named_and_nothing_is_written(
    bridge: Caller, db: Database
) -> None:
    """A value the GraphQL types refuse (an Int over 32 bits) fails the whole request before
    any resolver runs; the message names the item, so a sender can take it out (it is the
    caller's mistake, not a fault to mask)."""
    events = [counter("c-0", "M-1", at(1), "good", 5), counter("c-1", "M-1", at(2), "good", 2**40)]
    body = await bridge(RECORD, {"events": events})
    assert body["data"] is None
    [error] = body["errors"]
    assert "[1].increment" in error["message"], error
    assert "32-bit" in error["message"], error
    assert await stored(db) == []


async def test_one_batch_for_many_machines_with_long_codes(
    erp: Caller, bridge: Caller, db: Database
) -> None:
    """The batch's audit must hold however many machines it touches."""
    machines = [f"{'PRESS-' * 10}{i:03d}" for i in range(5)]  # 63 characters each
    await make_plant(
        erp,
        [
            {
                "code": "WC-LONG",
                "name": "Long codes",
                "equipment": [{"code": c, "name": f"Press {c[-3:]}"} for c in machines],
            }
        ],
    )
    payload = await record(
        bridge, [state(f"s-{i}", code, at(i), "RUNNING") for i, code in enumerate(machines)]
    )
    assert payload == {"accepted": 5, "duplicates": 0, "errors": []}
    for code in machines:
        assert (await equipment(bridge, code))["state"] == "RUNNING"
    payload = await record(
        bridge,
        [state("s-0", machines[0], at(9), "DOWN"), state("s-0", machines[1], at(9), "DOWN")],
    )
    assert (payload["accepted"], payload["duplicates"]) == (1, 1)
    async with db.read() as session:
        entries = (
            await session.execute(
                select(AuditEntry.entity_id, AuditEntry.changes)
                .where(AuditEntry.action == "equipment.events")
                .order_by(AuditEntry.sequence)
            )
        ).all()
    assert [tuple(e) for e in entries] == [
        *[(code, {"accepted": 1, "duplicates": 0}) for code in machines],
        (machines[1], {"accepted": 1, "duplicates": 0}),
    ]


async def test_the_node_of_an_event_and_its_equipment(bridge: Caller) -> None:
    await record(bridge, [alarm("a-1", "M-3", at(0), "E-STOP", True)])
    [event] = await events_of(bridge, "M-3")
    node = (
        await bridge.data(
            f"query($id: ID!) {{ node(id: $id) {{ ... on EquipmentEvent {{ {EVENT} }} }} }}",
            {"id": event["id"]},
        )
    )["node"]
    assert node == event
    machine = (
        await bridge.data(
            f"query($id: ID!) {{ node(id: $id) {{ ... on Equipment {{ {EQUIPMENT} }} }} }}",
            {"id": (await equipment(bridge, "M-3"))["id"]},
        )
    )["node"]
    assert (machine["code"], machine["workCenter"]) == ("M-3", {"code": "WC-2"})
