"""The coordinator actor: hosts one route's pattern and calls the shared provider actors."""

from __future__ import annotations

import hashlib
from typing import AsyncIterator

import ray

from orchestray.config import Config
from orchestray.coordinators import build_coordinator
from orchestray.messages import ChatRequest, Chunk, Completion

from orchestray.actors.multiplex import Multiplexed
from orchestray.actors.provider import NAMESPACE, ModelHandle

__all__ = ["CoordinatorActor", "route_handle"]

_MAX_CONCURRENCY = 10_000


def _fingerprint(config_json: str) -> str:
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=_MAX_CONCURRENCY)
class CoordinatorActor(Multiplexed):
    """A thin shell around a coordinator from `orchestray.coordinators`."""

    def __init__(self, route: str, config_json: str):
        self._build(route, config_json)

    def _build(self, route: str, config_json: str) -> None:
        from orchestray.actors.directory import ModelDirectory

        config = Config.model_validate_json(config_json)
        self._fingerprint = _fingerprint(config_json)
        directory = ModelDirectory(config, ensure_config=False)
        self._coordinator = build_coordinator(route, config, directory.get)

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._coordinator.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self._coordinator.stream(request):
            yield chunk

    def fingerprint(self) -> str:
        return self._fingerprint

    def reconfigure(self, route: str, config_json: str) -> None:
        self._build(route, config_json)


def route_handle(route: str, config: Config, ensure_config: bool = True) -> ModelHandle:
    """Find or create the actor of route `route` (named `route:NAME`), current with `config`."""
    config_json = config.model_dump_json()
    actor = CoordinatorActor.options(
        name=f"route:{route}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(route, config_json)
    if ensure_config and ray.get(actor.fingerprint.remote()) != _fingerprint(config_json):
        ray.get(actor.reconfigure.remote(route, config_json))
    return ModelHandle(route, actor)
