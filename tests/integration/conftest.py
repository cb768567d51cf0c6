"""Integration tests share one Ray instance for the whole session, and start emulators on loopback."""

from __future__ import annotations

import uuid

import pytest

from orchestray.config import ProviderConfig
from orchestray.emulator import EmulatorOptions, run_in_thread


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from orchestray.cluster import NAMESPACE

    # Works with Ray's token authentication on (the default for a new local cluster since
    # 2.59: the token is generated into ~/.ray/auth_token) or off (RAY_AUTH_MODE=disabled).
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def emulator():
    with run_in_thread(EmulatorOptions()) as emu:
        yield emu


@pytest.fixture
def provider_config(emulator):
    """A factory for providers pointed at the emulator, each with a fresh name (actors are detached)."""

    def make(kind: str = "openai", **fields) -> ProviderConfig:
        base = emulator.openai_base_url if kind == "openai" else emulator.anthropic_base_url
        name = fields.pop("name", f"{kind}-{uuid.uuid4().hex[:8]}")
        return ProviderConfig(name=name, kind=kind, model=fields.pop("model", "sim-medium"), base_url=base, **fields)

    return make


@pytest.fixture
def kill_actors(ray_session):
    """Detached provider actors outlive a test; kill those a test made."""
    made = []
    yield made.append
    for handle in made:
        ray_session.kill(handle.actor, no_restart=True)
