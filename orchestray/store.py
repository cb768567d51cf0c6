"""One key-value store for the whole cluster: bytes under namespaced keys, each with a TTL, each
namespace held to a size bound. The response cache and the stored Responses live in it.

    store = open_store(config.store, cluster=True)        # StoreConfig; cluster=False: this process only
    responses = store.namespace("responses", max_entries=100_000, ttl_s=30 * 86400)
    await responses.set("resp_123", b"...")                # the namespace's TTL; or ttl_s=60 for this one
    await responses.get("resp_123")                        # -> b"..." | None (absent or expired)
    await responses.delete("resp_123")                     # -> True if it was there
    typed = responses.typed(MyStruct)                      # msgspec msgpack, encoder/decoder made once
    await typed.set("k", MyStruct(...)); await typed.get("k")  # -> MyStruct | None
    await store.close()

Backends, chosen by `StoreConfig.backend` (`auto`: Redis when a URL is set, else the cluster actor
when `cluster`, else memory):

    MemoryStore   this process only (runtime="local", unit tests); least recently used goes first
    RayStore      a named detached Ray actor holding a MemoryStore: one store for every process of
                  the cluster with no server to run (the embedded default); lost if the actor dies
    RedisStore    a real Redis (the official `redis` package's asyncio client, `orchestray[redis]`);
                  the entry closest to its expiry goes first; survives the cluster

Every backend is safe to call from many tasks at once and from any event loop. A store that cannot
be reached raises `StoreUnavailableError`; callers that can live without it (the cache) treat that
as a miss. Keys are any strings; namespaces are short names (letters, digits, `._-`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Callable, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestray.errors import StoreUnavailableError

__all__ = [
    "Store",
    "Backend",
    "Namespace",
    "Typed",
    "MemoryStore",
    "RedisStore",
    "StoreConfig",
    "open_store",
    "DEFAULT_MAX_ENTRIES",
]

DEFAULT_MAX_ENTRIES = 100_000
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
T = TypeVar("T")


class StoreConfig(BaseModel):
    """The YAML's `store:` section (also reached as `cache: {redis_url: ...}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "memory", "ray", "redis"] = "auto"
    redis_url: str | None = Field(default=None, description="redis://host:port/db (no password here: use redis_url_env)")
    redis_url_env: str | None = Field(default=None, description="an environment variable holding the URL")
    key_prefix: str = "orchestray:"

    @model_validator(mode="after")
    def _one_url(self) -> "StoreConfig":
        if self.redis_url and self.redis_url_env:
            raise ValueError("give redis_url or redis_url_env, not both")
        if self.redis_url and urlsplit(self.redis_url).password:
            raise ValueError("redis_url must not hold a password (secrets come from the environment: use redis_url_env)")
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        if self.backend == "redis" and not (self.redis_url or self.redis_url_env):
            raise ValueError("backend: redis needs redis_url or redis_url_env")
        return self


class Backend(Protocol):
    """What a store backend does; `Store` adds namespaces over it."""

    async def get(self, namespace: str, key: str) -> bytes | None: ...

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None: ...

    async def delete(self, namespace: str, key: str) -> bool: ...

    async def close(self) -> None: ...


class Store:
    """A backend with namespaces handed out over it."""

    def __init__(self, backend: Backend, name: str):
        self.backend = backend
        self.name = name  # memory | ray | redis

    def __repr__(self) -> str:
        return f"Store({self.name})"

    def namespace(self, name: str, *, max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float | None = None) -> "Namespace":
        return Namespace(self.backend, name, max_entries=max_entries, ttl_s=ttl_s)

    async def close(self) -> None:
        await self.backend.close()


class Namespace:
    """Keys of one namespace, its own size bound, a default TTL (None: kept until evicted)."""

    __slots__ = ("backend", "name", "max_entries", "ttl_s")

    def __init__(self, backend: Backend, name: str, *, max_entries: int, ttl_s: float | None):
        if not _NAMESPACE.match(name):
            raise ValueError(f"namespace {name!r} must be 1-64 letters, digits and ._- (starting with a letter or digit)")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        self.backend = backend
        self.name = name
        self.max_entries = max_entries
        self.ttl_s = ttl_s

    async def get(self, key: str) -> bytes | None:
        return await self.backend.get(self.name, key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl}")
        await self.backend.set(self.name, key, bytes(value), ttl, self.max_entries)

    async def delete(self, key: str) -> bool:
        return await self.backend.delete(self.name, key)

    def typed(self, type_: type[T], *, codec: Literal["msgpack", "json"] = "msgpack") -> "Typed[T]":
        return Typed(self, type_, codec=codec)


class Typed(Generic[T]):
    """A namespace whose values are one msgspec-encodable type (msgpack on the wire).

    `codec="json"` is for values that hold a client's JSON as it came: its integers may be of
    any size (a schema's `"maximum": 2**70`), and msgpack's stop at 64 bits."""

    __slots__ = ("namespace", "_encoder", "_decoder")

    def __init__(self, namespace: Namespace, type_: type[T], *, codec: Literal["msgpack", "json"] = "msgpack"):
        self.namespace = namespace
        wire = msgspec.json if codec == "json" else msgspec.msgpack
        self._encoder = wire.Encoder()
        self._decoder = wire.Decoder(type_)

    async def get(self, key: str) -> T | None:
        raw = await self.namespace.get(key)
        if raw is None:
            return None
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # written by an older shape of the type: as good as absent

    async def set(self, key: str, value: T, ttl_s: float | None = None) -> None:
        await self.namespace.set(key, self._encoder.encode(value), ttl_s)

    async def delete(self, key: str) -> bool:
        return await self.namespace.delete(key)


class MemoryStore:
    """Entries in this process, least recently used evicted first; `clock` is injectable.

    Synchronous underneath (nothing awaits between reading and writing), so concurrent tasks
    see each set whole. `entries(namespace)` is for tests and stats.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._spaces: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}

    def get_now(self, namespace: str, key: str) -> bytes | None:
        space = self._spaces.get(namespace)
        if space is None:
            return None
        entry = space.get(key)
        if entry is None:
            return None
        deadline, value = entry
        if deadline <= self.clock():
            del space[key]
            return None
        space.move_to_end(key)
        return value

    def set_now(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        space = self._spaces.setdefault(namespace, OrderedDict())
        deadline = float("inf") if ttl_s is None else self.clock() + ttl_s
        space[key] = (deadline, value)
        space.move_to_end(key)
        while len(space) > max_entries:
            space.popitem(last=False)

    def delete_now(self, namespace: str, key: str) -> bool:
        space = self._spaces.get(namespace)
        if space is None or key not in space:
            return False
        deadline, _ = space.pop(key)
        return deadline > self.clock()

    def entries(self, namespace: str) -> int:
        """Live entries of a namespace (expired ones are dropped as they are counted)."""
        space = self._spaces.get(namespace, OrderedDict())
        now = self.clock()
        for key in [k for k, (deadline, _) in space.items() if deadline <= now]:
            del space[key]
        return len(space)

    async def get(self, namespace: str, key: str) -> bytes | None:
        return self.get_now(namespace, key)

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        self.set_now(namespace, key, value, ttl_s, max_entries)

    async def delete(self, namespace: str, key: str) -> bool:
        return self.delete_now(namespace, key)

    async def close(self) -> None:
        return None


# Set the value, index it by its deadline, drop the expired from the index, then evict the entries
# closest to expiry past the bound: one script, so concurrent writers never overshoot together.
_SET_SCRIPT = """
local deadline = tonumber(ARGV[3])
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[2], deadline, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
return 1
"""
_NEVER = 2**52  # a deadline for entries kept until evicted (ms; exact in Lua's doubles)


class RedisStore:
    """Entries in a real Redis: `{prefix}{namespace}:key`, indexed by deadline in a sorted set.

    The namespace is a Redis Cluster hash tag, so a namespace's keys and index share a slot. One
    client per event loop (the asyncio client belongs to the loop that made it).
    """

    def __init__(self, url: str, prefix: str = "orchestray:"):
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise StoreUnavailableError(
                "the Redis store needs the `redis` package: pip install 'orchestray[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, object, object]] = {}

    def __reduce__(self):
        return (RedisStore, (self.url, self.prefix))

    def __repr__(self) -> str:
        return f"RedisStore({_safe_url(self.url)!r})"

    def _client(self):
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        held = self._clients.get(id(loop))
        if held is None or held[0] is not loop:
            # Blocking: past `max_connections` a call waits for a free connection, not an error.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=64, timeout=5.0, socket_connect_timeout=2.0, socket_timeout=5.0
            )
            client = aioredis.Redis(connection_pool=pool)
            held = self._clients[id(loop)] = (loop, client, client.register_script(_SET_SCRIPT))
        return held[1], held[2]

    def _keys(self, namespace: str, key: str) -> tuple[str, str]:
        base = f"{self.prefix}{{{namespace}}}"
        return f"{base}:{key}", f"{base}~index"

    async def _call(self, what: str, call):
        import redis.exceptions

        try:
            return await call
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as err:
            # MaxConnectionsError is a ConnectionError: a pool still full after its timeout.
            raise StoreUnavailableError(f"redis at {_safe_url(self.url)}: {what} failed ({type(err).__name__}: {err})") from None

    async def get(self, namespace: str, key: str) -> bytes | None:
        client, _ = self._client()
        return await self._call("get", client.get(self._keys(namespace, key)[0]))

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        _, script = self._client()
        now_ms = int(time.time() * 1000)
        ttl_ms = None if ttl_s is None else max(1, int(ttl_s * 1000))
        deadline = _NEVER if ttl_ms is None else now_ms + ttl_ms
        entry, index = self._keys(namespace, key)
        args = [value, "" if ttl_ms is None else ttl_ms, deadline, now_ms, max_entries]
        await self._call("set", script(keys=[entry, index], args=args))

    async def delete(self, namespace: str, key: str) -> bool:
        client, _ = self._client()
        entry, index = self._keys(namespace, key)

        async def both() -> int:
            async with client.pipeline(transaction=True) as pipe:
                removed, _ = await pipe.delete(entry).zrem(index, entry).execute()
            return removed

        return bool(await self._call("delete", both()))

    async def close(self) -> None:
        held, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for owner, client, _ in held.values():
            if owner is loop:
                await client.aclose(close_connection_pool=True)  # a pool given is not closed otherwise


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(
    config: StoreConfig | None = None, *, cluster: bool, environ=None, clock: Callable[[], float] | None = None
) -> Store:
    """The store a config names. `cluster`: the caller runs on Ray, so `auto` means the shared
    actor; otherwise (runtime="local") it means this process's memory, on `clock` if given."""
    import os

    config = config or StoreConfig()
    environ = os.environ if environ is None else environ
    url = config.redis_url
    if config.redis_url_env:
        url = environ.get(config.redis_url_env)
        if not url:
            raise StoreUnavailableError(f"store.redis_url_env: environment variable {config.redis_url_env} is not set")
    backend = config.backend
    if backend == "auto":
        backend = "redis" if url else ("ray" if cluster else "memory")
    if backend == "redis":
        return Store(RedisStore(url, config.key_prefix), "redis")
    if backend == "ray":
        from orchestray.actors.store import RayStore

        return Store(RayStore(config.key_prefix), "ray")
    return Store(MemoryStore(clock=clock or time.monotonic), "memory")
