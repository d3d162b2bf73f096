"""Fixtures of the quality tests: the ERP, a small plant with a released order, and people:
an operator (otto), a quality engineer (quinn) and two supervisors (sue, sam)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from quality_support import Caller, Desk, make_order, make_plant

from backend.principal import Role


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    return await as_role(Role.ERP, username="erp")


@pytest.fixture
async def plant(erp: Caller) -> None:
    """RM-Q (incoming inspection: Purity 98.5-99.5 %, Clear), RM-1 (none), FG-1, WC-1."""
    await make_plant(erp)


@pytest.fixture
async def po1(erp: Caller, plant: None) -> str:
    """PO-1, RELEASED: operation 10 (Viscosity 1.5-2.5 Pa.s, Seal intact), operation 20."""
    return await make_order(erp, "PO-1")


@pytest.fixture
async def otto(as_role: Callable[..., Awaitable[Caller]], password: str, plant: None) -> Desk:
    return Desk(await as_role(Role.OPERATOR, username="otto"), password)


@pytest.fixture
async def quinn(as_role: Callable[..., Awaitable[Caller]], password: str, plant: None) -> Desk:
    return Desk(await as_role(Role.QUALITY, username="quinn"), password)


@pytest.fixture
async def sue(as_role: Callable[..., Awaitable[Caller]], password: str, plant: None) -> Desk:
    return Desk(await as_role(Role.SUPERVISOR, username="sue"), password)


@pytest.fixture
async def sam(as_role: Callable[..., Awaitable[Caller]], password: str, plant: None) -> Desk:
    return Desk(await as_role(Role.SUPERVISOR, username="sam"), password)
