"""Ray Serve entry points: `serve run serve_app:app` (embedded default config) or
`serve run serve_app:build_app config=path.yaml`."""

from orchestray.serving import build_app

app = build_app({})

__all__ = ["app", "build_app"]
