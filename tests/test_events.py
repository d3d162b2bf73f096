"""The broadcast layer: in-process fan-out, and Redis pub/sub between processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio

from backend.events import (
    BroadcastClosedError,
    InProcessBroadcast,
    RedisBroadcast,
    create_broadcast,
)

REDIS_URL = os.environ.get("MES_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
ROOT = Path(__file__).resolve().parents[1]
WAIT = 5.0  # seconds; generous, only reached when a test is failing


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
async def redis_broadcasts(redis_url: str) -> AsyncIterator[Callable[[], RedisBroadcast]]:
    """Makes RedisBroadcasts (each as another process would have) and closes them after."""
    made: list[RedisBroadcast] = []

    def make() -> RedisBroadcast:
        made.append(RedisBroadcast(redis_url))
        return made[-1]

    yield make
    for broadcast in made:
        await broadcast.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def channel_name() -> str:
    # Pub/sub channels are global to a Redis server (not per database): keep them unique.
    return f"mes-test:{uuid.uuid4().hex}"


async def numsub(client: redis.asyncio.Redis, channel: str) -> int:
    [(_name, count)] = await client.pubsub_numsub(channel)
    return int(count)


@asynccontextmanager
async def slow_link(url: str, delay: float) -> AsyncIterator[str]:
    """The URL of a local proxy to `url` that delays every write to Redis by `delay` seconds."""
    target = urlsplit(url)
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wait: float) -> None:
        with suppress(ConnectionError):
            while data := await reader.read(65536):
                await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        server_reader, server = await asyncio.open_connection(target.hostname, target.port)
        writers.extend((client, server))
        tasks.add(asyncio.create_task(pipe(client_reader, server, delay)))
        tasks.add(asyncio.create_task(pipe(server_reader, client, 0)))

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield target._replace(netloc=f"127.0.0.1:{port}").geturl()
    finally:
        proxy.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
        await proxy.wait_closed()


async def next_payload(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(events), WAIT)


# In-process


async def test_in_process_fans_out_to_every_subscriber_of_the_channel() -> None:
    broadcast = InProcessBroadcast()
    async with (
        broadcast.subscribe("lot:1") as first,
        broadcast.subscribe("lot:1") as second,
        broadcast.subscribe("lot:2") as other,
    ):
        await broadcast.publish("lot:1", {"id": 1, "version": 3})
        await broadcast.publish("lot:2", {"id": 2, "version": 1})

        assert await next_payload(first) == {"id": 1, "version": 3}
        assert await next_payload(second) == {"id": 1, "version": 3}
        # lot:1's message never reached the lot:2 subscriber: its first message is its own.
        assert await next_payload(other) == {"id": 2, "version": 1}
    await broadcast.close()


async def test_in_process_subscribers_get_their_own_copy() -> None:
    broadcast = InProcessBroadcast()
    async with broadcast.subscribe("c") as first, broadcast.subscribe("c") as second:
        await broadcast.publish("c", {"tags": ["a"]})
        (await next_payload(first))["tags"].append("changed")
        assert await next_payload(second) == {"tags": ["a"]}
    await broadcast.close()


async def test_in_process_payloads_must_be_json_like_on_redis() -> None:
    broadcast = InProcessBroadcast()
    with pytest.raises(TypeError, match="not JSON serializable"):
        await broadcast.publish("c", {"when": object()})
    await broadcast.close()


async def test_leaving_the_block_removes_the_subscriber() -> None:
    broadcast = InProcessBroadcast()
    async with broadcast.subscribe("c") as events:
        async with broadcast.subscribe("c"):
            assert broadcast.subscriber_count == 2
        assert broadcast.subscriber_count == 1
    assert broadcast.subscriber_count == 0

    await broadcast.publish("c", {"after": True})  # nobody listens: not an error
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), WAIT)
    await broadcast.close()


async def test_slow_subscriber_loses_its_oldest_messages_and_never_blocks_the_publisher() -> None:
    broadcast = InProcessBroadcast(queue_size=3)
    received: list[int] = []

    async with broadcast.subscribe("c") as fast_events, broadcast.subscribe("c") as slow_events:

        async def read_fast() -> None:
            async for payload in fast_events:
                received.append(payload["n"])
                if payload["n"] == 9:
                    return

        reader = asyncio.create_task(read_fast())
        await asyncio.sleep(0)
        for n in range(10):
            # Bounded: a publisher waiting on the slow subscriber would time out here.
            await asyncio.wait_for(broadcast.publish("c", {"n": n}), 1)
            await asyncio.sleep(0)  # lets the fast reader keep up
        await asyncio.wait_for(reader, WAIT)

        assert received == list(range(10))
        assert [(await next_payload(slow_events))["n"] for _ in range(3)] == [7, 8, 9]
    await broadcast.close()


async def test_close_ends_open_subscriptions() -> None:
    broadcast = InProcessBroadcast()
    async with broadcast.subscribe("c") as events:
        await broadcast.publish("c", {"n": 1})
        await broadcast.close()
        assert await next_payload(events) == {"n": 1}  # what was queued is still delivered
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(events), WAIT)
    assert await broadcast.ping() is False
    with pytest.raises(BroadcastClosedError):
        await broadcast.publish("c", {})


async def test_create_broadcast_chooses_redis_only_with_a_url() -> None:
    local = create_broadcast(None)
    remote = create_broadcast("redis://127.0.0.1:6379/5")
    assert isinstance(local, InProcessBroadcast)
    assert isinstance(remote, RedisBroadcast)
    await local.close()
    await remote.close()


async def test_redis_ping_is_false_when_redis_is_unreachable() -> None:
    broadcast = RedisBroadcast("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert await broadcast.ping() is False
    await broadcast.close()


# Redis


@pytest.mark.redis
async def test_redis_delivers_between_broadcast_instances(
    redis_broadcasts: Callable[[], RedisBroadcast],
) -> None:
    publisher, subscriber = redis_broadcasts(), redis_broadcasts()
    channel = channel_name()
    async with subscriber.subscribe(channel) as events:
        # Published at once, with no sleep: subscribe() returned after Redis acknowledged.
        await publisher.publish(channel, {"lot": "L-1", "version": 2})
        assert await next_payload(events) == {"lot": "L-1", "version": 2}


@pytest.mark.redis
async def test_redis_subscribe_returns_only_once_redis_has_subscribed(
    redis_broadcasts: Callable[[], RedisBroadcast], redis_url: str
) -> None:
    # The subscriber's commands reach Redis 0.1 s late: had subscribe() returned as soon as
    # SUBSCRIBE was sent, the publish below would reach Redis first and be lost.
    async with slow_link(redis_url, 0.1) as slow_url:
        subscriber = RedisBroadcast(slow_url)
        channel = channel_name()
        try:
            async with subscriber.subscribe(channel) as events:
                await redis_broadcasts().publish(channel, {"n": 1})
                assert await next_payload(events) == {"n": 1}
        finally:
            await subscriber.close()


@pytest.mark.redis
async def test_redis_delivers_to_another_process(
    redis_broadcasts: Callable[[], RedisBroadcast], redis_url: str
) -> None:
    channel = channel_name()
    script = (
        "import asyncio, sys\n"
        "from backend.events import RedisBroadcast\n"
        "async def main():\n"
        "    b = RedisBroadcast(sys.argv[1])\n"
        "    await b.publish(sys.argv[2], {'from': 'other process'})\n"
        "    await b.close()\n"
        "asyncio.run(main())\n"
    )
    async with redis_broadcasts().subscribe(channel) as events:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, redis_url, channel, cwd=ROOT, stderr=subprocess.PIPE
        )
        _out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert await next_payload(events) == {"from": "other process"}


@pytest.mark.redis
async def test_redis_fans_out_locally_over_one_subscription_and_unsubscribes_after_the_last(
    redis_broadcasts: Callable[[], RedisBroadcast], redis_client: redis.asyncio.Redis
) -> None:
    publisher, broadcast = redis_broadcasts(), redis_broadcasts()
    channel = channel_name()
    async with broadcast.subscribe(channel) as first:
        # Subscribed in Redis before subscribe() returned, not some time later.
        assert await numsub(redis_client, channel) == 1
        async with broadcast.subscribe(channel) as second:
            assert await numsub(redis_client, channel) == 1  # one per process, not per subscriber
            await publisher.publish(channel, {"n": 1})
            assert await next_payload(first) == {"n": 1}
            assert await next_payload(second) == {"n": 1}
        assert await numsub(redis_client, channel) == 1

        await publisher.publish(channel, {"n": 2})
        assert await next_payload(first) == {"n": 2}

    # UNSUBSCRIBE is sent without waiting for the reply: poll briefly.
    for _ in range(100):
        if await numsub(redis_client, channel) == 0:
            break
        await asyncio.sleep(0.02)
    assert await numsub(redis_client, channel) == 0

    # A new first subscriber subscribes again.
    async with broadcast.subscribe(channel) as again:
        await publisher.publish(channel, {"n": 3})
        assert await next_payload(again) == {"n": 3}


@pytest.mark.redis
async def test_redis_reader_waits_when_idle_and_stops_on_close(redis_url: str) -> None:
    broadcast = RedisBroadcast(redis_url)
    calls = 0
    get_message = broadcast._pubsub.get_message

    async def counting_get_message(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await get_message(**kwargs)

    broadcast._pubsub.get_message = counting_get_message
    async with broadcast.subscribe(channel_name()):
        reader = broadcast._reader
        assert reader is not None
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.3)  # idle, with no channel at all
    # One read for the SUBSCRIBE reply, one for UNSUBSCRIBE, then a wait of 1 s per read;
    # a spinning reader would make thousands.
    assert calls <= 4

    assert await broadcast.ping() is True
    await broadcast.close()
    assert reader.cancelled()
    assert await broadcast.ping() is False


@pytest.mark.redis
async def test_redis_close_ends_open_subscriptions(
    redis_broadcasts: Callable[[], RedisBroadcast],
) -> None:
    broadcast = redis_broadcasts()
    async with broadcast.subscribe(channel_name()) as events:
        await broadcast.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(events), WAIT)
    with pytest.raises(BroadcastClosedError):
        await broadcast.publish("c", {})
