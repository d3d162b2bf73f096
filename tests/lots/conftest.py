"""Fixtures of the lot tests: ERP and operator callers, a small plant and a released order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from lots_support import Caller, Floor, make_order, make_plant

from backend.principal import Role


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    return await as_role(Role.ERP, username="erp")


@pytest.fixture
async def plant(erp: Caller) -> None:
    """Materials RM-1 (365 days' shelf life), RM-2, RM-Q (incoming inspection), INT-1, FG-1,
    PK-1 (no GTIN) and work center WC-1."""
    await make_plant(erp)


@pytest.fixture
async def floor(as_role: Callable[..., Awaitable[Caller]], plant: None) -> Floor:
    """An operator at the line."""
    return Floor(await as_role(Role.OPERATOR, username="otto"))


@pytest.fixture
async def po1(erp: Caller, plant: None) -> str:
    """PO-1, RELEASED: FG-1 from 100 kg RM-1 (operation 10) and 10 kg RM-2."""
    await make_order(erp, "PO-1", [("RM-1", "100", 10), ("RM-2", "10")])
    return "PO-1"
