"""Housekeeping of sign-in records."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete

from backend.auth.models import LoginThrottle
from backend.db import utcnow
from backend.jobs import JobContext, cron_job

STALE_AFTER = dt.timedelta(days=1)


async def prune_login_throttle(ctx: JobContext) -> int:
    """Forgets failed sign-ins older than a day, so the table holds only live throttles."""
    async with ctx.db.write() as session:
        result = await session.execute(
            delete(LoginThrottle).where(LoginThrottle.last_failure_at < utcnow() - STALE_AFTER)
        )
    return int(getattr(result, "rowcount", 0) or 0)


cron_job(prune_login_throttle, minute=17)
