"""The Python API on the Ray runtime: the same bodies as the local runtime's, then Ray tasks and actors."""

from __future__ import annotations

import uuid

import pytest

import orchestray
from orchestray import AsyncClient

from client_cases import *  # noqa: F403 - the shared bodies, run here on runtime="ray"
from client_cases import api_config

pytestmark = pytest.mark.integration


@pytest.fixture
def names(ray_session):
    """Fresh provider names (the actors are detached and shared), killed after the test."""
    tag = uuid.uuid4().hex[:6]
    made = {role: f"api-{role}-{tag}" for role in ("small", "large", "flaky")}
    yield made
    for name in made.values():
        try:
            ray_session.kill(ray_session.get_actor(name, namespace="orchestray"), no_restart=True)
        except ValueError:
            pass


@pytest.fixture
async def client(names):
    async with AsyncClient(api_config(names), runtime="ray") as client:
        yield client


def test_clients_in_tasks_and_actors_share_the_one_provider_actor(ray_session, names):
    ray = ray_session
    config = api_config(names)
    large = names["large"]

    @ray.remote(num_cpus=0)
    def ask(client: orchestray.Client, question: str) -> str:
        return client.complete(large, question).content

    @ray.remote(num_cpus=0)
    class Asker:
        def __init__(self, client: AsyncClient):
            self.client = client

        async def ask(self, question: str) -> str:
            return (await self.client.complete(large, question)).content

        async def vote(self, question: str) -> float:
            return (await self.client.ensemble([large], question, samples=3)).confidence

    blocking = orchestray.Client(config, runtime="ray")
    try:
        from_tasks = ray.get([ask.remote(blocking, f"What is {i} + 1?") for i in range(4)])
        asker = Asker.remote(AsyncClient(config, runtime="ray"))
        from_actor = ray.get([asker.ask.remote(f"What is {i} + 2?") for i in range(4)])
        assert ray.get(asker.vote.remote("What is 3 + 3?")) == 1.0
        here = blocking.complete(large, "What is 9 + 1?").content
    finally:
        blocking.close()
    assert [a.rsplit(" ", 1)[-1] for a in from_tasks] == ["1", "2", "3", "4"]
    assert [a.rsplit(" ", 1)[-1] for a in from_actor] == ["2", "3", "4", "5"]
    assert here.endswith("Answer: 10")
    # Every caller went through the same named actor, so one limiter saw all 4 + 4 + 3 + 1 calls.
    stats = ray.get(ray.get_actor(large, namespace="orchestray").stats.remote())
    assert stats.requests == 12 and stats.succeeded == 12
