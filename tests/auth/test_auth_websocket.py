"""Sign-in over the WebSocket: `connection_init` carries the token (graphql-transport-ws)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from itsdangerous import URLSafeTimedSerializer

from backend.auth.models import User
from backend.principal import Role

Gql = Any  # tests/conftest.py's caller
MakeUser = Callable[..., Awaitable[tuple[User, str]]]
AsRole = Callable[..., Awaitable[Gql]]
WAIT = 5.0  # seconds; only reached when a test fails

ORDER_CHANGED = """
subscription Watch($number: String) {
  productionOrderChanged(number: $number) { number status quantity product { code } }
}
"""
UPSERT_MATERIALS = """
mutation {
  upsertMaterials(input: [
    {code: "BREAD", name: "Bread", kind: FINISHED, unit: "pcs", lotControlled: true},
    {code: "FLOUR", name: "Flour", kind: RAW, unit: "kg", lotControlled: true}
  ]) { errors { code message field } }
}
"""
UPSERT_ORDER = """
mutation Upsert($quantity: Decimal!) {
  upsertProductionOrder(input: {
    externalId: "ERP-1", number: "PO-1", productCode: "BREAD", quantity: $quantity,
    components: [{materialCode: "FLOUR", quantity: "5"}],
    operations: [{sequence: 10, name: "Bake"}]
  }) { order { number status } errors { code message field } }
}
"""
RELEASE = 'mutation { releaseProductionOrder(number: "PO-1") { errors { code message } } }'


@asynccontextmanager
async def socket_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that opens WebSockets to the app in-process.

    Not a fixture: its task group must be entered and left in the test's own task.
    """
    async with httpx.AsyncClient(
        transport=ASGIWebSocketTransport(app=app), base_url="http://mes.test"
    ) as client:
        yield client


def connect(client: httpx.AsyncClient) -> Any:
    return aconnect_ws("/graphql", client, subprotocols=["graphql-transport-ws"])


async def close_code_after_init(
    client: httpx.AsyncClient, payload: dict[str, Any] | None
) -> int | None:
    """Sends `connection_init` with `payload`; the close code the server answers with."""
    async with connect(client) as ws:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await ws.send_json(message)
        try:
            reply = await ws.receive_json(timeout=WAIT)
        except WebSocketDisconnect as closed:
            return closed.code
        pytest.fail(f"expected the socket to close, got {reply}")
    return None


async def signed_in(ws: AsyncWebSocketSession, token: str) -> None:
    await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    ack = await ws.receive_json(timeout=WAIT)
    assert ack["type"] == "connection_ack", ack


async def next_message(ws: AsyncWebSocketSession, wait: float = WAIT) -> dict[str, Any]:
    """The next message other than a ping (answered) or pong."""
    while True:
        message: dict[str, Any] = await ws.receive_json(timeout=wait)
        if message["type"] == "ping":
            await ws.send_json({"type": "pong"})
        elif message["type"] != "pong":
            return message


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Bearer mes_unknown-api-token"},
        {"token": "x"},
    ],
    ids=[
        "no-payload",
        "empty",
        "blank",
        "no-token",
        "bad-user-token",
        "unknown-api-token",
        "wrong-key",
    ],
)
async def test_connection_init_without_a_valid_token_closes_with_4403(
    app: Any, payload: dict[str, Any] | None
) -> None:
    async with socket_client(app) as ws_client:
        assert await close_code_after_init(ws_client, payload) == 4403


async def test_a_user_token_of_another_secret_closes_with_4403(
    app: Any, make_user: MakeUser
) -> None:
    async with socket_client(app) as ws_client:
        user, _ = await make_user("eve", Role.ADMIN)
        forged = URLSafeTimedSerializer("another-secret-key", salt="mes.user-token").dumps(
            {"u": user.id}
        )
        assert await close_code_after_init(ws_client, {"authorization": f"Bearer {forged}"}) == 4403


async def test_subscribe_before_connection_init_is_refused(app: Any) -> None:
    async with socket_client(app) as ws_client, connect(ws_client) as ws:
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": ORDER_CHANGED}})
        with pytest.raises(WebSocketDisconnect) as closed:
            await next_message(ws)
        assert closed.value.code == 4401  # graphql-transport-ws: Unauthorized


async def test_a_signed_in_subscriber_sees_order_changes_made_over_http(
    app: Any, make_user: MakeUser, as_role: AsRole
) -> None:
    async with socket_client(app) as ws_client:
        _, token = await make_user("olga", Role.OPERATOR)
        erp = await as_role(Role.ERP)
        assert (await erp.data(UPSERT_MATERIALS))["upsertMaterials"]["errors"] == []

        async with connect(ws_client) as ws:
            await signed_in(ws, token)
            await ws.send_json(
                {
                    "id": "orders",
                    "type": "subscribe",
                    "payload": {"query": ORDER_CHANGED, "variables": {"number": "PO-1"}},
                }
            )
            # The subscription starts in the background: change the order until it is seen.
            first: dict[str, Any] | None = None
            for attempt in range(1, 21):
                data = await erp.data(UPSERT_ORDER, {"quantity": str(100 + attempt)})
                assert data["upsertProductionOrder"]["errors"] == []
                try:
                    first = await next_message(ws, wait=0.25)
                    break
                except TimeoutError:
                    continue
            assert first is not None, "no event for the order"
            assert first["id"] == "orders"
            assert first["type"] == "next"
            event = first["payload"]["data"]["productionOrderChanged"]
            assert event["number"] == "PO-1"
            assert event["status"] == "PLANNED"
            assert event["product"] == {"code": "BREAD"}

            # Now surely listening: the release arrives too, as committed (after the events of
            # upserts sent while the subscription was starting, which are skipped).
            assert (await erp.data(RELEASE))["releaseProductionOrder"]["errors"] == []
            statuses = []
            while "RELEASED" not in statuses:
                message = await next_message(ws)
                assert message["type"] == "next"
                statuses.append(message["payload"]["data"]["productionOrderChanged"]["status"])
            assert set(statuses[:-1]) <= {"PLANNED"}
            await ws.send_json({"id": "orders", "type": "complete"})


async def test_queries_over_the_socket_follow_the_role_table(app: Any, make_user: MakeUser) -> None:
    async with socket_client(app) as ws_client:
        _, operator = await make_user("olga", Role.OPERATOR)
        _, quality = await make_user("quinn", Role.QUALITY)
        query = "{ verifyAuditTrail { valid entries } }"

        async with connect(ws_client) as ws:
            await signed_in(ws, operator)
            await ws.send_json({"id": "q", "type": "subscribe", "payload": {"query": query}})
            message = await next_message(ws)
            assert message["type"] == "error"
            assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"

        async with connect(ws_client) as ws:
            await signed_in(ws, quality)
            await ws.send_json({"id": "q", "type": "subscribe", "payload": {"query": query}})
            message = await next_message(ws)
            assert message == {
                "id": "q",
                "type": "next",
                "payload": {"data": {"verifyAuditTrail": {"valid": True, "entries": 0}}},
            }
            assert (await next_message(ws)) == {"id": "q", "type": "complete"}


async def test_an_api_token_signs_in_on_the_socket(app: Any, as_role: AsRole) -> None:
    async with socket_client(app) as ws_client:
        admin = await as_role(Role.ADMIN)
        data = await admin.data(
            'mutation { createApiToken(input: {name: "bridge", roles: [EQUIPMENT]}) { token } }'
        )
        async with connect(ws_client) as ws:
            await signed_in(ws, data["createApiToken"]["token"])
            await ws.send_json(
                {
                    "id": "q",
                    "type": "subscribe",
                    "payload": {"query": "{ materials { totalCount } }"},
                }
            )
            assert await next_message(ws) == {
                "id": "q",
                "type": "next",
                "payload": {"data": {"materials": {"totalCount": 0}}},
            }


async def test_sockets_are_independent(app: Any, make_user: MakeUser) -> None:
    """A refused socket does not disturb one that is signed in."""
    async with socket_client(app) as ws_client:
        _, token = await make_user("olga", Role.OPERATOR)
        async with connect(ws_client) as good:
            await signed_in(good, token)
            assert await close_code_after_init(ws_client, {"authorization": "Bearer nope"}) == 4403
            await good.send_json({"type": "ping"})
            assert await asyncio.wait_for(good.receive_json(), WAIT) == {"type": "pong"}


async def test_a_revoked_token_ends_its_subscription_at_the_next_event(
    app: Any, as_role: AsRole, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket signs in once; its token is checked again before each event it is sent."""
    from backend.auth import service as auth_service
    from backend.principal import SYSTEM
    from backend.uow import transaction

    services = app.state.services
    cache_seconds = 0.2
    monkeypatch.setattr(
        services,
        "settings",
        services.settings.model_copy(update={"auth_cache_seconds": cache_seconds}),
    )
    async with socket_client(app) as ws_client:
        admin = await as_role(Role.ADMIN)
        created = await admin.data(
            'mutation { createApiToken(input: {name: "board", roles: [INTEGRATOR]}) { token } }'
        )
        erp = await as_role(Role.ERP)
        assert (await erp.data(UPSERT_MATERIALS))["upsertMaterials"]["errors"] == []

        async with connect(ws_client) as ws:
            await signed_in(ws, created["createApiToken"]["token"])
            await ws.send_json(
                {
                    "id": "orders",
                    "type": "subscribe",
                    "payload": {"query": ORDER_CHANGED, "variables": {"number": "PO-1"}},
                }
            )
            first: dict[str, Any] | None = None
            for attempt in range(1, 21):
                await erp.data(UPSERT_ORDER, {"quantity": str(100 + attempt)})
                try:
                    first = await next_message(ws, wait=0.25)
                    break
                except TimeoutError:
                    continue
            assert first is not None
            assert first["type"] == "next", first

            async with transaction(db, SYSTEM) as uow:
                await auth_service.revoke_api_token(uow, "board")
            await asyncio.sleep(cache_seconds + 0.05)
            assert (await erp.data(RELEASE))["releaseProductionOrder"]["errors"] == []

            # Events of the earlier upserts may still come first, then the refusal.
            while True:
                message = await next_message(ws)
                if message["type"] != "next" or "errors" in message["payload"]:
                    break
            payload = message.get("payload")
            errors = payload if isinstance(payload, list) else payload["errors"]
            assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED", message
            assert "sign in again" in errors[0]["message"]
            # ... and the subscription is over.
            assert await next_message(ws) == {"id": "orders", "type": "complete"}
