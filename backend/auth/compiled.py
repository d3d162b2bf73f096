"""The auth types that compiled reads may print straight from their tables (see
backend/compiled). `roles` (a JSON list of role names) runs through its resolver."""

from __future__ import annotations

from backend.auth.models import User
from backend.auth.schema import UserType
from backend.compiled.registry import REGISTRY, Col, GlobalId

REGISTRY.table(
    UserType,
    User,
    {"id": GlobalId("User"), "username": Col(), "display_name": Col()},
)
