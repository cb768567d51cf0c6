"""The one registry: a config's names (providers, routes, ad-hoc patterns) to models to call.

A provider name gives whatever the runtime makes of it (the shared Ray actor's handle, or a
`Provider` in this process); a route name gives its coordinator, run in this process against
those providers (the one way routes are hosted: the Serve gateway, the batch workers, the
Python API and Ray Data all run them where the request is). Knows nothing of Ray, so the local runtime and
the unit tests use it as it is; `orchestray.actors.directory.ModelDirectory` is this registry
with Ray's provider actors plugged in.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Mapping

from pydantic import ValidationError

from orchestray.cache import NAMESPACE as CACHE_NAMESPACE
from orchestray.cache import CachedModel, ResponseCache, RouteCacheScope, provider_identity
from orchestray.config import Config, ProviderConfig, parse_config
from orchestray.coordinators import Coordinator, Model, build_coordinator
from orchestray.errors import ConfigError, RequestError, UnknownModelError
from orchestray.layers import around
from orchestray.patterns import PATTERNS, route_targets
from orchestray.store import Store, open_store

__all__ = ["Registry", "ADHOC"]

# The name an ad-hoc pattern is validated and traced under (the HTTP door's too).
ADHOC = "adhoc:request"
# Ad-hoc patterns kept built, by their options: a loop calling one pattern validates it once.
_ADHOC_KEPT = 256


class Registry:
    """`get(name)` makes each model on first use and keeps it.

    `provider(config)` makes the model behind a provider; routes run here as coordinators
    calling them. `store()` opens
    the key-value store (default: this process's memory); with a `cache:` section each provider
    is handed out behind the response cache over it.
    """

    def __init__(
        self,
        config: Config,
        provider: Callable[[ProviderConfig], Model],
        store: Callable[[], Store] | None = None,
        spend_ledger: Callable[[], Any] | None = None,
    ):
        self.config = config
        self._provider = provider
        self._open_store = store or (lambda: open_store(config.store, cluster=False))
        self._store: Store | None = None
        self._open_ledger = spend_ledger
        self._ledger: Any = None
        self._cache: ResponseCache | None = None
        self._models: dict[str, Model] = {}
        self.telemetry: Any = None  # a `Telemetry` to export through instead of the config's (tests)
        self._adhoc: dict[str, Coordinator] = {}

    def knows(self, name: str) -> bool:
        return self.config.has_model(name)

    def names(self) -> list[str]:
        return self.config.model_names()

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = self._make(name)
        return model

    def _make(self, name: str) -> Model:
        # Guardrails, spend caps and telemetry around whatever the name gives (orchestray.layers).
        return around(self, name, self._bare(name))

    def _bare(self, name: str) -> Model:
        if name in self.config.routes:
            route = build_coordinator(name, self.config, self.get)
            policy = self.config.routes[name].cache
            return RouteCacheScope(route, policy) if policy is not None and self.config.cache else route
        if not self.config.has_model(name):
            raise UnknownModelError(name, self.config.model_names())
        provider = self.config.provider(name)
        model = self._provider(provider)
        cache = self.response_cache()
        if cache is None:
            return model
        # The one hook of the response cache: every door and pattern gets its providers here.
        return CachedModel(model, name, provider_identity(provider), cache, provider.cache)

    def store(self) -> Store:
        """The cluster's key-value store (`orchestray.store`), opened on first use."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    async def close(self) -> None:
        store, self._store, self._cache = self._store, None, None
        if store is not None:
            await store.close()
        if self.config.telemetry is not None:
            # The exporter sends on a timer: what this process still holds goes now, not never.
            from orchestray.telemetry import flush

            await asyncio.to_thread(flush)

    def response_cache(self) -> ResponseCache | None:
        """The response cache when the config has one (`cache:`), over `store()`."""
        settings = self.config.cache
        if settings is None or not settings.enabled:
            return None
        if self._cache is None:
            namespace = self.store().namespace(CACHE_NAMESPACE, max_entries=settings.max_entries, ttl_s=settings.ttl_s)
            self._cache = ResponseCache(namespace, settings)
        return self._cache

    def spend_ledger(self) -> Any:
        """Where spend caps are counted (`orchestray.budgets`): this process, unless the runtime
        gave the cluster's ledger."""
        if self._ledger is None:
            from orchestray.budgets import LocalLedger

            self._ledger = self._open_ledger() if self._open_ledger is not None else LocalLedger()
        return self._ledger

    def made(self) -> dict[str, Model]:
        """The models made so far, by name."""
        return dict(self._models)

    def providers(self) -> dict[str, Model]:
        """Every provider's model, made now (so nothing is made later on an event loop)."""
        return {p.name: self.get(p.name) for p in self.config.providers}

    def _check_members(self, route: Mapping[str, Any]) -> None:
        """A member that names nothing is an unknown model (404 at the HTTP door), not a bad option."""
        pattern = PATTERNS.get(route.get("pattern"))
        try:
            typed = pattern.route.model_validate(route) if pattern else None
        except ValidationError:
            return  # the whole config's validation words it, below
        for field, target in route_targets(typed) if typed else ():
            if not self.knows(target):
                raise UnknownModelError(target, self.names(), where=field)

    def adhoc(self, route: Mapping[str, Any]) -> Coordinator:
        """The coordinator of a pattern given as a route of the config would be (`{"pattern":
        "race", "providers": [...], ...}`), validated by the same models: a bad option is a
        `RequestError` worded as the config's error for that field."""
        key = json.dumps(route, sort_keys=True, default=str)
        coordinator = self._adhoc.get(key)
        if coordinator is not None:
            return coordinator
        self._check_members(route)
        data = self.config.model_dump(mode="json")
        data["routes"] = {**data["routes"], ADHOC: dict(route)}
        try:
            config = parse_config(data, "request")
            coordinator = around(self, ADHOC, build_coordinator(ADHOC, config, self.get), route=True)
        except ConfigError as err:
            raise RequestError(str(err).replace(f"request: routes.{ADHOC}.", "").replace(f"request: routes.{ADHOC}: ", "")) from None
        if len(self._adhoc) >= _ADHOC_KEPT:
            self._adhoc.pop(next(iter(self._adhoc)))
        self._adhoc[key] = coordinator
        return coordinator
