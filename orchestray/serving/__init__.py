"""The Ray Serve application (`serve run serve_app:app`).

    _app.py       the FastAPI ingress and the Gateway deployment: routes and endpoints
    _auth.py      bearer keys, the body cap, per-key caps (policy: orchestray.policies.keycaps)
    _errors.py    a failure as an HTTP answer: one status table, one Ray-error unwrap
    _bodies.py    the pattern endpoints' bodies, derived from the pattern table
    _messages.py  the Anthropic Messages endpoint
"""

from orchestray.serving._app import Gateway, KeyQuota, api, app_for, build_app, open_gateway_refusal

__all__ = ["build_app", "app_for", "Gateway", "KeyQuota", "api", "open_gateway_refusal"]
