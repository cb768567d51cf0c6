"""Integration tests share one Ray cluster (a head and two worker nodes on this machine) for the
whole session, and start emulators on loopback."""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import pytest

from orchestray._haproxy import set_haproxy_defaults
from orchestray.config import ProviderConfig
from orchestray.emulator import EmulatorOptions, run_in_thread


# The gateway tests run on the HAProxy ingress with the settings `serve run serve_app:app` gives it
# (RAY_SERVE_ENABLE_HA_PROXY=0 runs them on Serve's Python proxy). Set before any node starts: the
# Serve controller reads them from the environment its node inherited.
set_haproxy_defaults()
# A deleted gateway replica drains 30 s by default, so that an outside load balancer can stop
# sending to it first; the tests delete applications nobody calls any more, and every module's
# teardown waited those 30 s. Production keeps Ray's default.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")

# Worker nodes carry a `worker` resource, so a test can place work on "some worker node".
WORKER_NODE = {"num_cpus": 1, "resources": {"worker": 1}}


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node and two worker nodes on this machine (`ray.cluster_utils.Cluster`), for the
    whole session: every integration test runs multi-node, and test_cluster.py adds and removes
    workers on it (replacing each one it removes)."""
    import ray
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    from orchestray.cluster import NAMESPACE

    with pytest.MonkeyPatch.context() as patch:
        # Cluster records its address in /tmp/ray/ray_current_cluster, where a plain `ray.init()`
        # anywhere on this machine would find it and join the test cluster; the tests connect by
        # address, so leave that file (and whoever else's address is in it) alone.
        patch.setattr(ray._private.utils, "write_ray_address", lambda *args, **kwargs: None)
        patch.setattr(ray._common.utils, "reset_ray_address", lambda *args, **kwargs: None)
        # Nodes are started directly, not through ray.init(), so token authentication stays off
        # unless RAY_AUTH_MODE=token is set; the driver below connects by explicit address, which
        # never switches it on by itself.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        try:
            for _ in range(2):
                cluster.add_node(**WORKER_NODE)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace=NAMESPACE, logging_level="WARNING")
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="session")
def add_worker_node(ray_cluster):
    """Adds a worker node like the first two, once the cluster has it registered."""

    def add():
        node = ray_cluster.add_node(**WORKER_NODE)
        ray_cluster.wait_for_nodes(timeout=60)
        return node

    return add


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    """The `ray` module, connected to the session's cluster."""
    import ray

    return ray


@pytest.fixture
def emulator():
    with run_in_thread(EmulatorOptions()) as emu:
        yield emu


@pytest.fixture
def closing():
    """`closing(client)` returns the client and closes it at the test's end, pass or fail: an SDK
    client or session left to the garbage collector warns (an error here) in some later test."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context


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
        # A route (balance over a provider's keys, say) runs in this process: it has no actor.
        actor = getattr(handle, "actor", None)
        if actor is not None:
            ray_session.kill(actor, no_restart=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve() -> str:
    """Serve's ingress on a free loopback port; returns its base URL. One ingress, on the head:
    the session's three nodes share this machine, and an HAProxy on each would bind the same
    ports (its stats and metrics ports are fixed)."""
    from ray import serve

    port = _free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def serve_base_url(ray_session):
    """Serve's one ingress (see `_start_serve`) for the whole session; yields its base URL. Each
    module runs applications under names of its own and deletes them when done: starting and
    shutting Serve down for every module cost about 30 s each time."""
    from ray import serve

    yield _start_serve()
    serve.shutdown()


@pytest.fixture(scope="session")
def deploy(serve_base_url):
    """`deploy(app, name, route_prefix="/", ready=("/readyz",))` runs a Serve application on the
    session's ingress and returns its base URL once each `ready` path under it answers 200."""
    import requests
    from ray import serve

    def answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def run(app, name: str, route_prefix: str = "/", ready: tuple[str, ...] = ("/readyz",)) -> str:
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
        base = serve_base_url + route_prefix.rstrip("/")
        deadline = time.monotonic() + 120
        while not all(answers(base + path) for path in ready):
            assert time.monotonic() < deadline, f"the Serve application {name} did not become ready"
            time.sleep(0.5)
        return base

    return run
