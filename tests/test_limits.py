"""Request limits (BEHAVIOUR.md "Limits"), exercised over HTTP against a small schema.

The schema is built here, not taken from the application, so these tests pin the limits
themselves: a recursive ``Node`` whose ``children(first:)`` list makes cost and depth easy to
dial, and a mutation whose counter shows whether a refused document executed anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import strawberry
from graphql import parse, validate
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL

from backend.limits import BodySizeLimit, limit_extensions, page_size, query_cost_rule
from backend.settings import Settings

MIB = 1024 * 1024
CONTRACT = {
    "max_depth": 15,
    "max_aliases": 50,
    "max_cost": 50_000,
    "default_page_size": 50,
    "max_page_size": 500,
    "max_body_bytes": MIB,
}
SETTINGS = Settings.model_validate(CONTRACT)
Headers = Sequence[tuple[bytes, bytes]]
TOO_LARGE = {"errors": [{"message": f"request body too large (limit {MIB} bytes)"}]}

# Resolvers record here what ran, so a test can prove a refused document ran nothing.
STATE = {"counter": 0, "resolver_calls": 0}


@strawberry.type
class Node:
    value: int  # the nesting level, so deep responses are easy to check

    @strawberry.field
    def children(self, first: int | None = None) -> list[Node]:
        STATE["resolver_calls"] += 1
        return [Node(value=self.value + 1) for _ in range(page_size(first, SETTINGS))]


@strawberry.type
class Query:
    @strawberry.field
    def root(self) -> Node:
        STATE["resolver_calls"] += 1
        return Node(value=1)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def increment(self) -> Node:
        STATE["counter"] += 1
        return Node(value=STATE["counter"])


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncIterator[Node]:
        STATE["resolver_calls"] += 1
        yield Node(value=1)


SCHEMA = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=limit_extensions(SETTINGS),
)


def make_app() -> Starlette:
    view: GraphQL[None, None] = GraphQL(SCHEMA, graphql_ide=None)
    return Starlette(
        routes=[Route("/graphql", view)],
        middleware=[Middleware(BodySizeLimit, max_body_bytes=SETTINGS.max_body_bytes)],
    )


@pytest.fixture(autouse=True)
def reset_state() -> None:
    STATE.update(counter=0, resolver_calls=0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def post(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str | None]:
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]


def nested(levels: int, prefix: str = "query") -> str:
    """A document with ``levels`` nested ``children`` under ``root``.

    Strawberry counts the top-level field as depth 0, so ``value`` sits at depth ``levels``+1.
    """
    inner = "value"
    for _ in range(levels):
        inner = f"children(first: 1) {{ {inner} }}"
    return f"{prefix} {{ root {{ {inner} }} }}"


def padded_request(size: int) -> bytes:
    """A valid GraphQL request of exactly ``size`` bytes: only the limit can refuse it."""
    body = json.dumps({"query": "{ root { value } }"}).encode()
    return body + b" " * (size - len(body))


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_settings_defaults_match_the_contract() -> None:
    defaults = {name: Settings.model_fields[name].default for name in CONTRACT}
    assert defaults == CONTRACT


async def test_normal_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ root { value children(first: 2) { value } } }"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "data": {"root": {"value": 1, "children": [{"value": 2}, {"value": 2}]}}
    }


async def test_get_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ root { value } }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"root": {"value": 1}}}


# --- depth -------------------------------------------------------------------------------


async def test_depth_15_is_allowed(client: httpx.AsyncClient) -> None:
    body = await post(client, nested(14))
    assert "errors" not in body
    node = body["data"]["root"]
    for _ in range(14):
        [node] = node["children"]
    assert node["value"] == 15


async def test_depth_16_is_refused_before_execution(client: httpx.AsyncClient) -> None:
    body = await post(client, nested(15))
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == [
        "'anonymous' exceeds maximum operation depth of 15"
    ]
    assert STATE["resolver_calls"] == 0


async def test_too_deep_mutation_changes_nothing(client: httpx.AsyncClient) -> None:
    body = await post(client, nested(15, prefix="mutation").replace("root", "increment"))
    assert "maximum operation depth" in body["errors"][0]["message"]
    assert STATE["counter"] == 0


# --- aliases -----------------------------------------------------------------------------


def aliased(count: int, field: str = "root", prefix: str = "query") -> str:
    return prefix + " { " + " ".join(f"a{i}: {field} {{ value }}" for i in range(count)) + " }"


async def test_50_aliases_are_allowed(client: httpx.AsyncClient) -> None:
    body = await post(client, aliased(50))
    assert "errors" not in body
    assert len(body["data"]) == 50


async def test_51_aliases_are_refused(client: httpx.AsyncClient) -> None:
    body = await post(client, aliased(51))
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == ["51 aliases found. Allowed: 50"]
    assert STATE["resolver_calls"] == 0


async def test_too_many_aliases_in_a_mutation_changes_nothing(client: httpx.AsyncClient) -> None:
    body = await post(client, aliased(51, field="increment", prefix="mutation"))
    assert body["errors"][0]["message"] == "51 aliases found. Allowed: 50"
    assert STATE["counter"] == 0


# --- cost --------------------------------------------------------------------------------

COSTLY = "query { root { children(first: 500) { children(first: 500) { value } } } }"
# root 1 + (children 1 + 500 * (children 1 + 500 * value 1))
COSTLY_COST = 1 + (1 + 500 * (1 + 500))


async def test_costly_query_is_refused(client: httpx.AsyncClient) -> None:
    body = await post(client, COSTLY)
    assert body["data"] is None
    assert codes(body) == ["QUERY_TOO_COSTLY"]
    message = body["errors"][0]["message"]
    assert str(COSTLY_COST) in message
    assert "50000" in message
    assert STATE["resolver_calls"] == 0


async def test_affordable_nested_pages_pass(client: httpx.AsyncClient) -> None:
    body = await post(
        client, "{ root { children(first: 100) { children(first: 100) { value } } } }"
    )
    assert "errors" not in body
    assert len(body["data"]["root"]["children"]) == 100


async def test_costly_mutation_is_refused_and_changes_nothing(client: httpx.AsyncClient) -> None:
    refused = await post(client, COSTLY.replace("query", "mutation").replace("root", "increment"))
    assert codes(refused) == ["QUERY_TOO_COSTLY"]
    assert STATE["counter"] == 0

    accepted = await post(client, "mutation { increment { value } }")
    assert accepted == {"data": {"increment": {"value": 1}}}
    assert STATE["counter"] == 1


VARIABLE_QUERY = """
query Pages($n: Int) {
  root { children(first: $n) { children(first: $n) { value } } }
}
"""


async def test_first_from_variables_is_counted(client: httpx.AsyncClient) -> None:
    refused = await post(client, VARIABLE_QUERY, {"n": 500})
    assert codes(refused) == ["QUERY_TOO_COSTLY"]
    assert "Operation 'Pages'" in refused["errors"][0]["message"]
    assert STATE["resolver_calls"] == 0

    accepted = await post(client, VARIABLE_QUERY, {"n": 5})
    assert "errors" not in accepted
    assert len(accepted["data"]["root"]["children"]) == 5


async def test_absent_variable_counts_as_the_default_page(client: httpx.AsyncClient) -> None:
    # 1 + (1 + 50 * (1 + 50)) = 2552 fits; the resolver then returns the default 50 items.
    body = await post(client, VARIABLE_QUERY)
    assert "errors" not in body
    assert len(body["data"]["root"]["children"]) == 50


async def test_variable_default_is_counted(client: httpx.AsyncClient) -> None:
    body = await post(client, VARIABLE_QUERY.replace("$n: Int)", "$n: Int = 500)"))
    assert codes(body) == ["QUERY_TOO_COSTLY"]


async def test_cost_hidden_in_named_fragments_is_counted(client: httpx.AsyncClient) -> None:
    query = """
    query { root { ...Outer } }
    fragment Outer on Node { children(first: 500) { ...Inner } }
    fragment Inner on Node { children(first: 500) { value } }
    """
    body = await post(client, query)
    assert codes(body) == ["QUERY_TOO_COSTLY"]
    assert str(COSTLY_COST) in body["errors"][0]["message"]
    assert STATE["resolver_calls"] == 0


async def test_cost_hidden_in_inline_fragments_is_counted(client: httpx.AsyncClient) -> None:
    query = """
    query {
      root { ... on Node { children(first: 500) { ... { children(first: 500) { value } } } } }
    }
    """
    body = await post(client, query)
    assert codes(body) == ["QUERY_TOO_COSTLY"]


async def test_costly_subscription_is_refused_before_it_starts() -> None:
    # Strawberry ignores a preset result for subscriptions, so this path raises instead.
    costly = COSTLY.replace("query", "subscription").replace("root", "ticks")
    results = [r async for r in await SCHEMA.subscribe(costly)]
    assert [(r.data, [e.extensions for e in r.errors or []]) for r in results] == [
        (None, [{"code": "QUERY_TOO_COSTLY"}])
    ]
    assert STATE["resolver_calls"] == 0

    cheap = [r async for r in await SCHEMA.subscribe("subscription { ticks { value } }")]
    assert [r.data for r in cheap] == [{"ticks": {"value": 1}}]


# --- the rule on its own -----------------------------------------------------------------


def rule_errors(query: str, max_cost: int, variables: dict[str, Any] | None = None) -> list[str]:
    rule = query_cost_rule(max_cost, 50, 500, variables=variables)
    return [e.message for e in validate(SCHEMA._schema, parse(query), [rule])]


@pytest.mark.parametrize(
    ("query", "cost"),
    [
        ("{ root { value } }", 2),
        ("{ root { children(first: 3) { value } } }", 1 + (1 + 3 * 1)),
        ("{ root { children { value } } }", 1 + (1 + 50 * 1)),
        ("{ root { children(first: 9000) { value } } }", 1 + (1 + 500 * 1)),
        ("{ root { children(first: null) { value } } }", 1 + (1 + 50 * 1)),
        ("{ root { ...F ...F } } fragment F on Node { children(first: 2) { value } }", 7),
        ("{ __typename root { __typename } }", 3),
    ],
)
def test_cost_is_exact_at_the_budget(query: str, cost: int) -> None:
    assert rule_errors(query, max_cost=cost) == []
    [message] = rule_errors(query, max_cost=cost - 1)
    assert f"costs {cost}, over the budget of {cost - 1}" in message


def test_unknown_variables_count_as_the_largest_page() -> None:
    query = "query ($n: Int) { root { children(first: $n) { value } } }"
    assert rule_errors(query, max_cost=502) == []
    assert rule_errors(query, max_cost=501) != []
    assert rule_errors(query, max_cost=7, variables={"n": 5}) == []


def test_fragment_cycles_do_not_hang_the_rule() -> None:
    query = """
    { root { ...A } }
    fragment A on Node { children(first: 2) { ...B } }
    fragment B on Node { children(first: 2) { ...A } }
    """
    assert rule_errors(query, max_cost=1000) == []


def test_repeated_fragment_spreads_are_counted_without_blowing_up() -> None:
    # Each fragment spreads the next one twice: the expanded tree has 2**40 leaves.
    levels = 40
    fragments = "".join(
        f"fragment F{i} on Node {{ value a: children(first: 1) {{ ...F{i + 1} }} "
        f"b: children(first: 1) {{ ...F{i + 1} }} }}\n"
        for i in range(levels)
    )
    query = f"{{ root {{ ...F0 }} }}\n{fragments}fragment F{levels} on Node {{ value }}"
    [message] = rule_errors(query, max_cost=50_000)
    assert "over the budget of 50000" in message


# --- page size ---------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "expected"), [(None, 50), (1, 1), (500, 500), (501, 500)])
def test_page_size(first: int | None, expected: int) -> None:
    assert page_size(first, SETTINGS) == expected


@pytest.mark.parametrize("first", [0, -1])
def test_page_size_refuses_non_positive(first: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        page_size(first, SETTINGS)


# --- body size ---------------------------------------------------------------------------


async def test_body_at_the_limit_passes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=padded_request(MIB), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"root": {"value": 1}}}


async def test_body_over_the_limit_with_content_length_gets_413(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", content=padded_request(MIB + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert STATE["resolver_calls"] == 0


async def test_streamed_body_at_the_limit_passes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        content=chunks(padded_request(MIB)),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == {"data": {"root": {"value": 1}}}


async def test_streamed_body_over_the_limit_gets_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        content=chunks(padded_request(MIB + 1)),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert STATE["resolver_calls"] == 0


def http_scope(method: str, query_string: bytes = b"", headers: Headers = ()) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": query_string,
        "headers": [(b"host", b"test"), *headers],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }


async def test_declared_length_over_the_limit_is_refused_without_reading() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body of a request declared too large must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % (MIB + 1))]
    await make_app()(http_scope("POST", headers=headers), receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == TOO_LARGE


async def test_query_string_over_the_limit_gets_414() -> None:
    # httpx refuses to build URLs this long, so the request goes in as a raw ASGI call.
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    query = b"query=%7B+root+%7B+value+%7D+%7D"
    await make_app()(http_scope("GET", query + b"&pad=" + b"x" * MIB), receive, send)
    assert sent[0]["status"] == 414
    assert json.loads(sent[1]["body"]) == {
        "errors": [{"message": f"request query string too long (limit {MIB} bytes)"}]
    }
    assert STATE["resolver_calls"] == 0

    # The same request with a short query string reaches GraphQL.
    sent.clear()
    await make_app()(http_scope("GET", query), receive, send)
    assert sent[0]["status"] == 200
    assert STATE["resolver_calls"] == 1


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_non_http_scopes_pass_through_untouched(scope_type: str) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": f"{scope_type}.connect"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": scope_type, "headers": [(b"content-length", b"99999999")]}
    await BodySizeLimit(app, max_body_bytes=1)(scope, receive, send)
    assert seen == [(scope, receive, send)]
