"""Who is acting: the roles a user or token can hold, and the signed-in principal."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    OPERATOR = "OPERATOR"
    SUPERVISOR = "SUPERVISOR"
    QUALITY = "QUALITY"
    INTEGRATOR = "INTEGRATOR"
    ERP = "ERP"
    EQUIPMENT = "EQUIPMENT"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class Principal:
    """A signed-in user or an API token. `name` is what the audit trail records."""

    name: str
    roles: frozenset[Role]
    user_id: int | None = None
    token_id: int | None = None

    @property
    def key(self) -> str:
        """A stable key for per-principal records (stored mutation outcomes)."""
        return f"user:{self.user_id}" if self.user_id is not None else f"token:{self.token_id}"

    def has_any(self, roles: frozenset[Role]) -> bool:
        return not self.roles.isdisjoint(roles)


SYSTEM = Principal(name="system", roles=frozenset({Role.ADMIN}))
