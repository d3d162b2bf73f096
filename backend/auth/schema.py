from __future__ import annotations

from typing import Any

import strawberry

from backend.auth import service
from backend.auth.models import User
from backend.errors import ErrorCode
from backend.gql import (
    Info,
    MutationError,
    Node,
    NodeKind,
    register_node,
    run_mutation,
    to_global_id,
)
from backend.principal import Role
from backend.uow import UnitOfWork

RoleType = strawberry.enum(Role, name="Role")


@strawberry.type(name="User")
class UserType(Node):
    username: str
    display_name: str
    roles: list[Role]

    @classmethod
    def from_row(cls, row: User) -> UserType:
        return cls(
            id=to_global_id("User", row.id),
            username=row.username,
            display_name=row.display_name,
            roles=[Role(r) for r in row.roles],
        )


async def user_by_pk(info: Info, pk: int | None) -> UserType | None:
    """The user with this id through the operation's loader (None for None)."""
    if pk is None:
        return None
    row = await info.context.loaders.user.load(pk)
    return UserType.from_row(row) if row else None


register_node("User", NodeKind(lambda loaders: loaders.user, UserType.from_row))


@strawberry.input
class CreateUserInput:
    username: str
    display_name: str
    password: str
    roles: list[Role]


@strawberry.input
class CreateApiTokenInput:
    name: str
    roles: list[Role]


@strawberry.type
class LoginPayload:
    token: str | None = None
    user: UserType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class UserPayload:
    user: UserType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiTokenPayload:
    token: str | None = strawberry.field(
        default=None, description="Shown once; only its hash is stored."
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class AuthQuery:
    @strawberry.field
    async def me(self, info: Info) -> UserType | None:
        """The signed-in user; null for an API token."""
        principal = info.context.principal
        if principal is None or principal.user_id is None:
            return None
        user = await info.context.loaders.user.load(principal.user_id)
        return UserType.from_row(user) if user else None


@strawberry.type
class AuthMutation:
    @strawberry.mutation
    async def login(self, info: Info, username: str, password: str) -> LoginPayload:
        """Signs in; the same answer for an unknown user and a wrong password."""
        settings = info.context.settings
        result = await service.login(info.context.db, settings, username, password)
        if result.error is not None or result.user is None:
            return LoginPayload(
                errors=[
                    MutationError(
                        code=ErrorCode.INVALID_INPUT, message=result.error or service.LOGIN_FAILED
                    )
                ]
            )
        return LoginPayload(token=result.token, user=UserType.from_row(result.user))

    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            user = await service.create_user(
                uow,
                info.context.settings,
                username=input.username,
                display_name=input.display_name,
                password=input.password,
                roles=input.roles,
            )
            return {"user": UserType.from_row(user)}

        return await run_mutation(info, UserPayload, work)

    @strawberry.mutation
    async def create_api_token(self, info: Info, input: CreateApiTokenInput) -> ApiTokenPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            _, token = await service.create_api_token(uow, name=input.name, roles=input.roles)
            return {"token": token}

        return await run_mutation(info, ApiTokenPayload, work)
