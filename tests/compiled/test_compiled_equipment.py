"""Compiled reads of Equipment.events, the contract's nested connection, against the
resolvers: the same bytes both ways (see test_compiled_orders.py for the harness's idea).
`seed_events` gives the machines of compiled_support.seed their own edge data: a machine with
more than a default page, one with exactly a page, one with a board's page and one more, a
few, none; every kind, every nullable field null and not, events sharing a timestamp and
inserted out of time order, unicode and control characters, microsecond times, Float and Int
edges. Each machine's page, cursors, totalCount and pageInfo come from one statement, its
arguments parameters bound per request."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from compiled_support import (
    MICRO,
    TINY,
    TRICKY,
    WHOLE,
    Case,
    differences,
    post,
    seed,
    two_apps,
)
from sqlalchemy import select, update

from backend.auth.models import User
from backend.catalog.models import Equipment, EquipmentState
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.equipment.models import EquipmentEvent, EquipmentEventKind
from backend.gql import encode_cursor
from backend.principal import Role
from backend.settings import Settings

MakeUser = Callable[..., Awaitable[tuple[User, str]]]

EVENT_FIELDS = """
  __typename id eventId kind occurredAt receivedAt state reason counter increment name value
  unit alarmCode alarmActive message equipment { __typename id code }
"""

PAGE_INFO = "pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }"


def events(arguments: str = "", fields: str = EVENT_FIELDS) -> str:
    """`workCenters { equipment { events(arguments) { everything } } }`."""
    args = f"({arguments})" if arguments else ""
    return (
        "{ workCenters { code equipment { code "
        f"events{args} {{ __typename totalCount {PAGE_INFO} "
        f"edges {{ __typename cursor node {{ {fields} }} }} }} }} }} }}"
    )


# Events per machine (seed's codes): EQ-1 more than a default page (50), EQ-4 exactly one,
# EQ-5 a board's page (20) and one more, EQ-2 a few, EQ-3 and EQ-7 none, EQ-0 (no work centre)
# some that no workCenters read reaches.
COUNTS = {"EQ-1": 130, "EQ-4": 50, "EQ-5": 21, "EQ-2": 3, "EQ-6": 1, "EQ-0": 4}
KINDS = list(EquipmentEventKind)
STATES = list(EquipmentState)
TIMES = [MICRO, WHOLE, TINY, MICRO + dt.timedelta(microseconds=1)]
FLOATS = [0.1, -0.0, 0.0, 1e16, 1e15, 1e-7, 0.00001, 123.456, 2.5, -1e300, None]
INTS = [0, 1, -5, 2**31 - 1, -(2**31), None]


def _event(code: str, i: int, equipment_id: int) -> EquipmentEvent:
    """The i-th event of a machine: the kinds in turn, each with its own fields' edges."""
    kind = KINDS[i % len(KINDS)]
    event = EquipmentEvent(
        equipment_id=equipment_id,
        event_id=f"{code}/{i}" if i % 7 else f"{TRICKY} {i}",
        kind=kind,
        # Several share a timestamp; time order is not id order.
        occurred_at=TIMES[(i * 3) % len(TIMES)] - dt.timedelta(minutes=i % 5),
        received_at=TIMES[i % len(TIMES)],
    )
    n = i // len(KINDS)
    if kind is EquipmentEventKind.STATE:
        event.state = STATES[n % len(STATES)]
        event.reason = [TRICKY, None, ""][n % 3]
    elif kind is EquipmentEventKind.COUNTER:
        event.counter = ["good", "reject", TRICKY][n % 3]
        event.increment = INTS[n % len(INTS)]
    elif kind is EquipmentEventKind.VALUE:
        event.name = "temperature" if n % 2 else "😀 pressure"
        event.value = FLOATS[n % len(FLOATS)]
        event.unit = ["°C", None, "bar"][n % 3]
    else:
        event.alarm_code = ["E-42", TRICKY][n % 2]
        event.alarm_active = [True, False, None][n % 3]
        event.message = [TRICKY, None, "Hydraulic\npressure low"][n % 3]
    return event


async def seed_events(db: Database) -> dict[str, Any]:
    """compiled_support.seed and COUNTS events per machine, inserted machine by machine in
    turn (so one machine's ids are not contiguous); returns each machine's event ids."""
    await seed(db)
    async with db.write() as session:
        machines = {e.code: e.id for e in await session.scalars(select(Equipment))}
        for i in range(max(COUNTS.values())):
            for code, count in COUNTS.items():
                if i < count:
                    session.add(_event(code, i, machines[code]))
                    await session.flush()
    async with db.read() as session:
        rows = (await session.execute(select(EquipmentEvent.equipment_id, EquipmentEvent.id))).all()
    by_code = {
        code: sorted(r.id for r in rows if r.equipment_id == id_) for code, id_ in machines.items()
    }
    return {"ids": by_code}


def corpus(ids: dict[str, list[int]] | None = None) -> list[Case]:
    """Every document runs both ways; `ids`: each machine's event ids (for cursors)."""
    ids = ids or {"EQ-1": list(range(1, 131)), "EQ-5": list(range(1, 22))}
    c, r = "compiled", "resolvers"
    cursor_50 = encode_cursor(ids["EQ-1"][49])
    cursor_eq5 = encode_cursor(ids["EQ-5"][-1])
    return [
        ("every field, default page", events(), {}, c),
        ("a board's page", events("first: 20"), {}, c),
        ("the maximum page", events("first: 500"), {}, c),
        ("over the maximum page", events("first: 9999", "id kind"), {}, c),
        ("first: 0", events("first: 0"), {}, c),
        ("first: 1", events("first: 1", "eventId"), {}, c),
        ("after a cursor", events(f'first: 30, after: "{cursor_50}"', "eventId"), {}, c),
        ("after EQ-5's last event", events(f'after: "{cursor_eq5}"', "id"), {}, c),
        ("after key 0", events(f'first: 3, after: "{encode_cursor(0)}"', "id"), {}, c),
        ("after an empty cursor (no condition, a previous page)", events('after: ""'), {}, c),
        ("after null", events("after: null, first: null, kinds: null", "id"), {}, c),
        ("kinds: ALARM", events("kinds: [ALARM]"), {}, c),
        ("kinds: STATE, COUNTER", events("first: 7, kinds: [STATE, COUNTER]"), {}, c),
        ("kinds: a single value", events("first: 5, kinds: VALUE"), {}, c),
        ("kinds: empty (no condition)", events("first: 5, kinds: []", "kind"), {}, c),
        (
            "variables",
            "query V($n: Int, $a: String, $k: [EquipmentEventKind!]) { workCenters { "
            "equipment { code events(first: $n, after: $a, kinds: $k) { totalCount "
            f"{PAGE_INFO} edges {{ cursor node {{ eventId kind }} }} }} }} }} }}",
            {"n": 4, "a": cursor_50, "k": ["COUNTER", "ALARM"]},
            c,
        ),
        (
            "variables, null and absent",
            "query V($n: Int, $a: String, $k: [EquipmentEventKind!]) { workCenters { "
            "equipment { code events(first: $n, after: $a, kinds: $k) { totalCount "
            f"{PAGE_INFO} edges {{ cursor node {{ eventId }} }} }} }} }} }}",
            {"n": None},
            c,
        ),
        (
            "two nested connections with different arguments, aliased",
            "query T($after: String) { workCenters { equipment { code "
            "alarms: events(first: 2, kinds: [ALARM]) { n: totalCount p: pageInfo { "
            "more: hasNextPage last: endCursor } e: edges { c: cursor n: node { k: kind "
            "on: alarmActive } } } "
            "rest: events(first: 3, after: $after) { totalCount pageInfo { hasPreviousPage "
            "startCursor } edges { cursor } } "
            "all: events { totalCount } } } }",
            {"after": cursor_50},
            c,
        ),
        (
            "fragments and inline fragments, a field selected twice",
            "fragment Ev on EquipmentEvent { eventId value ... on EquipmentEvent { unit } } "
            "fragment Conn on EquipmentEventConnection { totalCount edges { node { ...Ev } } } "
            "fragment Eq on Equipment { code events(first: 6, kinds: [VALUE]) { ...Conn "
            "edges { cursor node { kind eventId } } pageInfo { endCursor } "
            "pageInfo { hasNextPage } } } "
            "{ workCenters { equipment { ...Eq ... on Equipment { state } } } }",
            {},
            c,
        ),
        (
            "only totalCount, only pageInfo, only cursors",
            "{ workCenters { equipment { a: events(kinds: [STATE]) { totalCount } "
            "b: events(first: 2) { pageInfo { hasNextPage startCursor } } "
            "c: events(first: 2) { edges { cursor } } d: events { __typename } } } }",
            {},
            c,
        ),
        (
            "@skip and @include on the connection and its parts",
            "query S($no: Boolean!, $yes: Boolean!) { workCenters { equipment { "
            "events(first: 3) @include(if: $yes) { totalCount @skip(if: $yes) "
            "edges @include(if: $no) { cursor } pageInfo { endCursor } } "
            "hidden: events @skip(if: $yes) { totalCount } } } }",
            {"no": False, "yes": True},
            c,
        ),
        (
            "an event's machine and its own events",
            "{ workCenters { equipment { events(first: 4, kinds: [COUNTER]) { edges { node { "
            "increment equipment { code state events(first: 2) { totalCount edges { node { "
            "eventId } } } } } } } } } }",
            {},
            c,
        ),
        ("with the work centres' other fields", f"{{ __typename {events('first: 2')[2:]}", {}, c),
        # ---- the resolvers answer these
        ("negative first", events("first: -1", "id"), {}, r),
        (
            "negative first, as a variable",
            "query N($n: Int) { workCenters { equipment { events(first: $n) { totalCount } } } }",
            {"n": -3},
            r,
        ),
        ("invalid cursor", events('after: "bm90LWEtY3Vyc29y"', "id"), {}, r),
        ("not base64", events('after: "!!!"', "id"), {}, r),
        ("a cursor at the largest key", events(f'after: "{encode_cursor(2**63 - 1)}"'), {}, r),
        ("a cursor beyond the key", events(f'after: "{encode_cursor(2**63)}"', "id"), {}, r),
        (
            "an event's machine's work centre (not declared)",
            "{ workCenters { equipment { events(first: 1) { edges { node { equipment { "
            "workCenter { code } } } } } } } }",
            {},
            r,
        ),
        (
            "a machine's OEE next to its events (not declared)",
            "{ workCenters { equipment { events(first: 1) { totalCount } "
            'oee(from: "2026-03-01T00:00:00Z", to: "2026-03-02T00:00:00Z") { oee } } } }',
            {},
            r,
        ),
    ]


@pytest.fixture(scope="module")
async def clients(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with two_apps(settings) as pair:
        yield pair


def _machines(body: bytes) -> dict[str, Any]:
    data = httpx.Response(200, content=body).json()["data"]
    return {e["code"]: e for wc in data["workCenters"] for e in wc["equipment"]}


@pytest.mark.postgres
async def test_equipment_events_compiled_as_the_resolvers(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, off = clients
    facts = await seed_events(db)
    _, token = await make_user("board", Role.SUPERVISOR)
    cases = corpus(facts["ids"])
    problems = await differences(on, off, cases, token)
    # The pages ran over the data: each machine its own page, count and cursors.
    body, path = await post(on, events(), {}, token)
    assert path == "compiled"
    machines = _machines(body)
    for code, count in COUNTS.items():
        if code == "EQ-0":
            assert code not in machines  # no work centre
            continue
        connection = machines[code]["events"]
        assert connection["totalCount"] == count
        assert connection["pageInfo"]["hasNextPage"] is (count > 50)
        assert [e["cursor"] for e in connection["edges"]] == [
            encode_cursor(i) for i in facts["ids"][code][:50]
        ]
    assert machines["EQ-3"]["events"]["edges"] == []
    assert machines["EQ-3"]["events"]["pageInfo"]["startCursor"] is None
    assert not problems, "\n\n".join(problems)


@pytest.mark.postgres
async def test_walking_every_machine_to_the_end(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    """Pages of 7, each machine's `after` its own last endCursor (variables): the events
    come once each, in id order, until hasNextPage is false."""
    on, off = clients
    facts = await seed_events(db)
    _, token = await make_user("walker", Role.OPERATOR)
    query = (
        "query W($after: String, $k: [EquipmentEventKind!]) { workCenters { equipment { code "
        "events(first: 7, after: $after, kinds: $k) { totalCount pageInfo { hasNextPage "
        "hasPreviousPage endCursor } edges { cursor node { id eventId } } } } } }"
    )
    for kinds in (None, ["VALUE", "STATE"]):
        for code in ("EQ-1", "EQ-5", "EQ-3"):
            after: str | None = None
            seen: list[str] = []
            while True:
                variables = {"after": after, "k": kinds}
                body_on, path = await post(on, query, variables, token)
                body_off, _ = await post(off, query, variables, token)
                assert body_on == body_off
                assert path == "compiled"
                page = _machines(body_on)[code]["events"]
                assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
                seen += [e["cursor"] for e in page["edges"]]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
            expected = facts["ids"][code]
            if kinds:
                expected = [i for n, i in enumerate(expected) if KINDS[n % 4].value in kinds]
            assert seen == [encode_cursor(i) for i in expected]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("column", "value"),
    [("increment", 2**31), ("increment", -(2**31) - 1), ("value", math.nan), ("value", 9.5e21)],
)
async def test_values_without_an_exact_printing_go_to_the_resolvers(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    column: str,
    value: float,
) -> None:
    """A bigint beyond GraphQL's 32-bit Int (graphql-core refuses it), NaN, a Float whose
    shortest digits PostgreSQL does not print: the statement fails, the resolvers answer."""
    on, off = clients
    facts = await seed_events(db)
    _, token = await make_user("edges", Role.SUPERVISOR)
    async with db.write() as session:
        await session.execute(
            update(EquipmentEvent)
            .where(EquipmentEvent.id == facts["ids"]["EQ-2"][0])
            .values({column: value})
        )
    query = events("first: 2", "eventId increment value")
    before = METRICS.fallbacks["sql_error"]
    body_on, path = await post(on, query, {}, token)
    body_off, _ = await post(off, query, {}, token)
    assert body_on == body_off
    assert path == "resolvers"
    assert METRICS.fallbacks["sql_error"] == before + 1


async def test_equipment_events_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    if db.dialect_name != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the compiled path answers (tests above)")
    on, off = clients
    facts = await seed_events(db)
    _, token = await make_user("lite", Role.SUPERVISOR)
    compiled = [case for case in corpus(facts["ids"]) if case[3] == "compiled"]
    before = METRICS.fallbacks["engine"]
    for name, query, variables, _ in compiled:
        body_on, path = await post(on, query, variables, token)
        body_off, _ = await post(off, query, variables, token)
        assert body_on == body_off, name
        assert path == "resolvers"
        assert b'"errors"' not in body_on, name
    assert METRICS.fallbacks["engine"] == before + len(compiled)
