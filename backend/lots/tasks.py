"""Scheduled work on lots."""

from __future__ import annotations

from backend.jobs import JobContext, cron_job
from backend.lots import service
from backend.principal import SYSTEM
from backend.uow import transaction


async def expire_lots(ctx: JobContext) -> int:
    """Marks lots past their expiry EXPIRED (and tells subscribers); returns how many."""
    async with transaction(ctx.db, SYSTEM, ctx.broadcast) as uow:
        expired = await service.expire_due(uow)
    return len(expired)


cron_job(expire_lots, every_seconds=60, run_at_startup=True)
