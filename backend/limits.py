"""Limits applied to every request before any resolver runs.

The contract (BEHAVIOUR.md, "Limits") promises that no single request can make the server do
unbounded work: documents deeper than ``max_depth`` or with more than ``max_aliases`` aliases
are refused, so is any operation whose estimated cost (list sizes multiplied down the tree)
exceeds ``max_cost``, and request bodies over ``max_body_bytes`` never reach GraphQL at all.

Public API:

- :func:`limit_extensions`: the Strawberry extensions to pass to ``strawberry.Schema``.
- :func:`query_cost_rule`: the graphql-core validation rule that computes the cost.
- :class:`QueryCostLimiter`: the extension that runs that rule with the request's variables.
- :class:`BodySizeLimit`: pure ASGI middleware refusing oversized bodies and query strings.
- :func:`page_size`: the page size a list resolver should use for a client's ``first``.

Why the cost check is an extension hook and not just another validation rule:

- A validation rule only sees the document, but ``children(first: $n)`` costs whatever ``$n``
  is in this request.
- ``ValidationCache`` memoises validation on ``(schema, document, rules)``. A cost rule that
  depended on variables would be cached with the first request's variables; building a new
  rule class per request would make every lookup miss.
- So the depth and alias rules go through the normal (cached) validation, and
  :class:`QueryCostLimiter` runs the cost rule, built for this request's variables, in
  ``on_execute``, after the document is known to be valid. For queries and mutations it
  stores the refusal in ``execution_context.result``; Strawberry then skips execution. That is
  the extension API's way to answer without executing, and it does not depend on where the
  extension sits in the list. The subscription path ignores a preset result, so there the
  error is raised, which Strawberry turns into the stream's single error result.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    validate,
)
from graphql.execution.values import get_variable_values
from graphql.language.visitor import SKIP, VisitorAction
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from backend.settings import Settings

__all__ = [
    "QUERY_TOO_COSTLY",
    "BodySizeLimit",
    "QueryCostLimiter",
    "limit_extensions",
    "page_size",
    "query_cost_rule",
]

QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"

# Enough for the documents our own clients send. The bound matters: unique query texts are free
# to invent, and a parsed 1 MiB document measured about 100 MiB (graphql-core 3.3.2).
DOCUMENT_CACHE_SIZE = 100

_UNKNOWN = object()


def page_size(first: int | None, settings: Settings) -> int:
    """The number of items a list resolver returns for the client's ``first``.

    ``None`` means the default page; anything above the maximum is cut to the maximum, so a
    client asking for more simply gets a short page and pages on. Zero or negative values are
    a client mistake and raise ``ValueError``; resolvers turn that into an error for the client.
    """
    if first is None:
        return min(settings.default_page_size, settings.max_page_size)
    if first < 1:
        raise ValueError(f"`first` must be at least 1, got {first}")
    return min(first, settings.max_page_size)


def query_cost_rule(
    max_cost: int,
    default_page_size: int,
    max_page_size: int,
    *,
    variables: Mapping[str, Any] | None = None,
) -> type[ValidationRule]:
    """A validation rule that refuses operations whose cost exceeds ``max_cost``.

    Every field costs 1. A field that takes a ``first`` argument (a connection or paged list)
    costs 1 plus ``first`` times the cost of its selection: ``first`` is the literal or the
    variable's value (when absent, the argument's schema default), the page default when null,
    and never more than ``max_page_size`` (the resolvers cap it there too, see
    :func:`page_size`). Named and inline fragments are expanded where they are spread; the
    branches of inline fragments on different types are all counted, which over-estimates
    abstract fields but is never too low.

    ``variables`` are the request's raw variables. Without them (``None``, for checking
    documents ahead of time) a ``first`` taken from a variable counts as ``max_page_size``,
    since any value up to that could arrive. Every operation in the document is checked, not
    only the one that would run; an operation whose variables do not coerce is skipped because
    graphql-core refuses to execute it anyway.
    """
    default_size = min(default_page_size, max_page_size)

    class QueryCostRule(ValidationRule):
        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_args: Any
        ) -> VisitorAction:
            root_type = self.context.schema.get_root_type(node.operation)
            calculator = _CostCalculator(self.context, default_size, max_page_size)
            if variables is not None:
                coerced = get_variable_values(
                    self.context.schema, node.variable_definitions or (), dict(variables)
                )
                if isinstance(coerced, list):
                    return SKIP
                calculator.variables = coerced.coerced
                calculator.declared = {
                    d.variable.name.value for d in node.variable_definitions or ()
                }
            cost = calculator.selection_cost(root_type, node.selection_set)
            if cost > max_cost:
                name = f"Operation '{node.name.value}'" if node.name else "The operation"
                self.report_error(
                    GraphQLError(
                        f"{name} costs {cost}, over the budget of {max_cost}; "
                        "ask for smaller pages (`first`) or fewer nested lists",
                        node,
                        extensions={"code": QUERY_TOO_COSTLY},
                    )
                )
            # The calculator already walked everything this rule needs.
            return SKIP

        def enter_fragment_definition(self, *_args: Any) -> VisitorAction:
            return SKIP

    return QueryCostRule


class _CostCalculator:
    def __init__(self, context: ValidationContext, default_size: int, max_size: int) -> None:
        self.context = context
        self.default_size = default_size
        self.max_size = max_size
        # None: variable values unknown (ahead-of-time check), so assume the largest page.
        self.variables: dict[str, Any] | None = None
        self.declared: set[str] = set()
        # A fragment's cost does not depend on where it is spread, so memoising keeps the walk
        # linear; fragments spreading each other twice per level would otherwise be exponential.
        self.fragment_costs: dict[str, int] = {}
        self.in_progress: set[str] = set()

    def selection_cost(
        self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode
    ) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field_cost(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                scope = self.context.schema.get_type(condition.name.value) if condition else parent
                total += self.selection_cost(scope, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment_cost(selection.name.value)
        return total

    def fragment_cost(self, name: str) -> int:
        if name in self.fragment_costs:
            return self.fragment_costs[name]
        fragment = self.context.get_fragment(name)
        # A cycle is already an error of the standard rules; counting it once is enough here.
        if fragment is None or name in self.in_progress:
            return 0
        self.in_progress.add(name)
        scope = self.context.schema.get_type(fragment.type_condition.name.value)
        cost = self.selection_cost(scope, fragment.selection_set)
        self.in_progress.discard(name)
        self.fragment_costs[name] = cost
        return cost

    def field_cost(self, parent: GraphQLNamedType | None, node: FieldNode) -> int:
        field: GraphQLField | None = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            field = parent.fields.get(node.name.value)
        if node.selection_set is None:
            return 1
        child = get_named_type(field.type) if field is not None else None
        return 1 + self.multiplier(field, node) * self.selection_cost(child, node.selection_set)

    def multiplier(self, field: GraphQLField | None, node: FieldNode) -> int:
        argument = next((a for a in node.arguments or () if a.name.value == "first"), None)
        takes_first = argument is not None or (field is not None and "first" in field.args)
        if not takes_first:
            return 1
        value: object = None
        if argument is None:
            if field is not None:
                value = field.args["first"].default_value
        elif isinstance(argument.value, VariableNode):
            value = self.variable(argument.value.name.value)
        elif isinstance(argument.value, IntValueNode):
            value = int(argument.value.value)
        if value is _UNKNOWN:
            return self.max_size
        if not isinstance(value, int) or isinstance(value, bool):
            return self.default_size
        return min(max(value, 1), self.max_size)

    def variable(self, name: str) -> object:
        if self.variables is None or name not in self.declared:
            return _UNKNOWN
        # Declared but neither sent nor defaulted: the resolver sees null, i.e. the default.
        return self.variables.get(name)


class QueryCostLimiter(SchemaExtension):
    """Refuses, before execution, operations that cost more than ``max_cost``.

    See the module docstring for why this runs in ``on_execute`` rather than as a rule in
    the cached validation step. Pass it as a factory (``lambda: QueryCostLimiter(...)``).
    """

    def __init__(self, *, max_cost: int, default_page_size: int, max_page_size: int) -> None:
        self.max_cost = max_cost
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size

    # Query texts whose worst case (every variable `first` at the maximum page) is within the
    # budget: checking them again per request would cost about 0.3 ms for nothing.
    _within_budget: ClassVar[OrderedDict[tuple[str, int, int, int], None]] = OrderedDict()
    _CACHE_SIZE: ClassVar[int] = 1000

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        key = (context.query or "", self.max_cost, self.default_page_size, self.max_page_size)
        if document is not None and context.result is None and key in self._within_budget:
            self._within_budget.move_to_end(key)
        elif document is not None and context.result is None:
            worst = query_cost_rule(self.max_cost, self.default_page_size, self.max_page_size)
            if not validate(context.schema._schema, document, [worst]):
                self._within_budget[key] = None
                if len(self._within_budget) > self._CACHE_SIZE:
                    self._within_budget.popitem(last=False)
                yield
                return
            rule = query_cost_rule(
                self.max_cost,
                self.default_page_size,
                self.max_page_size,
                variables=context.variables or {},
            )
            errors = validate(context.schema._schema, document, [rule])
            if errors:
                if context.operation_type is OperationType.SUBSCRIPTION:
                    raise errors[0]
                context.result = ExecutionResult(data=None, errors=errors)
        yield


def limit_extensions(
    settings: Settings,
) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """The limit and cache extensions for ``strawberry.Schema(extensions=...)``.

    Every entry is a factory, so each request gets its own extension objects (instances are
    deprecated and once leaked state between concurrent requests). Depth and alias errors come
    from validation, so a refused document, mutation or not, never reaches a resolver.
    """
    # Strawberry's limiters build a new rule class in every constructor, and ValidationCache
    # keys on the rule classes: a limiter built per request would make every lookup miss. So
    # take their rules once here and give each request a fresh extension carrying them.
    rules = [
        *QueryDepthLimiter(max_depth=settings.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    validated: OrderedDict[tuple[Any, ...], list[GraphQLError]] = OrderedDict()
    max_cost = settings.max_cost
    default_size = settings.default_page_size
    max_size = settings.max_page_size
    max_tokens = settings.max_tokens
    return [
        # Bounds parsing itself: a 1 MiB document of tiny tokens parses into ~100 MiB of AST.
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationByText(validated),
        lambda: AddValidationRules(rules),
        lambda: QueryCostLimiter(
            max_cost=max_cost, default_page_size=default_size, max_page_size=max_size
        ),
    ]


class ValidationByText(SchemaExtension):
    """Strawberry's ValidationCache, keyed by the query text instead of the parsed document.

    Its LRU hashes the DocumentNode, and graphql-core computes that hash by walking the whole
    tree on every request: about 0.1 ms for the 50-order read, a tenth of a compiled read's
    CPU. The text identifies the document as well (the parser is deterministic, the schema
    is fixed per cache) and Python keeps a string's hash. The key also holds the parse
    options and the rules, which extensions may change per request. `results` is one bounded
    LRU per schema, shared by the per-request extension objects.
    """

    def __init__(self, results: OrderedDict[tuple[Any, ...], list[GraphQLError]]) -> None:
        self.results = results

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query is None or ctx.graphql_document is None:
            yield  # nothing to key on: Strawberry validates as usual
            return
        key = (ctx.query, tuple(sorted(ctx.parse_options.items())), ctx.validation_rules)
        errors = self.results.get(key)
        if errors is None:
            errors = validate_document(
                ctx.schema._schema, ctx.graphql_document, ctx.validation_rules
            )
            self.results[key] = errors
            if len(self.results) > DOCUMENT_CACHE_SIZE:
                self.results.popitem(last=False)
        else:
            self.results.move_to_end(key)
        ctx.pre_execution_errors = errors
        yield


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware refusing HTTP requests larger than ``max_body_bytes``.

    - ``Content-Length`` over the limit: 413 at once, without reading the body.
    - No ``Content-Length`` (chunked): the body is counted as the application reads it; once
      past the limit the application's read fails and the client gets 413 instead of whatever
      the application would have answered.
    - A query string longer than the limit (GraphQL over GET): 414 URI Too Long, the status
      that names the part of the request at fault.

    WebSocket and lifespan traffic passes through untouched. If an application had already
    started its response before the body went over the limit, the response cannot be replaced;
    the read still fails, so the application stops rather than process a truncated body.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        if len(scope.get("query_string", b"")) > limit:
            await self._refuse(send, 414, f"request query string too long (limit {limit} bytes)")
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, 413, f"request body too large (limit {limit} bytes)")
            return

        received = 0
        too_large = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # After a refusal, whatever the application answers (an error page for the failed
            # read, say) is dropped: the client gets the 413.
            if too_large and not response_started:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # Anything the application raised after the refusal is a consequence of it.
            if not too_large:
                raise
        if too_large and not response_started:
            await self._refuse(send, 413, f"request body too large (limit {limit} bytes)")

    @staticmethod
    async def _refuse(send: Send, status: int, message: str) -> None:
        body = json.dumps({"errors": [{"message": message}]}, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The unread rest of the body makes the connection unusable for another
                    # request.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                # The server rejects malformed lengths; if one gets here, counting still applies.
                return None
    return None
