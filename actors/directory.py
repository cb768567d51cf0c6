"""Names to models: every provider and route of a config as something with `complete`/`stream`."""

from __future__ import annotations

from orchestray.config import Config
from orchestray.errors import UnknownModelError

from orchestray.actors.provider import ModelHandle, provider_handle

__all__ = ["ModelDirectory"]


class ModelDirectory:
    """Finds or creates the provider actors and route (coordinator) actors on first use.

    With `routes_in_process`, routes run as coordinators in this process (a Serve replica
    hosting them) instead of in their own actors; providers are always the shared actors.
    """

    def __init__(self, config: Config, ensure_config: bool = True, routes_in_process: bool = False):
        self.config = config
        self.ensure_config = ensure_config
        self.routes_in_process = routes_in_process
        self._handles: dict[str, ModelHandle] = {}

    def knows(self, name: str) -> bool:
        return self.config.has_model(name)

    def get(self, name: str) -> ModelHandle:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = self._make(name)
        return handle

    def _make(self, name: str) -> ModelHandle:
        if name in self.config.routes and self.routes_in_process:
            from orchestray.coordinators import build_coordinator

            return build_coordinator(name, self.config, self.get)
        if name in self.config.routes:
            from orchestray.actors.coordinators import route_handle

            return route_handle(name, self.config, self.ensure_config)
        if not self.config.has_model(name):
            raise UnknownModelError(name, self.config.model_names())
        return provider_handle(self.config.provider(name), self.ensure_config)
