"""OPC UA connector (asyncua 2.1): one client and one subscription per machine.

- Iterator mode (`sub.next_event`): a single consumer, so notifications keep their order
  (handler mode runs each notification in its own task and reorders them).
- `OverflowPolicy.DISCONNECT` with a large client queue: if the bridge ever falls behind,
  the client reconnects and the bridge re-reads every signal, instead of asyncua's default
  of silently dropping the oldest notifications.
- asyncua's supervisor reconnects an established session (reactivate, TransferSubscriptions,
  Republish); it never retries the *first* connect, so this connector owns that loop, with
  backoff, and also restarts the whole client if the supervisor gives up.
- After every (re)connect all signals are read once ("resync"): a recreated subscription
  reports only current values, and counters must be caught up from their cumulative value.
  Replayed or re-read values that are not newer than what was processed are dropped by the
  normaliser (source timestamps), and keep their derived event ids anyway.
- Connection loss is reported to the sink (`link(False)`) → ALARM COMM_LOSS, never DOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError

from equipment_bridge.backoff import Retry
from equipment_bridge.config import (
    OpcUaAlarmSignal,
    OpcUaEquipment,
    OpcUaStateSignal,
)
from equipment_bridge.connectors.base import Sink
from equipment_bridge.events import Observation, utcnow

log = logging.getLogger(__name__)

# How long to wait after a reconnect before re-reading: asyncua reports CONNECTED before it
# has republished the notifications missed during the outage; those go first.
RESYNC_SETTLE_S = 0.5
# Notifications taken from the queue at most per sink call.
MAX_BATCH = 2000


def channels_of(eq: OpcUaEquipment) -> list[tuple[str, str]]:
    """(channel, node id) for every variable the machine's signals read."""
    out: list[tuple[str, str]] = []
    for name, sig in eq.signals.items():
        if isinstance(sig, OpcUaStateSignal):
            out.append((name, sig.node))
            if sig.reason_node:
                out.append((f"{name}#reason", sig.reason_node))
        elif isinstance(sig, OpcUaAlarmSignal):
            if sig.code_node:
                out.append((f"{name}#code", sig.code_node))
            if sig.active_node:
                out.append((f"{name}#active", sig.active_node))
        else:
            out.append((name, sig.node))
    return out


def _utc(ts: Any) -> dt.datetime | None:
    if not isinstance(ts, dt.datetime):
        return None
    if ts.year < 1700:  # OPC UA "no timestamp" (1601-01-01)
        return None
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _observation(channel: str, dv: ua.DataValue | None, replayed: bool) -> Observation | None:
    if dv is None:
        return None
    status = dv.StatusCode
    if status is not None and not status.is_good():
        return None
    value = dv.Value.Value if dv.Value is not None else None
    if value is None:
        return None
    return Observation(channel, value, utcnow(), _utc(dv.SourceTimestamp), replayed)


class OpcUaConnector:
    def __init__(self, eq: OpcUaEquipment, sink: Sink, *, tick_s: float = 1.0) -> None:
        self.eq = eq
        self.sink = sink
        self.tick_s = tick_s
        self.channels = channels_of(eq)
        self._retry = Retry(eq.backoff)
        self._resync_at: float | None = None
        self.client: Client | None = None

    # ------------------------------------------------------------ client

    async def _new_client(self) -> Client:
        eq = self.eq
        client = Client(
            eq.endpoint,
            timeout=eq.request_timeout_s,
            watchdog_intervall=eq.watchdog_s,
        )
        client.name = f"mes-bridge {eq.code}"
        sec = eq.security
        if sec is not None:
            if sec.app_uri:
                client.application_uri = sec.app_uri
            password = os.environ.get(sec.key_password_env) if sec.key_password_env else None
            # Without server_cert, set_security fetches the endpoints first (network I/O).
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=sec.cert,
                private_key=sec.key,
                private_key_password=password,
                server_certificate=sec.server_cert,
                mode=getattr(ua.MessageSecurityMode, sec.mode),
            )
        return client

    async def _close(self, client: Client) -> None:
        # Not wait_for: it waits for the cancelled call to end, and a disconnect from a dead
        # server may not end; this one is left behind after 2 s.
        closing = asyncio.ensure_future(client.disconnect())
        done, _ = await asyncio.wait({closing}, timeout=2.0)
        if not done:
            closing.cancel()
        elif not closing.cancelled():
            closing.exception()  # retrieved: a failed disconnect is of no interest

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connects (retrying with backoff), subscribes and forwards, until cancelled."""
        while True:
            try:
                client = await self._new_client()
                await client.connect(
                    auto_reconnect=True,
                    reconnect_max_delay=self.eq.reconnect_max_delay_s,
                    reconnect_request_timeout=max(self.eq.request_timeout_s, 5.0),
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # refused, timeout, security, bad endpoint, ...
                detail = f"cannot connect to {self.eq.endpoint}: {_why(error)}"
                await self.sink.link(False, detail)
                delay = self._retry.next_delay()
                # Refused/unreachable is routine while a machine is off; anything else
                # (security, certificates, a bad endpoint) needs a person.
                routine = isinstance(error, OSError | TimeoutError)
                log.log(
                    logging.INFO if routine else logging.WARNING,
                    "%s: %s; next attempt in %.1f s",
                    self.eq.code,
                    detail,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self.client = client
            try:
                await self._session(client)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s: OPC UA session ended: %s", self.eq.code, _why(error))
                await self.sink.link(False, f"{self.eq.endpoint}: {_why(error)}")
            finally:
                self.client = None
                await self._close(client)
            await asyncio.sleep(self._retry.next_delay())

    async def _session(self, client: Client) -> None:
        eq, subcfg = self.eq, self.eq.subscription
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=subcfg.publishing_ms,
            RequestedMaxKeepAliveCount=subcfg.keepalive_count,
            RequestedLifetimeCount=subcfg.lifetime_count,
            MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.create_subscription(
            params, queue_maxsize=subcfg.client_queue, overflow=OverflowPolicy.DISCONNECT
        )
        by_node: dict[str, list[str]] = {}
        nodes: list[tuple[str, Node]] = []
        for channel, node_id in self.channels:
            try:
                node = client.get_node(node_id)
            except Exception as error:
                await self.sink.config_error(
                    channel.split("#")[0], f"bad node id {node_id!r}: {error}"
                )
                continue
            nodes.append((channel, node))
        results = await sub.subscribe_data_change(
            [n for _, n in nodes],
            queuesize=subcfg.queue_size,
            sampling_interval=ua.Double(subcfg.sampling_ms),
        )
        good: list[tuple[str, Node]] = []
        for (channel, node), result in zip(nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                await self.sink.config_error(
                    channel.split("#")[0], f"node {node.nodeid.to_string()}: {result.name}"
                )
                continue
            good.append((channel, node))
            by_node.setdefault(node.nodeid.to_string(), []).append(channel)
        await self._resync(client, good)
        self._retry.reset()
        log.info("%s: connected to %s, %d variables subscribed", eq.code, eq.endpoint, len(good))
        watcher = asyncio.create_task(self._watch_state(client), name=f"opcua-state {eq.code}")
        try:
            await self._consume(client, sub, good, by_node, watcher)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    async def _watch_state(self, client: Client) -> None:
        """Link loss and restore from asyncua's connection supervisor (which keeps retrying:
        a lost transport goes DISCONNECTED, then RECONNECTING until CONNECTED again)."""
        async with client.subscribe_state() as states:
            while True:
                state = await states.next_change()
                if state in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED):
                    await self.sink.link(
                        False, f"{self.eq.endpoint}: connection lost ({state.value})"
                    )
                elif state is UaClientState.CONNECTED:
                    # Resync (and report the link up) once the republished backlog is in.
                    self._resync_at = time.monotonic() + RESYNC_SETTLE_S

    async def _consume(
        self,
        client: Client,
        sub: Subscription,
        nodes: Sequence[tuple[str, Node]],
        by_node: dict[str, list[str]],
        watcher: asyncio.Task[None],
    ) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            if watcher.done():
                watcher.result()
                raise ConnectionError("lost track of the OPC UA client's state")
            now = time.monotonic()
            wait = next_tick - now
            if self._resync_at is not None:
                wait = min(wait, self._resync_at - now)
            event = await sub.next_event(timeout=max(0.0, wait)) if wait > 0 else None
            if event is not None:
                batch = [event]
                # Take what else is already queued: a publish response arrives as a burst.
                while len(batch) < MAX_BATCH:
                    more = await sub.next_event(timeout=0.002)
                    if more is None:
                        break
                    batch.append(more)
                await self._deliver(batch, by_node)
            now = time.monotonic()
            if self._resync_at is not None and now >= self._resync_at:
                self._resync_at = None
                if client.state is UaClientState.CONNECTED:
                    try:
                        await self._resync(client, nodes)
                    except (ConnectionError, TimeoutError, UaError) as error:
                        log.info("%s: resync read failed (%s); retrying", self.eq.code, _why(error))
                        self._resync_at = time.monotonic() + 1.0
            if now >= next_tick:
                next_tick = now + self.tick_s
                await self.sink.tick()

    async def _deliver(self, batch: Sequence[SubEvent], by_node: dict[str, list[str]]) -> None:
        observations: list[Observation] = []
        for event in batch:
            if isinstance(event, DataChangeEvent):
                dv = event.data.monitored_item.Value
                for channel in by_node.get(event.node.nodeid.to_string(), ()):
                    obs = _observation(channel, dv, event.replayed)
                    if obs is not None:
                        observations.append(obs)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                log.warning("%s: subscription status %s", self.eq.code, status)
                if not status.is_good():
                    self._resync_at = time.monotonic() + RESYNC_SETTLE_S
        if observations:
            await self.sink.observe(observations)

    async def _resync(self, client: Client, nodes: Sequence[tuple[str, Node]]) -> None:
        """Reads every signal once and reports the link up."""
        if nodes:
            values = await client.read_attributes([n for _, n in nodes])
            observations = [
                obs
                for (channel, _), dv in zip(nodes, values, strict=True)
                if (obs := _observation(channel, dv, False)) is not None
            ]
            if observations:
                await self.sink.observe(observations)
        await self.sink.link(True)


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
