"""The provider actor: one per configured provider, named after it, shared by every caller.

Because the actor is found by name in the `orchestray` namespace, every batch worker and every
Serve replica in the cluster goes through the same rate limiter for a given provider.
"""

from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator

import ray
from ray.exceptions import RayTaskError

from orchestray.backends import make_backend
from orchestray.config import ProviderConfig
from orchestray.errors import ProviderUnavailableError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.provider import Provider, ProviderStats

from orchestray.actors.multiplex import ACTOR_GONE, LOST_RETRY_AFTER_S, Channel, Multiplexed, unwrap

__all__ = ["ProviderActor", "ModelHandle", "ProviderHandle", "Secret", "NAMESPACE", "provider_handle"]

NAMESPACE = "orchestray"
# Waiting callers occupy actor concurrency slots while they queue at the limiter.
_MAX_CONCURRENCY = 10_000


class Secret:
    """An API key on its way to an actor; never printed, never in a repr or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


def _api_key(config: ProviderConfig, secret: Secret | None) -> str | None:
    # The actor's own environment first (keys set on the cluster), then what the creator sent.
    if config.api_key_env and os.environ.get(config.api_key_env):
        return os.environ[config.api_key_env]
    return secret.reveal() if secret is not None else None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=_MAX_CONCURRENCY)
class ProviderActor(Multiplexed):
    """A thin shell around `orchestray.provider.Provider`."""

    def __init__(self, config_json: str, secret: Secret | None = None):
        from orchestray.actors.metrics import RayProviderMetrics

        self._metrics = RayProviderMetrics()
        self._provider = self._build(config_json, secret)

    def _build(self, config_json: str, secret: Secret | None) -> Provider:
        config = ProviderConfig.model_validate_json(config_json)
        return Provider(config, make_backend(config, _api_key(config, secret)), metrics=self._metrics)

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._provider.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self._provider.stream(request):
            yield chunk

    def stats(self) -> ProviderStats:
        return self._provider.snapshot()

    def latency_quantile(self, q: float, min_samples: int = 1) -> float | None:
        return self._provider.latencies.quantile(q, min_samples)

    def fingerprint(self) -> str:
        return self._provider.config.fingerprint()

    async def reconfigure(self, config_json: str, secret: Secret | None = None) -> None:
        old = self._provider
        self._provider = self._build(config_json, secret)
        await old.close()

    def ping(self) -> str:
        return self._provider.name


class ModelHandle:
    """What callers hold: `complete` and `stream` on a provider actor (or a batch worker), with Ray's
    errors unwrapped into orchestray's.

    Picklable, so coordinators and Serve replicas receive it as an argument. A call made while
    others to the same actor are in flight shares Ray calls with them (`multiplex.Channel`).
    Cancelling the awaiting task cancels the call in the actor, which aborts its HTTP request and
    frees its concurrency slot and unused token budget. Calls caught in an actor crash or a node
    loss are sent again to the restarted actor within `multiplex.RESTART_WINDOW_S`, then fail as
    ProviderUnavailableError.
    """

    def __init__(self, name: str, actor):
        self.name = name
        self.actor = actor
        self._channel: Channel | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __getstate__(self) -> dict:
        return {"name": self.name, "actor": self.actor}  # a channel belongs to one process's loop

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"], state["actor"])

    def channel(self) -> Channel:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._channel.loop is not loop:
            self._channel = Channel(self.actor, self.name, loop)
        return self._channel

    async def complete(self, request: ChatRequest) -> Completion:
        channel = self.channel()
        if channel.busy:
            return await channel.call(request)
        return await channel.call_direct(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        refs = self.actor.stream.remote(request)
        try:
            async for ref in refs:
                yield await ref
        except RayTaskError as err:
            raise unwrap(err) from None
        except ACTOR_GONE as err:
            raise ProviderUnavailableError(
                f"provider actor stopped mid-stream ({type(err).__name__})", provider=self.name,
                retry_after=LOST_RETRY_AFTER_S,
            ) from None
        except (asyncio.CancelledError, GeneratorExit):
            ray.cancel(refs)
            raise


class ProviderHandle(ModelHandle):
    """A provider actor's handle: also its running stats and latency percentiles."""

    async def stats(self) -> ProviderStats:
        return await self.actor.stats.remote()

    async def latency_quantile(self, q: float, min_samples: int = 1) -> float | None:
        return await self.actor.latency_quantile.remote(q, min_samples)


def provider_handle(config: ProviderConfig, ensure_config: bool = True) -> ProviderHandle:
    """Find the provider's actor in the cluster, or create it; reconfigure it if its config changed.

    Detached: the actor outlives the job or replica that made it, so every later caller shares
    its limiter. Needs `ray.init` first. Inside an actor's event loop pass `ensure_config=False`
    (no blocking call): whoever built that actor already ensured the providers' configs.
    """
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    secret = Secret(key) if key else None
    actor = ProviderActor.options(
        name=config.name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(config.model_dump_json(), secret)
    if ensure_config and ray.get(actor.fingerprint.remote()) != config.fingerprint():
        ray.get(actor.reconfigure.remote(config.model_dump_json(), secret))
    return ProviderHandle(config.name, actor)
