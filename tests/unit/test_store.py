"""The store: TTL and size bound on a fake clock (memory), the same contract on a real redis-server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from orchestray.errors import StoreUnavailableError
from orchestray.store import MemoryStore, RedisStore, Store, StoreConfig, open_store
from orchestray.testing import redis_server


@pytest.fixture
def memory(clock):
    return Store(MemoryStore(clock=clock), "memory")


async def test_namespaces_do_not_share_keys(memory):
    one, two = memory.namespace("one"), memory.namespace("two")
    await one.set("k", b"1")
    assert await two.get("k") is None


async def test_ttl_expires_on_the_clock(memory, clock):
    ns = memory.namespace("things", ttl_s=10)
    await ns.set("default", b"d")
    await ns.set("short", b"s", ttl_s=2)
    clock.advance(1.9)
    assert await ns.get("short") == b"s"
    clock.advance(0.2)
    assert await ns.get("short") is None
    assert await ns.get("default") == b"d"
    clock.advance(8)
    assert await ns.get("default") is None


async def test_size_bound_evicts_least_recently_used(memory):
    ns = memory.namespace("things", max_entries=3)
    for k in "abc":
        await ns.set(k, k.encode())
    await ns.get("a")  # a is now the most recently used
    await ns.set("d", b"d")
    assert await ns.get("b") is None
    assert [await ns.get(k) for k in "acd"] == [b"a", b"c", b"d"]
    assert memory.backend.entries("things") == 3


async def test_bad_arguments_are_refused(memory):
    with pytest.raises(ValueError, match="namespace"):
        memory.namespace("has space")
    with pytest.raises(ValueError, match="max_entries"):
        memory.namespace("ok", max_entries=0)
    with pytest.raises(ValueError, match="ttl_s"):
        await memory.namespace("ok").set("k", b"v", ttl_s=-1)


class Thing(msgspec.Struct):
    name: str
    size: int = 0


async def test_typed_namespace_round_trips_structs(memory):
    things = memory.namespace("things").typed(Thing)
    await things.set("x", Thing("x", 3))
    assert await things.get("x") == Thing("x", 3)
    await memory.namespace("things").set("junk", b"\xc1")
    assert await things.get("junk") is None


async def test_a_json_typed_namespace_holds_integers_msgpack_cannot(memory):
    things = memory.namespace("things").typed(Thing, codec="json")
    await things.set("big", Thing("big", 2**70))
    assert await things.get("big") == Thing("big", 2**70)
    with pytest.raises(OverflowError):
        await memory.namespace("things").typed(Thing).set("big", Thing("big", 2**70))


def test_config_refuses_passwords_and_wrong_schemes():
    with pytest.raises(ValueError, match="password"):
        StoreConfig(redis_url="redis://:hunter2@localhost:6379")
    with pytest.raises(ValueError, match="redis://"):
        StoreConfig(redis_url="http://localhost")
    with pytest.raises(ValueError, match="needs redis_url"):
        StoreConfig(backend="redis")


def test_open_store_picks_the_backend():
    assert open_store(StoreConfig(), cluster=False).name == "memory"
    assert open_store(StoreConfig(redis_url="redis://127.0.0.1:1"), cluster=False).name == "redis"
    assert open_store(StoreConfig(redis_url_env="R_URL"), cluster=False, environ={"R_URL": "redis://x:1"}).name == "redis"
    with pytest.raises(StoreUnavailableError, match="R_URL"):
        open_store(StoreConfig(redis_url_env="R_URL"), cluster=False, environ={})


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis(redis_url, request):
    store = Store(RedisStore(redis_url, prefix=f"t-{request.node.name}:"), "redis")
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def any_store(request, redis_url, clock):
    backend = MemoryStore(clock=clock) if request.param == "memory" else RedisStore(redis_url, prefix="t-any:")
    store = Store(backend, request.param)
    yield store
    await store.close()


async def test_set_get_delete(any_store):
    ns = any_store.namespace("things", max_entries=10)
    assert await ns.get("a") is None
    await ns.set("a", b"\x00binary\xff")
    assert await ns.get("a") == b"\x00binary\xff"
    assert await ns.delete("a") is True
    assert await ns.delete("a") is False
    assert await ns.get("a") is None


async def test_redis_ttl_expires(redis):
    ns = redis.namespace("things")
    await ns.set("short", b"s", ttl_s=0.05)
    await ns.set("long", b"l", ttl_s=60)
    await asyncio.sleep(0.15)
    assert await ns.get("short") is None
    assert await ns.get("long") == b"l"


async def test_redis_size_bound_holds_under_concurrent_writers(redis):
    ns = redis.namespace("things", max_entries=50, ttl_s=60)
    await asyncio.gather(*(ns.set(f"k{i}", b"v") for i in range(300)))
    present = [k for k in (f"k{i}" for i in range(300)) if await ns.get(k) is not None]
    assert len(present) == 50


async def test_redis_unreachable_is_a_store_error():
    store = Store(RedisStore("redis://127.0.0.1:1/0"), "redis")
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:1"):
        await store.namespace("things").get("k")
    await store.close()
