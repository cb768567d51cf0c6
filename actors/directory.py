"""Names to callables: every provider and route of a config as something with `complete`/`stream`."""

from __future__ import annotations

from orchestray.config import Config
from orchestray.errors import UnknownModelError

from orchestray.actors.provider import ProviderHandle, provider_handle

__all__ = ["ModelDirectory"]


class ModelDirectory:
    """Finds or creates the provider actors (and coordinator actors for routes) on first use."""

    def __init__(self, config: Config):
        self.config = config
        self._handles: dict[str, object] = {}

    def knows(self, name: str) -> bool:
        return self.config.has_model(name)

    def get(self, name: str):
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = self._make(name)
        return handle

    def _make(self, name: str):
        if name in self.config.routes:
            from orchestray.actors.coordinators import route_handle

            return route_handle(name, self.config, self)
        if not self.config.has_model(name):
            raise UnknownModelError(name, self.config.model_names())
        return provider_handle(self.config.provider(name))

    def providers(self) -> dict[str, ProviderHandle]:
        return {p.name: self.get(p.name) for p in self.config.providers}
