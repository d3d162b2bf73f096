"""Sends the outbox to the MES: in order, in batches, one `recordEquipmentEvents` per batch.

What an answer means for the batch:
- the payload: events the MES accepted or already had (`duplicates`) are deleted; events it
  refused one by one (`field: events.N.…`) move to the quarantine; the rest keep flowing;
- a timeout, connection error, HTTP 5xx/429 or a top-level GraphQL error: nothing is known to
  be stored, so the same batch (same event ids) is sent again after a backoff with full
  jitter (honouring Retry-After). A batch the server committed before the answer got lost
  comes back as `duplicates`: exactly once end to end;
- HTTP 401/403, or an UNAUTHENTICATED / FORBIDDEN refusal: the token is wrong. Sending stops
  (events keep buffering in the outbox) and an error is logged; after `auth_retry_s` one
  batch is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from equipment_bridge.backoff import full_jitter
from equipment_bridge.config import MesConfig
from equipment_bridge.outbox import Outbox, Pending, Rejection

log = logging.getLogger(__name__)

MUTATION = (
    "mutation RecordEquipmentEvents($events: [EquipmentEventInput!]!) {"
    " recordEquipmentEvents(events: $events) { accepted duplicates"
    " errors { code message field } } }"
)
_ITEM_FIELD = re.compile(r"^events\.(\d+)(?:\.|$)")
# graphql-core's message for a variable that does not coerce names the item: "... at
# 'events[3].state'; ..." (3.2) or "... has invalid value at [3].state: ..." (3.3).
_VARIABLE_ITEM = re.compile(r"at '?\w*\[(\d+)\]")
AUTH_CODES = frozenset({"UNAUTHENTICATED", "FORBIDDEN"})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


@dataclass
class Outcome:
    """How one send went: `done` (answered; the outbox is settled), `retry`, `auth`, `shrink`."""

    kind: str
    message: str = ""
    retry_after: float | None = None


@dataclass
class Stats:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    failures: int = 0
    last_error: str = ""
    last_success: float | None = None


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        mes: MesConfig,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.mes = mes
        self._token = token
        self._client = client
        self._own_client = client is None
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self.batch_size = mes.batch_max
        self.auth_blocked = False
        self.stats = Stats()
        self._head: tuple[int, float] | None = None

    def notify(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.mes.request_timeout_s),
                headers={"User-Agent": "mes-equipment-bridge"},
            )
        return self._client

    # ------------------------------------------------------------ loop

    async def run(self) -> None:
        """Forwards until cancelled."""
        attempt = 0
        try:
            while True:
                self._wake.clear()
                batch = await asyncio.to_thread(self.outbox.peek, self.batch_size)
                if not batch:
                    self._head = None
                    await self._wake.wait()
                    continue
                if len(batch) < self.batch_size and await self._linger(batch):
                    continue
                outcome = await self.send(batch)
                if outcome.kind == "done":
                    attempt = 0
                    self.batch_size = min(self.mes.batch_max, self.batch_size * 2)
                elif outcome.kind == "shrink":
                    self.batch_size = max(1, len(batch) // 2)
                elif outcome.kind == "auth":
                    self.auth_blocked = True
                    log.error(
                        "the MES refuses the bridge's token (%s): sending stopped, %d events "
                        "kept in the outbox; check the EQUIPMENT token in $%s. Trying again in "
                        "%.0f s",
                        outcome.message,
                        await asyncio.to_thread(self.outbox.pending_count),
                        self.mes.token_env,
                        self.mes.auth_retry_s,
                    )
                    await asyncio.sleep(self.mes.auth_retry_s)
                else:
                    delay = full_jitter(self.mes.backoff, attempt, self._rng)
                    if outcome.retry_after is not None:
                        delay = max(delay, outcome.retry_after)
                    attempt += 1
                    log.warning(
                        "sending %d events to the MES failed (%s); retrying in %.2f s",
                        len(batch),
                        outcome.message,
                        delay,
                    )
                    await asyncio.to_thread(
                        self.outbox.note_failure, [p.seq for p in batch], outcome.message
                    )
                    await asyncio.sleep(delay)
        finally:
            await self.aclose()

    async def _linger(self, batch: Sequence[Pending]) -> bool:
        """Waits (up to batch_linger_ms after the head event was first seen) for more events.
        True when the batch should be read again."""
        linger = self.mes.batch_linger_ms / 1000
        if linger <= 0:
            return False
        now = time.monotonic()
        if self._head is None or self._head[0] != batch[0].seq:
            self._head = (batch[0].seq, now)
        remaining = linger - (now - self._head[1])
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), remaining)
        return True

    # ------------------------------------------------------------ one batch

    async def send(self, batch: Sequence[Pending]) -> Outcome:
        """Sends one batch and settles the outbox from the answer."""
        self.stats.batches += 1
        try:
            response = await self._http().post(
                self.mes.url,
                json={"query": MUTATION, "variables": {"events": [p.body for p in batch]}},
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.mes.request_timeout_s,
            )
        except httpx.TimeoutException:
            return self._failed(Outcome("retry", "timed out"))
        except httpx.HTTPError as error:
            return self._failed(Outcome("retry", f"{type(error).__name__}: {error}"[:300]))
        status = response.status_code
        if status in (401, 403):
            return self._failed(Outcome("auth", f"HTTP {status}"))
        if status == 413:
            if len(batch) == 1:
                return await self._settle(
                    batch, [Rejection(batch[0].seq, "TOO_LARGE", "HTTP 413: event too large")]
                )
            return Outcome("shrink", "HTTP 413")
        if status in (429, 503):
            return self._failed(Outcome("retry", f"HTTP {status}", _retry_after(response)))
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return self._failed(Outcome("retry", f"HTTP {status}, not a GraphQL answer"))
        data = payload.get("data")
        result = data.get("recordEquipmentEvents") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            return await self._top_level_errors(batch, payload.get("errors"), status)
        if self.auth_blocked:
            log.warning("the MES accepts the bridge's token again: sending resumed")
            self.auth_blocked = False
        return await self._answered(batch, result)

    def _failed(self, outcome: Outcome) -> Outcome:
        self.stats.failures += 1
        self.stats.last_error = outcome.message
        return outcome

    async def _top_level_errors(
        self, batch: Sequence[Pending], errors: Any, status: int
    ) -> Outcome:
        errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        if not errors:
            return self._failed(Outcome("retry", f"HTTP {status} without data"))
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        first = str(errors[0].get("message", ""))[:300]
        if codes & AUTH_CODES:
            return self._failed(Outcome("auth", first))
        # An event the server's schema cannot even parse fails the whole request; the message
        # names its index, so quarantine it and send the rest again.
        bad: dict[int, str] = {}
        for e in errors:
            match = _VARIABLE_ITEM.search(str(e.get("message", "")))
            if match is None:
                bad = {}
                break
            bad[int(match.group(1))] = str(e.get("message"))
        if bad and all(i < len(batch) for i in bad):
            rejected = [
                Rejection(batch[i].seq, "INVALID_INPUT", message, f"events.{i}")
                for i, message in sorted(bad.items())
            ]
            return await self._settle([], rejected)
        return self._failed(Outcome("retry", f"GraphQL error: {first}"))

    async def _answered(self, batch: Sequence[Pending], result: dict[str, Any]) -> Outcome:
        per_item: dict[int, list[dict[str, Any]]] = {}
        whole: list[dict[str, Any]] = []
        for error in result.get("errors") or []:
            match = _ITEM_FIELD.match(str(error.get("field") or ""))
            if match and int(match.group(1)) < len(batch):
                per_item.setdefault(int(match.group(1)), []).append(error)
            else:
                whole.append(error)
        if whole:
            first = whole[0]
            message = f"{first.get('code')}: {first.get('message')}"
            if first.get("code") == "FORBIDDEN":
                return self._failed(Outcome("auth", message))
            if first.get("field") == "events" and len(batch) > 1:
                return Outcome("shrink", message)
            return self._failed(Outcome("retry", message))
        rejected = [
            Rejection(
                batch[i].seq,
                str(errs[0].get("code") or "INVALID_INPUT"),
                "; ".join(str(e.get("message")) for e in errs),
                str(errs[0].get("field")),
            )
            for i, errs in sorted(per_item.items())
        ]
        delivered = [p for i, p in enumerate(batch) if i not in per_item]
        accepted = int(result.get("accepted") or 0)
        duplicates = int(result.get("duplicates") or 0)
        if accepted + duplicates != len(delivered):
            log.warning(
                "the MES answered accepted=%d duplicates=%d for %d events it did not refuse",
                accepted,
                duplicates,
                len(delivered),
            )
        self.stats.accepted += accepted
        self.stats.duplicates += duplicates
        return await self._settle(delivered, rejected)

    async def _settle(self, delivered: Sequence[Pending], rejected: list[Rejection]) -> Outcome:
        for r in rejected:
            log.error(
                "the MES refused event seq %d (%s: %s): quarantined", r.seq, r.code, r.message
            )
        await asyncio.to_thread(self.outbox.settle, [p.seq for p in delivered], rejected)
        self.stats.quarantined += len(rejected)
        self.stats.last_success = time.time()
        return Outcome("done")
