"""The YAML configuration: providers, routes and deployment settings, validated by pydantic.

Errors name the file and the field (`orchestray.yaml: providers[1].limits.rpm: ...`). With no
file, the embedded default applies: simulated providers only, so everything runs with no key.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from orchestray.errors import ConfigError
from orchestray.patterns import PATTERNS, FieldError as _FieldError, Route, Strict as _Strict, route_targets
from orchestray.policies.ratelimit import Limits
from orchestray.cache import CacheConfig, CachePolicy, store_from_cache
from orchestray.responses_state import ResponsesConfig
from orchestray.store import StoreConfig
from orchestray.budgets import SpendCap
from orchestray.guardrails import GuardrailsConfig
from orchestray.telemetry import TelemetryConfig

__all__ = [
    "Config",
    "ProviderConfig",
    "LimitsConfig",
    "PriceConfig",
    "SimulatedConfig",
    "load_config",
    "default_config",
    "parse_config",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class LimitsConfig(_Strict):
    rpm: float | None = Field(default=None, gt=0, description="requests per minute")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute")
    max_concurrency: int | None = Field(default=None, gt=0)
    burst_s: float = Field(default=0.1, ge=0, le=60, description="how far behind its schedule the pace may catch up at once")
    headroom: float = Field(default=0.995, gt=0, le=1, description="fraction of the limit paced at")
    window_s: float = Field(default=1.0, gt=0, le=3600, description="the span the provider enforces over")

    def to_limits(self) -> Limits:
        return Limits(
            rpm=self.rpm,
            tpm=self.tpm,
            max_concurrency=self.max_concurrency,
            burst_s=self.burst_s,
            headroom=self.headroom,
            window_s=self.window_s,
        )


class PriceConfig(_Strict):
    input_per_1k: float = Field(default=0.0, ge=0)
    output_per_1k: float = Field(default=0.0, ge=0)
    batch_discount: float = Field(default=0.5, ge=0, le=1, description="the batch APIs' price, as a share of the live one")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_1k + output_tokens * self.output_per_1k) / 1000.0

    def batch_cost(self, input_tokens: int, output_tokens: int) -> float:
        return self.cost(input_tokens, output_tokens) * self.batch_discount


class ProviderBatchConfig(_Strict):
    """The provider's batch API (`orchestray batch --provider-batch`): caps per batch (None: the
    provider's own, OpenAI 50,000 requests / 200 MB, Anthropic 100,000 / 256 MB), the requests
    that may wait in its queue at once, and how often to look at a batch."""

    max_requests: int | None = Field(default=None, gt=0)
    max_bytes: int | None = Field(default=None, gt=0)
    queue_requests: int | None = Field(default=None, gt=0)
    poll_s: float = Field(default=30.0, gt=0)


class SimulatedConfig(_Strict):
    accuracy: float = Field(default=0.8, ge=0, le=1)
    latency_ms: float = Field(default=200.0, ge=0)
    latency_sigma: float = Field(default=0.5, ge=0)
    ms_per_output_token: float = Field(default=0.0, ge=0)
    seed: int = 0


class CircuitConfig(_Strict):
    """Open when `failure_rate` of the calls ended in the last `window_s` failed, once at least
    `min_calls` ended there; stay open `cooldown_s`, then probe."""

    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=20, gt=0)
    window_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=10.0, ge=0)


_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class ProviderConfig(_Strict):
    name: str = Field(pattern=_NAME)
    kind: Literal["openai", "anthropic", "simulated"]
    model: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    limits: LimitsConfig = LimitsConfig()
    price: PriceConfig = PriceConfig()
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    circuit: CircuitConfig = CircuitConfig()
    simulated: SimulatedConfig | None = None
    # kind: anthropic. Anthropic's newest models answer 400 "`temperature` is deprecated for
    # this model"; true retries such a call once without temperature/top_p/top_k and leaves them
    # out for that model from then on (the trace's `dropped` says so); false passes the 400 on.
    drop_deprecated_sampling: bool = True
    cache: CachePolicy | None = None  # this provider's say over the response cache (orchestray.cache)
    batch: ProviderBatchConfig = ProviderBatchConfig()  # its batch API (orchestray.provider_batch)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if data.get("simulated") is not None and kind != "simulated":
            raise ValueError("`simulated` settings are only for kind: simulated")
        if not data.get("model") and isinstance(data.get("name"), str):
            data["model"] = data["name"]
        # OpenAI-compatible servers (vLLM, Ollama) often need no key; the hosted APIs always do.
        if data.get("api_key_env") is None and kind in _DEFAULT_KEY_ENV and data.get("base_url") is None:
            data["api_key_env"] = _DEFAULT_KEY_ENV[kind]
        if kind == "simulated" and data.get("simulated") is None:
            data["simulated"] = {}
        return data

    def fingerprint(self) -> str:
        """Changes whenever anything about the provider changes (used to reconfigure actors)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class ServeConfig(_Strict):
    """Ray Serve deployment settings for the HTTP application."""

    num_replicas: int | Literal["auto"] = 1
    replica_num_cpus: float = Field(default=0.25, ge=0, description="CPUs reserved per replica")
    max_ongoing_requests: int = Field(default=256, gt=0)
    # While no replica can take a request (a lone replica lost and not yet replaced), Serve's proxy
    # holds it until one can; past this many held, it answers 503 with `retry-after`.
    max_queued_requests: int = Field(default=256, gt=0)
    autoscaling_config: dict[str, Any] | None = None
    api_keys_env: str | None = "ORCHESTRAY_API_KEYS"
    requests_per_minute_per_key: float | None = Field(default=None, gt=0)
    spend_per_hour_per_key: float | None = Field(default=None, gt=0)
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    # Without gateway keys, anyone who reaches the gateway spends the providers' keys: a config with
    # a real provider must name keys or say on purpose that it serves open.
    allow_unauthenticated: bool = False


class BatchConfig(_Strict):
    max_in_flight: int = Field(default=512, gt=0, description="requests in flight at once")
    workers: int | None = Field(default=None, gt=0, description="batch workers for routes (default: 2 per node)")


# What one deployment of a provider may set for itself; the rest it shares with its siblings.
_DEPLOYMENT_FIELDS = {"base_url", "api_key_env", "model", "limits", "price", "timeout_s", "max_retries", "circuit"}


def _deployments(provider: dict, index: int) -> list[dict] | None:
    """The member providers of one listing several keys or deployments; None for a single one.

    `api_key_env: [A, B]` or `base_url: [u1, u2]` (lists of one length), or `deployments:` with
    per-member settings. Members are named `NAME:1`, `NAME:2`, ... and keep the model's name.
    """
    where = f"providers[{index}]"
    listed = [f for f in ("api_key_env", "base_url") if isinstance(provider.get(f), list)]
    deployments = provider.get("deployments")
    if deployments is None and not listed:
        return None
    if deployments is not None:
        if listed:
            raise _FieldError(f"{where}.deployments", f"give deployments or a list of {listed[0]}, not both")
        if not isinstance(deployments, list) or not deployments:
            raise _FieldError(f"{where}.deployments", "must be a non-empty list of mappings")
        specs = deployments
    else:
        lengths = {len(provider[f]) for f in listed}
        if len(lengths) > 1:
            raise _FieldError(f"{where}.base_url", "the api_key_env and base_url lists must be the same length")
        count = lengths.pop()
        if count == 0:
            raise _FieldError(f"{where}.{listed[0]}", "must not be an empty list")
        specs = [{f: provider[f][j] for f in listed} for j in range(count)]
    shared = {k: v for k, v in provider.items() if k != "deployments" and k not in listed}
    name = provider.get("name")
    members = []
    for j, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise _FieldError(f"{where}.deployments[{j}]", "must be a mapping")
        unknown = set(spec) - _DEPLOYMENT_FIELDS
        if unknown:
            raise _FieldError(
                f"{where}.deployments[{j}]",
                f"unknown field(s) {', '.join(sorted(unknown))}; a deployment sets {', '.join(sorted(_DEPLOYMENT_FIELDS))}",
            )
        member = {**shared, **spec, "name": f"{name}:{j + 1}"}
        if isinstance(shared.get("limits"), dict) and isinstance(spec.get("limits"), dict):
            member["limits"] = {**shared["limits"], **spec["limits"]}
        member.setdefault("model", shared.get("model") or name)
        members.append(member)
    return members


class Config(_Strict):
    providers: list[ProviderConfig] = Field(min_length=1)
    routes: dict[str, Route] = {}
    serve: ServeConfig = ServeConfig()
    batch: BatchConfig = BatchConfig()
    store: StoreConfig = StoreConfig()  # the cluster-wide key-value store (orchestray.store)
    cache: CacheConfig | None = None  # the response cache (orchestray.cache); no section, no cache
    guardrails: GuardrailsConfig = GuardrailsConfig()  # orchestray.guardrails
    spend_caps: dict[str, SpendCap] = {}  # provider or route name -> per_hour / per_day (orchestray.budgets)
    telemetry: TelemetryConfig | None = None  # OTLP export (orchestray.telemetry); no section, no export
    responses: ResponsesConfig = ResponsesConfig()  # stored Responses (orchestray.responses_state)

    @model_validator(mode="before")
    @classmethod
    def _cache_store(cls, data: Any) -> Any:
        try:
            return store_from_cache(data)
        except ValueError as err:
            raise _FieldError("cache", str(err)) from None

    @model_validator(mode="before")
    @classmethod
    def _expand_deployments(cls, data: Any) -> Any:
        """A provider with several keys or deployments becomes one provider each (its own
        limits, circuit and stats) and a `balance` route of its name over them."""
        if not isinstance(data, dict) or not isinstance(data.get("providers"), list):
            return data
        providers, routes = [], dict(data.get("routes") or {})
        for i, provider in enumerate(data["providers"]):
            members = _deployments(provider, i) if isinstance(provider, dict) else None
            if members is None:
                providers.append(provider)
                continue
            name = provider.get("name")
            if name in routes:
                raise _FieldError(f"routes.{name}", f"providers[{i}] lists several deployments, so {name!r} is their balance route")
            providers.extend(members)
            routes[name] = {
                "pattern": "balance",
                "providers": [m["name"] for m in members],
                "description": f"{len(members)} deployments of {name}",
            }
        return {**data, "providers": providers, "routes": routes}

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in routes:
            if not re.match(_NAME, name):
                raise ValueError(f"route name {name!r} must be letters, digits and ._:/-")
        return routes

    @model_validator(mode="after")
    def _references(self) -> "Config":
        names = [p.name for p in self.providers]
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise _FieldError(f"providers[{i}].name", f"duplicate provider name {name!r}")
            seen.add(name)
        for route_name, route in self.routes.items():
            if route_name in seen:
                raise _FieldError(f"routes.{route_name}", "a route cannot share a provider's name")
            for field, target in route_targets(route):
                if target not in seen and target not in self.routes:
                    raise _FieldError(
                        f"routes.{route_name}.{field}",
                        f"{target!r} names no provider or route (providers: {', '.join(names)})",
                    )
            for i, rule in enumerate(getattr(route, "rules", ())):
                if rule.max_cost is not None and rule.to not in seen:
                    raise _FieldError(f"routes.{route_name}.rules[{i}].max_cost",
                                      f"needs the price of {rule.to!r}, and a route has none: send to a provider")
        for route_name in self.routes:
            self._check_cycle(route_name, [])
        extra = self.guardrails.references() + [(f"spend_caps.{n}", n) for n in self.spend_caps]
        for field, target in extra:
            if target not in seen and target not in self.routes:
                raise _FieldError(field, f"{target!r} names no provider or route (providers: {', '.join(names)})")
        for field, missing in self.guardrails.unknown_sets():
            raise _FieldError(field, f"{missing!r} names no guardrail set (sets: {', '.join(self.guardrails.sets) or 'none'})")
        return self

    def _check_cycle(self, name: str, path: list[str]) -> None:
        if name in path:
            raise _FieldError(f"routes.{path[0]}", f"routes call each other in a loop: {' -> '.join(path + [name])}")
        route = self.routes.get(name)
        if route is None:
            return
        for _, target in route_targets(route):
            self._check_cycle(target, path + [name])

    # Lookups used everywhere else.

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def model_names(self) -> list[str]:
        return [p.name for p in self.providers] + list(self.routes)

    def has_model(self, name: str) -> bool:
        return name in self.routes or any(p.name == name for p in self.providers)


def _format_location(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif i >= 2 and loc[i - 2] == "routes" and item in PATTERNS:
            continue  # the discriminator's tag (routes.NAME.race) adds nothing for the reader
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def parse_config(data: Any, source: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed YAML document. `environ` given: also require real providers' keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `providers:` (got {type(data).__name__})")
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            ctx_error = (e.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _FieldError):
                # Raised by the model at `loc` (the config itself, or a route), about one of its fields.
                where = _format_location(e["loc"], data) if e["loc"] else ""
                field = ctx_error.field if not where or ctx_error.field.startswith("[") else "." + ctx_error.field
                lines.append(f"{source}: {where}{field}: {ctx_error.message}")
                continue
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown field"
            elif e["type"] == "literal_error" and e["loc"] and e["loc"][-1] == "kind":
                message = f"unknown provider kind {e.get('input')!r}; use openai, anthropic or simulated"
            elif e["type"] == "union_tag_invalid":
                given = e["input"].get("pattern") if isinstance(e.get("input"), dict) else None
                message = f"unknown pattern {given!r}; use {', '.join(PATTERNS)}"
            lines.append(f"{source}: {_format_location(e['loc'], data)}: {message}")
        raise ConfigError("\n".join(lines)) from None
    if environ is not None:
        for i, p in enumerate(config.providers):
            if p.api_key_env and not environ.get(p.api_key_env):
                raise ConfigError(
                    f"{source}: providers[{i}].api_key_env: environment variable {p.api_key_env} is not set "
                    f"(provider {p.name!r}, kind {p.kind})"
                )
    return config


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path`, or the embedded default when it is None."""
    if path is None:
        return default_config()
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise ConfigError(f"{file}: cannot read the config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from None
    return parse_config(data, str(file), environ)


def default_config() -> Config:
    text = resources.files("orchestray").joinpath("default_config.yaml").read_text()
    return parse_config(yaml.safe_load(text), "<embedded default>")
