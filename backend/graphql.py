"""Assembles the one schema from every domain's Query, Mutation and Subscription parts."""

from __future__ import annotations

import logging
from functools import lru_cache

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.config import StrawberryConfig

from backend.audit.schema import AuditQuery
from backend.auth.schema import AuthMutation, AuthQuery
from backend.catalog.schema import CatalogMutation, CatalogQuery
from backend.compiled import default_registry
from backend.compiled.extension import CompiledReads, CompiledReadsState
from backend.equipment.schema import EquipmentMutation, EquipmentSubscription
from backend.gql import (
    AccessControl,
    Info,
    Node,
    StraightExecution,
    call_resolvers_straight,
    resolve_node,
)
from backend.limits import limit_extensions
from backend.lots.schema import LotsMutation, LotsQuery, LotsSubscription
from backend.orders.schema import OrdersMutation, OrdersQuery, OrdersSubscription
from backend.quality.schema import QualityMutation, QualityQuery, QualitySubscription
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)


@strawberry.type
class Query(AuthQuery, CatalogQuery, OrdersQuery, LotsQuery, QualityQuery, AuditQuery):
    @strawberry.field
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        """Any object by its global id; null when unknown or not visible to you."""
        node: Node | None = await resolve_node(info, id)
        return node


@strawberry.type
class Mutation(
    AuthMutation, CatalogMutation, OrdersMutation, LotsMutation, QualityMutation, EquipmentMutation
):
    pass


@strawberry.type
class Subscription(
    OrdersSubscription, LotsSubscription, QualitySubscription, EquipmentSubscription
):
    pass


def _should_mask(error: Exception) -> bool:
    # Errors we raise on purpose carry a code; anything else is a fault: logged, then masked.
    # A GraphQLError behind it is graphql-core's own (a variable that does not coerce, say):
    # the caller's mistake, shown as it is.
    original = getattr(error, "original_error", None)
    extensions = getattr(error, "extensions", None) or {}
    if original is None or isinstance(original, GraphQLError) or "code" in extensions:
        return False
    log.error("unexpected error in %s", getattr(error, "path", None), exc_info=original)
    return True


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or get_settings()
    # The compiled path's plan cache lives as long as the schema; each request gets its own
    # extension object sharing it. After AccessControl: role checks first, as for resolvers.
    compiled = CompiledReadsState(default_registry())
    schema = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            *limit_extensions(settings),
            AccessControl,
            lambda: CompiledReads(compiled),
            lambda: MaskErrors(
                should_mask_error=_should_mask,
                error_message="Unexpected error: it has been logged.",
            ),
        ],
        config=StrawberryConfig(disable_field_suggestions=False),
        execution_context_class=StraightExecution,
    )
    compiled.bound(schema)  # a mapping that does not fit the schema fails here, at startup
    call_resolvers_straight(schema)
    return schema


@lru_cache
def default_schema() -> strawberry.Schema:
    return build_schema()
