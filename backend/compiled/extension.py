"""`CompiledReads`: the Strawberry schema extension that serves compilable reads from one SQL
statement.

Strawberry runs its `on_execute` after parsing, the operation-type checks and validation, and
after the extensions before it in the list (limits, then AccessControl: a request they refuse
never gets here). When the document is compilable it sets `execution_context.result`, so
Strawberry skips graphql-core's execution but still runs every other hook, the error
processing and the view's encoding. The data is PostgreSQL's JSON as bytes, wrapped in an
`orjson.Fragment`: the view's orjson encoder writes it through without parsing it.

The compiled path only answers when the resolvers would have answered with the same data and
no errors. Anything else (not PostgreSQL, the setting off, a mutation, introspection, a field
not declared compilable, variables that do not coerce, an argument the resolver refuses, a SQL
error) steps aside: the resolvers run, unchanged, and produce the answer and its errors.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson
from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    get_operation_ast,
)
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_variable_values,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from backend.compiled.compiler import (
    Compiler,
    NotCompilable,
    RootSelection,
    Slot,
    Statement,
    StatementBuilder,
    directive_variables,
)
from backend.compiled.metrics import METRICS
from backend.compiled.registry import Bound, Registry
from backend.gql import decode_cursor, page_size

if TYPE_CHECKING:
    import strawberry
    from strawberry.types.execution import ExecutionContext

    from backend.gql import Services
    from backend.settings import Settings

log = logging.getLogger(__name__)

INT8 = (-(2**63), 2**63 - 1)

PLAN_CACHE_SIZE = 256


@dataclass
class _Shape:
    """One operation with its @skip/@include variables fixed: the roots, and a statement per
    set of present optional arguments (filters and `after` change the WHERE clauses)."""

    compiler: Compiler
    roots: list[RootSelection]
    statements: dict[tuple[tuple[str, frozenset[str]], ...], Statement | NotCompilable] = field(
        default_factory=dict
    )


@dataclass
class _Document:
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    directive_variables: tuple[str, ...]
    shapes: dict[tuple[Any, ...], _Shape | NotCompilable] = field(default_factory=dict)


class CompiledReadsState:
    """What the per-request extensions share: the checked mapping and the plan cache (an LRU
    keyed by (query text, operation name), negative entries included)."""

    def __init__(self, registry: Registry, cache_size: int = PLAN_CACHE_SIZE) -> None:
        self.registry = registry
        self.cache_size = cache_size
        self._bound: Bound | None = None
        self._documents: OrderedDict[tuple[str, str | None], _Document | NotCompilable] = (
            OrderedDict()
        )

    def bound(self, schema: strawberry.Schema) -> Bound:
        if self._bound is None:
            self._bound = self.registry.bind(schema)
        return self._bound

    def document(self, ctx: ExecutionContext) -> _Document:
        key = (ctx.query or "", ctx.operation_name)
        entry = self._documents.get(key)
        if entry is None:
            entry = self._analyse(ctx)
            self._documents[key] = entry
            if len(self._documents) > self.cache_size:
                self._documents.popitem(last=False)
        else:
            self._documents.move_to_end(key)
        if isinstance(entry, NotCompilable):
            raise entry
        return entry

    @staticmethod
    def _analyse(ctx: ExecutionContext) -> _Document | NotCompilable:
        document = ctx.graphql_document
        assert document is not None
        operation = get_operation_ast(document, ctx.operation_name)
        if operation is None:
            return NotCompilable("no_operation")
        if operation.operation.value != "query":
            return NotCompilable("not_a_query")
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return _Document(operation, fragments, directive_variables(operation, fragments))


class CompiledReads(SchemaExtension):
    """Register after AccessControl: `lambda: CompiledReads(state)` (one state per schema)."""

    def __init__(self, state: CompiledReadsState) -> None:
        self.state = state

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        if (
            ctx.result is None
            and ctx.graphql_document is not None
            and ctx.operation_type is OperationType.QUERY
        ):
            await self._serve(ctx)
        yield

    async def _serve(self, ctx: ExecutionContext) -> None:
        services: Services | None = getattr(ctx.context, "services", None)
        reason: str | None = None
        if services is None:
            reason = "no_services"
        elif not services.settings.compiled_reads:
            reason = "disabled"
        elif services.db.dialect_name != "postgresql":
            reason = "engine"
        else:
            try:
                payload = await self._answer(ctx, services)
            except NotCompilable as error:
                reason = error.reason
                log.debug("read %s: resolvers (%s)", ctx.operation_name, error)
            except Exception:  # a compiler or database fault never fails the request
                log.exception("compiled read %s failed; the resolvers answer", ctx.operation_name)
                reason = "error"
            else:
                ctx.result = ExecutionResult(data=cast(Any, orjson.Fragment(payload)), errors=None)
                METRICS.served("compiled")
                log.debug("read %s: compiled", ctx.operation_name)
                return
        METRICS.served("resolvers", reason)
        if reason in ("no_services", "disabled", "engine"):
            log.debug("read %s: resolvers (%s)", ctx.operation_name, reason)

    async def _answer(self, ctx: ExecutionContext, services: Services) -> bytes:
        schema = ctx.schema
        bound = self.state.bound(schema)
        document = self.state.document(ctx)
        operation = document.operation
        gschema = schema._schema
        variables: dict[str, Any] = {}
        variable_values: VariableValues | None = None
        if operation.variable_definitions:
            coerced = get_variable_values(
                gschema, operation.variable_definitions, ctx.variables or {}
            )
            if isinstance(coerced, list):
                raise NotCompilable("variables", "they do not coerce")
            variable_values, variables = coerced, coerced.coerced
        combination = tuple(variables.get(n) for n in document.directive_variables)
        shape = document.shapes.get(combination)
        if shape is None:
            try:
                compiler = Compiler(gschema, bound, document.fragments, variables)
                shape = _Shape(compiler, compiler.roots(operation))
            except NotCompilable as error:
                shape = error
            except Exception:  # a compiler fault: logged once, then cached as not compilable
                log.exception("cannot compile %s", ctx.operation_name)
                shape = NotCompilable("compiler_error")
            document.shapes[combination] = shape
        if isinstance(shape, NotCompilable):
            raise shape

        values: dict[Slot, Any] = {}
        present: dict[str, frozenset[str]] = {}
        query_type = gschema.query_type
        assert query_type is not None
        for selection in shape.roots:
            if selection.root is not None:
                arguments = get_argument_values(
                    query_type.fields[selection.root.name], selection.nodes[0], variable_values
                )
                present[selection.key] = _bind(selection, arguments, services.settings, values)
        key = tuple(sorted(present.items()))
        statement = shape.statements.get(key)
        if statement is None:
            try:
                statement = StatementBuilder(shape.compiler, shape.roots).build(present)
            except NotCompilable as error:
                statement = error
            except Exception:  # a compiler fault: logged once, then cached as not compilable
                log.exception("cannot compile %s", ctx.operation_name)
                statement = NotCompilable("compiler_error")
            shape.statements[key] = statement
        if isinstance(statement, NotCompilable):
            raise statement
        for nested in statement.nested:
            try:
                arguments = get_argument_values(nested.definition, nested.node, variable_values)
            except GraphQLError as error:  # the resolver reports it
                raise NotCompilable("arguments", error.message) from None
            if nested.page_largest_key is not None:
                cursor_key = _bind_page(
                    nested.site, arguments, nested.page_largest_key, services.settings, values
                )
                values[Slot(nested.site, "lowest")] = _lowest_key(cursor_key)
            for graphql_name, python_name, arg in nested.args:
                values[Slot(nested.site, python_name)] = arg.convert(arguments.get(graphql_name))
        parameters = [values[slot] for slot in statement.slots]
        try:
            return await _fetch(services, statement.sql, parameters)
        except Exception as error:  # the resolvers answer, and report their own error if any
            log.warning("compiled read %s failed: %r", ctx.operation_name, error)
            raise NotCompilable("sql_error", type(error).__name__) from error


def _bind(
    selection: RootSelection,
    arguments: dict[str, Any],
    settings: Settings,
    values: dict[Slot, Any],
) -> frozenset[str]:
    """The parameters of one root, as its resolver reads its arguments; which are present."""
    root = selection.root
    assert root is not None
    present: set[str] = set()
    if (
        root.kind == "connection"
        and _bind_page(selection.key, arguments, root.largest_key, settings, values) is not None
    ):
        present.add("after")
    for name, flt in root.filters.items():
        value = flt.convert(arguments.get(name))
        if value is not None:
            values[Slot(selection.key, name)] = value
            present.add(name)
        elif root.kind == "lookup":
            raise NotCompilable("arguments", f"{root.name}({name}: null)")
    return frozenset(present)


def _bind_page(
    site: str,
    arguments: dict[str, Any],
    largest_key: int,
    settings: Settings,
    values: dict[Slot, Any],
) -> int | None:
    """A connection's `first` and `after` as `paginate` reads them, into the slots (`site`,
    "size" / "after" / "previous"): the page size, the cursor's key (None when `after` is null
    or empty: no condition), whether `after` was given at all (hasPreviousPage). Returns the
    key. A value the resolver refuses (a negative `first`, an invalid cursor) steps aside,
    so that the resolver reports it."""
    try:
        size = page_size(settings, arguments.get("first"))
        after = arguments.get("after")
        key = decode_cursor(after, largest_key) if after else None
    except GraphQLError as error:
        raise NotCompilable("arguments", error.message) from None
    values[Slot(site, "size")] = size
    values[Slot(site, "after")] = key
    values[Slot(site, "previous")] = after is not None
    return key


def _lowest_key(after: int | None) -> int:
    """A nested page's rows are `id >= lowest`, a bound an index range can use in the
    prepared statement's generic plan (`($after IS NULL OR id > $after)` is only a filter:
    the scan would start at the first id of the table whatever the cursor). Without a cursor
    every int8 id, else the one after the cursor's key; the largest int8 has none after it
    in int8, and the resolvers answer that page (empty)."""
    if after is None:
        return INT8[0]
    if after >= INT8[1]:
        raise NotCompilable("arguments", "a cursor at the largest key")
    return after + 1


async def _fetch(services: Services, sql: str, parameters: list[Any]) -> bytes:
    """Runs the statement on a pooled connection of the app's engine, straight on asyncpg:
    its statement cache prepares it once per connection; no transaction (one statement reads
    one snapshot); the `bytea` result arrives as bytes, never decoded."""
    async with services.db.read_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        payload = await driver.fetchval(sql, *parameters)
    if not isinstance(payload, bytes):
        raise NotCompilable("error", "no result")
    return payload
