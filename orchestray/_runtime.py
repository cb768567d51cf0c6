"""Where a client's providers run: the one seam between the Python API and Ray (like httpx's transport).

A runtime turns a config into a `Registry`. `RayRuntime` joins (or starts) Ray and hands out the
cluster's shared, named provider actors, so a provider's limit holds whoever calls it; routes run
in the caller's process against them, as in a Serve replica. `LocalRuntime` builds each provider
in this process with no Ray at all (tests, notebooks, small scripts); its backends, models and
clock can be replaced, which is what `orchestray.testing` plugs into.
"""

from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable, Mapping, Protocol

from orchestray.config import Config, ProviderConfig
from orchestray.coordinators import Model
from orchestray.provider import Provider
from orchestray.registry import Registry
from orchestray.store import open_store

__all__ = ["Runtime", "RayRuntime", "LocalRuntime", "runtime_for"]


class Runtime(Protocol):
    name: str

    def start(self) -> None:
        """Blocking set-up that must happen in the caller's thread (joining Ray)."""

    async def registry(self, config: Config) -> Registry: ...

    async def close(self) -> None: ...


class RayRuntime:
    """Providers are the cluster's named detached actors; `address` or RAY_ADDRESS, else a new
    local Ray instance. Inside a Ray task or actor, the Ray it runs in."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address

    def __reduce__(self):
        return (RayRuntime, (self.address,))

    def start(self) -> None:
        from orchestray.cluster import connect

        connect(self.address)

    async def registry(self, config: Config) -> Registry:
        from orchestray.actors.directory import ModelDirectory

        self.start()

        def find_providers() -> Registry:
            # Finding (and reconfiguring) the actors blocks on Ray calls: off the event loop, so
            # this works inside an async actor too. Routes then run here, as a Serve replica's do.
            directory = ModelDirectory(config, routes_in_process=True)
            directory.providers()
            return directory

        return await asyncio.to_thread(find_providers)

    async def close(self) -> None:
        return None  # the provider actors are shared: they stay for every other caller


class LocalRuntime:
    """Every provider in this process: its limiter, retries and backend, without Ray.

    `backends` replaces the backend of the named providers (an `orchestray.testing.
    ScriptedBackend`, say), keeping their limits and retries; `models` replaces named providers
    outright (a `ScriptedModel`); `clock` and `sleep` drive every provider (a `FakeClock`).
    Limits hold within this process only.
    """

    name = "local"

    def __init__(
        self,
        *,
        backends: Mapping[str, object] | None = None,
        models: Mapping[str, Model] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.backends = dict(backends or {})
        self.models = dict(models or {})
        self.clock = clock
        self.sleep = sleep if sleep is not None else getattr(clock, "sleep", None)
        self._made: list[Provider] = []

    def __reduce__(self):
        return (_local_runtime, (self.backends, self.models, self.clock, self.sleep))

    def start(self) -> None:
        return None

    async def registry(self, config: Config) -> Registry:
        return Registry(config, self._provider, store=lambda: open_store(config.store, cluster=False, clock=self.clock))

    def _provider(self, config: ProviderConfig) -> Model:
        if config.name in self.models:
            return self.models[config.name]
        backend = self.backends.get(config.name)
        if backend is None:
            from orchestray.backends import make_backend

            key = os.environ.get(config.api_key_env) if config.api_key_env else None
            backend = make_backend(config, key)
        timing = {k: v for k, v in (("clock", self.clock), ("sleep", self.sleep)) if v is not None}
        provider = Provider(config, backend, **timing)
        self._made.append(provider)
        return provider

    async def close(self) -> None:
        made, self._made = self._made, []
        await asyncio.gather(*(p.close() for p in made), return_exceptions=True)


def _local_runtime(backends, models, clock, sleep) -> LocalRuntime:
    return LocalRuntime(backends=backends, models=models, clock=clock, sleep=sleep)


def runtime_for(runtime: str | Runtime, address: str | None) -> Runtime:
    if runtime == "ray":
        return RayRuntime(address)
    if runtime == "local":
        if address is not None:
            raise ValueError("address= is for runtime='ray'; the local runtime runs in this process")
        return LocalRuntime()
    if isinstance(runtime, str):
        raise ValueError(f"runtime must be 'ray' or 'local' (or a runtime object), not {runtime!r}")
    return runtime
