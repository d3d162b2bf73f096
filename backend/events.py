"""Broadcast for GraphQL subscriptions: in-process queues, or Redis pub/sub across processes.

Delivery is at most once. A subscriber that comes late, falls behind or sits behind a broken
Redis connection misses messages, so payloads are hints ("lot 42 changed", with a version):
a subscription sends the current state first and reloads it on each hint.

Payloads travel as JSON in both implementations, so a payload that Redis could not carry
(a Decimal, a datetime) fails in single-process tests too, not only in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Payload = dict[str, Any]

DEFAULT_QUEUE_SIZE = 100
"""Messages buffered per subscriber before the oldest are dropped."""

_READ_TIMEOUT_SECONDS = 1.0
_RECONNECT_DELAY_SECONDS = 1.0


class Broadcast(Protocol):
    """Publish/subscribe on named channels, at most once, without blocking the publisher."""

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Sends `payload` (JSON-serialisable) to every current subscriber of `channel`."""

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Listens on `channel` for the duration of the `async with` block.

        The subscription is in place when the block is entered: a message published after
        that point reaches it. The iterator ends when the broadcast is closed.
        """

    async def ping(self) -> bool:
        """Whether the broadcast can deliver messages now (for the readiness probe)."""

    async def close(self) -> None:
        """Ends every subscription and releases connections. Safe to call twice."""


class BroadcastClosedError(RuntimeError):
    """The broadcast was used after `close()`."""


_END = None  # queued to end a subscriber's iteration


class _Subscription(AsyncIterator[Payload]):
    """One subscriber's bounded queue of encoded messages.

    When the queue is full the *oldest* message is dropped to make room for the new one:
    payloads are hints, and the newest hint is the one that leads the subscriber to the
    current state. The publisher never waits for a slow subscriber.
    """

    def __init__(self, channel: str, maxsize: int) -> None:
        self.channel = channel
        self.dropped = 0
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize)

    def offer(self, message: str | bytes | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("subscriber of %s is too slow: dropping old messages", self.channel)
        self._queue.put_nowait(message)

    def end(self) -> None:
        self.offer(_END)

    async def __anext__(self) -> Payload:
        message = await self._queue.get()
        if message is _END:
            # Leave the marker for any later call, so an ended subscription stays ended.
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        # Decoded per subscriber: each gets its own dict, and dropped messages cost nothing.
        payload: Payload = json.loads(message)
        return payload


class _FanOut:
    """The local subscribers of each channel."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self.channels: dict[str, set[_Subscription]] = {}

    def add(self, channel: str) -> tuple[_Subscription, bool]:
        """A new subscription, and whether it is the channel's first."""
        subscription = _Subscription(channel, self._queue_size)
        subscribers = self.channels.setdefault(channel, set())
        subscribers.add(subscription)
        return subscription, len(subscribers) == 1

    def remove(self, subscription: _Subscription) -> bool:
        """Removes a subscription; True when it was the channel's last."""
        subscription.end()
        subscribers = self.channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.discard(subscription)
        if subscribers:
            return False
        del self.channels[subscription.channel]
        return True

    def deliver(self, channel: str, message: str | bytes) -> None:
        for subscription in tuple(self.channels.get(channel, ())):
            subscription.offer(message)

    def end_all(self) -> None:
        for subscribers in self.channels.values():
            for subscription in subscribers:
                subscription.end()
        self.channels.clear()


class InProcessBroadcast:
    """Fan-out inside one process: the single-server setup and most tests.

    Each subscriber has a queue of `queue_size` messages; when it is full the oldest message
    is dropped (see `_Subscription`).
    """

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._fan_out = _FanOut(queue_size)
        self._closed = False

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Queues the payload for every subscriber of `channel`; never waits for them."""
        if self._closed:
            raise BroadcastClosedError("broadcast is closed")
        self._fan_out.deliver(channel, json.dumps(payload))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Payload]]:
        """Listens on `channel` until the block ends (see `Broadcast.subscribe`)."""
        if self._closed:
            raise BroadcastClosedError("broadcast is closed")
        subscription, _first = self._fan_out.add(channel)
        try:
            yield subscription
        finally:
            self._fan_out.remove(subscription)

    async def ping(self) -> bool:
        """True until closed."""
        return not self._closed

    async def close(self) -> None:
        """Ends every subscriber's iteration."""
        self._closed = True
        self._fan_out.end_all()

    @property
    def subscriber_count(self) -> int:
        """Local subscribers over all channels (used by tests to check clean-up)."""
        return sum(len(s) for s in self._fan_out.channels.values())


class RedisBroadcast:
    """Redis pub/sub, so that every API process sees the events published by the others.

    One client publishes; one `PubSub` connection per process carries all subscribed channels,
    and a single reader task fans its messages out to bounded in-process queues (the oldest
    message is dropped when a subscriber falls behind). A channel is subscribed in Redis while
    it has at least one local subscriber. After a lost connection the reader reconnects and
    redis-py subscribes the channels again; messages sent in between are lost (at most once).
    """

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        subscribe_timeout_seconds: float = 5.0,
    ) -> None:
        # No health_check_interval: with it, redis-py may read a PING reply on the PubSub
        # connection from the subscribing task while the reader task is reading too.
        self._redis: Redis = Redis.from_url(url, socket_connect_timeout=5)
        self._pubsub = self._redis.pubsub()
        self._fan_out = _FanOut(queue_size)
        self._subscribe_timeout = subscribe_timeout_seconds
        # Serialises SUBSCRIBE/UNSUBSCRIBE so that local counts and Redis state agree.
        self._lock = asyncio.Lock()
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Publishes the payload as JSON to every process subscribed to `channel`."""
        if self._closed:
            raise BroadcastClosedError("broadcast is closed")
        await self._redis.publish(channel, json.dumps(payload))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Payload]]:
        """Listens on `channel` until the block ends (see `Broadcast.subscribe`).

        For a channel's first local subscriber this waits until Redis has acknowledged the
        SUBSCRIBE, so a message published once the block is entered is not missed.
        """
        if self._closed:
            raise BroadcastClosedError("broadcast is closed")
        async with self._lock:
            subscription, first = self._fan_out.add(channel)
            if first:
                try:
                    await self._redis_subscribe(channel)
                except BaseException:
                    self._fan_out.remove(subscription)
                    if not self._closed:
                        await self._redis_unsubscribe(channel)
                    raise
        try:
            yield subscription
        finally:
            async with self._lock:
                if self._fan_out.remove(subscription) and not self._closed:
                    await self._redis_unsubscribe(channel)

    async def ping(self) -> bool:
        """Whether Redis answers now."""
        if self._closed:
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Stops the reader, ends every subscription and closes both connections."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(BroadcastClosedError("broadcast is closed"))
        self._fan_out.end_all()
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def _redis_subscribe(self, channel: str) -> None:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[channel] = ack
        try:
            await self._pubsub.subscribe(channel)
            # The reader starts after the first SUBSCRIBE: before it, the PubSub has no
            # connection to read from.
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="redis-broadcast-reader")
            await asyncio.wait_for(ack, self._subscribe_timeout)
        finally:
            self._acks.pop(channel, None)

    async def _redis_unsubscribe(self, channel: str) -> None:
        # Not acknowledged: the reader ignores messages of channels without local subscribers.
        try:
            await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError) as error:
            logger.warning("could not unsubscribe from %s: %s", channel, error)

    async def _read(self) -> None:
        while True:
            try:
                # A timeout rather than blocking forever, so a dead connection is noticed
                # on the next read; an idle read waits the full timeout, so this does not spin.
                message = await self._pubsub.get_message(timeout=_READ_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Redis pub/sub read failed, retrying: %s", error)
                await asyncio.sleep(_RECONNECT_DELAY_SECONDS)
                continue
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("message", "subscribe"):
            return
        raw_channel = message["channel"]
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "message":
            self._fan_out.deliver(channel, message["data"])
            return
        ack = self._acks.get(channel)
        if ack is not None and not ack.done():
            ack.set_result(None)


class PrefixedBroadcast:
    """Puts a prefix before every channel name of another broadcast (see Settings)."""

    def __init__(self, inner: Broadcast, prefix: str) -> None:
        self._inner, self._prefix = inner, prefix

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self._inner.publish(self._prefix + channel, payload)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._inner.subscribe(self._prefix + channel)

    async def ping(self) -> bool:
        return await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()


def create_broadcast(redis_url: str | None, channel_prefix: str = "") -> Broadcast:
    """Redis pub/sub when a Redis URL is configured, else in-process fan-out."""
    if redis_url:
        redis: Broadcast = RedisBroadcast(redis_url)
        return PrefixedBroadcast(redis, channel_prefix) if channel_prefix else redis
    return InProcessBroadcast()
