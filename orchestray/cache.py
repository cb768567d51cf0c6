"""The response cache: a provider's answer to a canonical request, kept in the cluster's store.

    cache:                      # the YAML; no section, no cache
      ttl_s: 3600
      max_entries: 100000
      max_temperature: 0        # calls above it bypass; an unset temperature counts as 1.0
      redis_url: redis://...    # optional: the store's Redis (else the embedded store actor)
    providers: [{name: x, ..., cache: {max_temperature: 1}}]     # or cache: false
    routes: {r: {pattern: ..., cache: {max_temperature: 2}}}    # for every call made inside it

The cache sits in front of each provider the registry hands out (`Registry._make`, the one place
every door, pattern and batch worker gets its models from), in the caller's process: a hit never
reaches the provider's actor, so it spends no rate-limit budget and costs 0. Its trace's provider
span says `cached: true`. Routes are not cached whole; the calls they make are, so a route rerun
with other settings (a new threshold, another judge) still finds every call it repeats.

Key: the provider's kind and model (deployments of one model share entries), and the request's
model-facing fields in canonical JSON (sorted keys, 2.0 as 2, documented defaults dropped, a lone
text part as a string, tool arguments canonical); not `user`, `metadata`, `store`, `request_id`,
retries or timeouts. A store that cannot be reached makes every call a miss, never an error.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from typing import Any, AsyncIterator

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestray.errors import StoreUnavailableError
from orchestray.messages import ChatRequest, Chunk, Completion, ToolCallDelta, canonical_json
from orchestray.store import Namespace

__all__ = ["CacheConfig", "CachePolicy", "ResponseCache", "CachedModel", "RouteCacheScope", "cache_key", "cacheable"]

log = logging.getLogger(__name__)

NAMESPACE = "cache"
_KEY_VERSION = "v1"  # bump when the key's recipe changes: old entries then simply miss
_UNSET_TEMPERATURE = 1.0  # OpenAI's and Anthropic's default


class CachePolicy(BaseModel):
    """A provider's or route's own say: `enabled: false` never caches; `max_temperature` overrides
    the cache's. `cache: false` is short for `{enabled: false}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_temperature: float | None = Field(default=None, ge=0, le=2)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data is False:
            return {"enabled": False}
        if data is True:
            return {}
        return data


class CacheConfig(BaseModel):
    """The YAML's `cache:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0, description="how long an answer is kept")
    max_entries: int = Field(default=100_000, gt=0, description="answers kept at most; the oldest go first")
    max_temperature: float = Field(default=0.0, ge=0, le=2, description="calls above it bypass the cache")
    redis_url: str | None = Field(default=None, description="short for store.redis_url")
    redis_url_env: str | None = Field(default=None, description="short for store.redis_url_env")


def store_from_cache(data: Any) -> Any:
    """A config document's `cache.redis_url(_env)` moved into its `store:` section (one store for
    every user of it), refusing a second, different URL there."""
    if not isinstance(data, dict) or not isinstance(data.get("cache"), dict):
        return data
    cache = dict(data["cache"])
    moved = {k: cache.pop(k) for k in ("redis_url", "redis_url_env") if cache.get(k)}
    if not moved:
        return data
    store = dict(data.get("store") or {})
    for k, v in moved.items():
        if store.get(k) not in (None, v):
            raise ValueError(f"cache.{k} and store.{k} differ: give the URL once, in store:")
        store[k] = v
    return {**data, "cache": cache, "store": store}


# The request fields that change what a model answers, and the values that mean "not set".
_KEY_FIELDS = (
    "messages", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
    "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "extra_body",
)
_ENCODER = msgspec.json.Encoder()
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "n": (1,), "top_p": (1,), "presence_penalty": (0,), "frequency_penalty": (0,),
    "logprobs": (False,), "parallel_tool_calls": (True,), "stop": ((),),
}


def _message(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    if isinstance(content, list) and len(content) == 1 and content[0].get("type") == "text":
        content = content[0]["text"]
    out = {"role": m["role"]}
    if content not in (None, ""):
        out["content"] = content
    for field in ("name", "tool_call_id", "refusal"):
        if m.get(field) is not None:
            out[field] = m[field]
    if m.get("tool_calls"):
        out["tool_calls"] = [_tool_call(c) for c in m["tool_calls"]]
    return out


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments: Any = msgspec.json.decode(call.get("arguments") or "{}")
    except msgspec.DecodeError:
        arguments = call.get("arguments")
    return {"id": call["id"], "name": call["name"], "arguments": arguments}


def canonical_request(request: ChatRequest) -> str:
    """The request's model-facing fields in one spelling: equal calls, equal text."""
    data = msgspec.json.decode(_ENCODER.encode(request))  # plain lists and dicts throughout
    out: dict[str, Any] = {}
    for field in _KEY_FIELDS:
        value = data.get(field)
        if value is None or value == [] or value == {} or value in _DEFAULTS.get(field, ()):
            continue
        out[field] = value
    out["messages"] = [_message(m) for m in data["messages"]]
    if out.get("tool_choice") == "auto" and out.get("tools"):
        del out["tool_choice"]  # the API's default whenever tools are given
    fmt = out.get("response_format")
    if fmt is not None:
        fmt = {k: v for k, v in fmt.items() if v is not None}
        if fmt == {"type": "text"}:
            del out["response_format"]
        else:
            out["response_format"] = fmt
    if "tools" in out:
        out["tools"] = [{k: v for k, v in t.items() if v is not None} for t in out["tools"]]
    return canonical_json(out)


def cache_key(identity: str, request: ChatRequest) -> str:
    text = f"{_KEY_VERSION}\n{identity}\n{canonical_request(request)}"
    return hashlib.sha256(text.encode()).hexdigest()


def provider_identity(config: Any) -> str:
    """What an answer depends on besides the request: the kind and model (and a simulated
    model's settings), not its name, limits or price."""
    parts: dict[str, Any] = {"kind": config.kind, "model": config.model}
    if config.simulated is not None:
        parts["simulated"] = config.simulated.model_dump(mode="json")
    return canonical_json(parts)


_ROUTE_POLICY: contextvars.ContextVar[CachePolicy | None] = contextvars.ContextVar("orchestray_route_cache", default=None)


def cacheable(request: ChatRequest, settings: CacheConfig, provider: CachePolicy | None, route: CachePolicy | None) -> bool:
    """Whether a call may be answered from (and kept in) the cache: the innermost route's policy
    first, then the provider's, then the cache's own `max_temperature`."""
    if not settings.enabled:
        return False
    limit = settings.max_temperature
    for policy in (provider, route):  # later wins
        if policy is None:
            continue
        if not policy.enabled:
            return False
        if policy.max_temperature is not None:
            limit = policy.max_temperature
    temperature = _UNSET_TEMPERATURE if request.temperature is None else request.temperature
    return temperature <= limit


class ResponseCache:
    """Completions in a store namespace, msgpack-encoded; misses and store faults counted."""

    def __init__(self, namespace: Namespace, settings: CacheConfig):
        self.settings = settings
        self.entries = namespace.typed(Completion)
        self.hits = self.misses = self.faults = 0

    async def get(self, key: str) -> Completion | None:
        try:
            found = await self.entries.get(key)
        except StoreUnavailableError as err:
            self._fault(err)
            return None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    async def put(self, key: str, completion: Completion) -> None:
        try:
            await self.entries.set(key, completion)
        except StoreUnavailableError as err:
            self._fault(err)

    def _fault(self, err: StoreUnavailableError) -> None:
        self.faults += 1
        if self.faults == 1 or self.faults % 1000 == 0:
            log.warning("response cache bypassed (%d store faults so far): %s", self.faults, err)


def as_hit(completion: Completion, provider: str, lookup_s: float) -> Completion:
    """A kept answer as this call's: cost 0, this lookup's latency, `cached: true` on its span."""
    span = completion.trace
    if span is not None:
        span = msgspec.structs.replace(span, name=provider, cost=0.0, latency_s=lookup_s, retries=0, cached=True, children=[])
    return msgspec.structs.replace(completion, provider=provider, cost=0.0, latency_s=lookup_s, trace=span)


def replay(completion: Completion) -> list[Chunk]:
    """A kept answer as a stream: each choice whole in one piece, then the final chunk."""
    chunks = []
    for choice in completion.choices():
        calls = tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(choice.tool_calls))
        if choice.content or calls or choice.refusal:
            chunks.append(Chunk(delta=choice.content, choice=choice.index, tool_calls=calls, refusal=choice.refusal))
    chunks.append(Chunk(done=True, completion=completion))
    return chunks


class CachedModel:
    """A provider's model with the cache in front; everything else (stats, latency quantiles,
    ping) passes through to the model."""

    def __init__(self, model: Any, name: str, identity: str, cache: ResponseCache, policy: CachePolicy | None):
        self.model = model
        self.name = name
        self.identity = identity
        self.cache = cache
        self.policy = policy

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["model"], attr)

    def __repr__(self) -> str:
        return f"CachedModel({self.model!r})"

    def _key(self, request: ChatRequest) -> str | None:
        if not cacheable(request, self.cache.settings, self.policy, _ROUTE_POLICY.get()):
            return None
        return cache_key(self.identity, request)

    async def complete(self, request: ChatRequest) -> Completion:
        key = self._key(request)
        if key is None:
            return await self.model.complete(request)
        started = time.perf_counter()
        kept = await self.cache.get(key)
        if kept is not None:
            return as_hit(kept, self.name, time.perf_counter() - started)
        completion = await self.model.complete(request)
        await self.cache.put(key, completion)
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        key = self._key(request)
        if key is not None:
            started = time.perf_counter()
            kept = await self.cache.get(key)
            if kept is not None:
                for chunk in replay(as_hit(kept, self.name, time.perf_counter() - started)):
                    yield chunk
                return
        async for chunk in self.model.stream(request):
            if key is not None and chunk.done and chunk.completion is not None:
                await self.cache.put(key, chunk.completion)
            yield chunk


class RouteCacheScope:
    """A route whose config says how its calls use the cache: the policy holds while it runs
    (a context variable, so the tasks the route starts inherit it)."""

    def __init__(self, model: Any, policy: CachePolicy):
        self.model = model
        self.policy = policy

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["model"], attr)

    async def complete(self, request: ChatRequest) -> Completion:
        token = _ROUTE_POLICY.set(self.policy)
        try:
            return await self.model.complete(request)
        finally:
            _ROUTE_POLICY.reset(token)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        # An async generator runs in its consumer's context: set the policy around each step only.
        stream = self.model.stream(request)
        try:
            while True:
                token = _ROUTE_POLICY.set(self.policy)
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _ROUTE_POLICY.reset(token)
                yield chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
