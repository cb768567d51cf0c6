"""The Ray Serve application (`serve run serve_app:app`): see `orchestray.serving._app`."""

from orchestray.serving._app import Gateway, KeyQuota, api, app_for, build_app, open_gateway_refusal

__all__ = ["build_app", "app_for", "Gateway", "KeyQuota", "api", "open_gateway_refusal"]
