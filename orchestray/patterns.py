"""The pattern table: each orchestration pattern's route model and builder, in one place.

    PATTERNS["ensemble"] ── .route    EnsembleRoute: the options, as the config validates them
                         ├─ .build    the coordinator for a route of it (`route.build(...)`)
                         ├─ .members  the field the ad-hoc forms take first (providers, rules, steps)
                         ├─ .renamed  options whose name at the HTTP door differs (a chat field's)
                         └─ .sequential  whether its members answer in turn (how a trace lays them out)

Everything else derives from the table: the config's `routes:` union (`Route`), the HTTP
pattern endpoints and their bodies (`serving/_bodies.py`), the Python API's ad-hoc methods
(`AsyncClient.race`, ...), and the exported traces' layout (`telemetry.py`). A new pattern is one route model with a `build` and one row here.

Routing rules and pipeline steps are typed models too, so a bad one fails at `load_config`
with its path (`routes.auto.rules[1].regex: ...`, `routes.p.steps[2].when: ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestray.cache import CachePolicy
from orchestray.coordinators.balance import BalanceCoordinator
from orchestray.coordinators.cascade import CascadeCoordinator
from orchestray.coordinators.ensemble import EnsembleCoordinator
from orchestray.coordinators.fallback import FallbackCoordinator
from orchestray.coordinators.pipeline import PipelineCoordinator, PipelineStep, check_steps
from orchestray.coordinators.race import RaceCoordinator
from orchestray.coordinators.router import RouterCoordinator
from orchestray.coordinators.tree import TreeOfThoughtCoordinator
from orchestray.errors import ConfigError
from orchestray.policies.confidence import acceptance_from_config
from orchestray.policies.extraction import Extractor, extractor
from orchestray.policies.routing import TASKS, Router
from orchestray.policies.routing import Rule as RoutingRule
from orchestray.policies.templates import condition, output_parser

if TYPE_CHECKING:
    from orchestray.config import Config
    from orchestray.coordinators import Coordinator, Resolve

__all__ = ["PATTERNS", "Pattern", "Route", "RuleConfig", "StepConfig", "route_targets", "FieldError"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(ValueError):
    """A cross-field error that knows which field, below where it is raised, it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _config_error(err: ConfigError) -> ValueError:
    return ValueError(err.message)


# Routing rules and pipeline steps ──────────────────────────────────────────────────────────


class RuleConfig(Strict):
    """One routing rule: every condition given must hold (`policies.routing`'s module doc)."""

    to: str = Field(min_length=1, description="the provider or route to send to")
    name: str | None = None
    keywords: list[str] | None = Field(default=None, min_length=1)
    regex: str | None = None
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    task: list[Literal[TASKS]] | None = Field(default=None, min_length=1)  # type: ignore[valid-type]
    max_cost: float | None = Field(default=None, ge=0)

    @field_validator("keywords", "task", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"bad regex {value!r}: {err}") from None
        return value

    @model_validator(mode="after")
    def _sound(self) -> "RuleConfig":
        try:
            self.rule()  # the router's own checks (a rule with no condition, blank keywords)
        except ConfigError as err:
            raise _config_error(err) from None
        return self

    def rule(self, index: int | None = None) -> RoutingRule:
        """The router's rule; unnamed, it is labelled by its place (`rules[2]`) in traces."""
        return RoutingRule.from_dict(self.model_dump(exclude_none=True), index)


class StepConfig(Strict):
    """One pipeline step (`coordinators.pipeline`'s module doc)."""

    name: str | None = Field(default=None, description="how later steps refer to it; default: step<i>")
    model: str = Field(min_length=1, description="the provider or route that answers the step")
    prompt: str = "{input}"
    system: str | None = None
    when: dict[str, Any] | None = None
    parse: str | dict[str, Any] | None = None
    retries: int = Field(default=0, ge=0, le=10)
    timeout_s: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)

    @field_validator("when")
    @classmethod
    def _condition(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                condition(value)
            except ConfigError as err:
                raise ValueError(err.message.removeprefix("when: ")) from None
        return value

    @field_validator("parse")
    @classmethod
    def _parser(cls, value: Any) -> Any:
        if value is not None:
            try:
                output_parser(value)
            except (ConfigError, ValueError, TypeError) as err:
                raise ValueError(str(getattr(err, "message", err))) from None
        return value

    @model_validator(mode="after")
    def _sound(self) -> "StepConfig":
        try:
            self.step(0)  # the pipeline's own checks of a step (its name, say)
        except ConfigError as err:
            raise _config_error(err) from None
        return self

    def step(self, index: int) -> PipelineStep:
        return PipelineStep.from_dict({**self.model_dump(exclude_none=True), "name": self.name or f"step{index}"}, index)


# Routes: one model per pattern, told apart by `pattern`, each with its builder ─────────────


class _Route(Strict):
    description: str = ""
    cache: CachePolicy | None = None  # how the calls made inside this route use the response cache

    def build(self, name: str, config: Config, resolve: Resolve) -> Coordinator:
        raise NotImplementedError


class RaceRoute(_Route):
    """First success wins; `hedge_after_ms` (ms, "p95", or null for all at once) staggers the calls."""

    pattern: Literal["race"]
    providers: list[str] = Field(min_length=1)
    hedge_after_ms: float | Literal["p95"] | None = None

    def build(self, name, config, resolve):
        return RaceCoordinator(name, resolve, self.providers, self.hedge_after_ms)


class _Extracting(_Route):
    """How a pattern reads what a reply answers (`policies.extraction`). Unset: the `Answer:` line,
    or a JSON answer in canonical form; a reply with tool calls always answers with its calls."""

    extract: Literal["answer", "number", "choice", "text", "json", "regex", "tool_call"] | None = None
    pattern_regex: str | None = None
    path: str | None = Field(default=None, description="extract: json: the field, e.g. answer or result.items.0")

    @model_validator(mode="after")
    def _options_fit(self) -> "_Extracting":
        if self.path is not None and self.extract != "json":
            raise ValueError("`path` is for extract: json")
        if self.pattern_regex is not None and self.extract != "regex":
            raise ValueError("`pattern_regex` is for extract: regex")
        return self

    def extractor(self) -> Extractor | None:
        if self.extract is None:
            return None  # reply_answer's default: the `Answer:` line, or canonical JSON
        if self.extract == "regex":
            return extractor("regex", pattern=self.pattern_regex or r"(.+)")
        if self.extract == "json":
            return extractor("json", path=self.path or "")
        return extractor(self.extract)


class EnsembleRoute(_Extracting):
    """Parallel calls and a vote."""

    pattern: Literal["ensemble"]
    providers: list[str] = Field(min_length=1)
    samples: int = Field(default=1, gt=0, le=64, description="calls per provider")
    temperature: float | None = Field(default=None, ge=0, le=2, description="the samples' temperature")
    vote: Literal["majority", "weighted", "judge", "aggregate"] = "majority"
    tie: Literal["first", "lowest_cost", "abstain", "random"] = "first"
    weights: dict[str, float] = {}
    judge: str | None = None
    quorum: int | None = Field(default=None, gt=0)

    def build(self, name, config, resolve):
        return EnsembleCoordinator(
            name, resolve, self.providers, samples=self.samples, temperature=self.temperature,
            vote=self.vote, tie=self.tie, weights=self.weights, judge=self.judge,
            extract=self.extractor(), quorum=self.quorum,
        )


class CascadeRoute(_Extracting):
    """Cheapest first, escalating while the acceptance test fails."""

    pattern: Literal["cascade"]
    providers: list[str] = Field(min_length=1)
    accept: Literal["confidence", "agreement", "judge"] = "confidence"
    threshold: float = Field(default=0.8, ge=0, le=1)
    samples: int = Field(default=3, gt=0, le=16, description="k for agreement")
    judge: str | None = None

    def build(self, name, config, resolve):
        accept = acceptance_from_config(self.accept, self.threshold, self.samples, self.extractor())
        prices = {p.name: p.price for p in config.providers}
        return CascadeCoordinator(name, resolve, self.providers, accept, judge=self.judge,
                                  ask_confidence=self.accept == "confidence", price_of=prices.get)


class TreeOfThoughtRoute(_Route):
    """Beam search over thoughts, within the budgets `max_calls`, `max_tokens` and `max_cost`."""

    pattern: Literal["tree_of_thought"]
    providers: list[str] = Field(min_length=1)
    task: Literal["general", "game24"] = "general"
    breadth: int = Field(default=5, gt=0, le=64)
    depth: int = Field(default=3, gt=0, le=16)
    evaluations: int = Field(default=3, gt=0, le=16)
    max_calls: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0, description="tokens over the whole search")
    max_cost: float | None = Field(default=None, gt=0)

    def build(self, name, config, resolve):
        return TreeOfThoughtCoordinator(
            name, resolve, self.providers, task=self.task, breadth=self.breadth, depth=self.depth,
            evaluations=self.evaluations, max_calls=self.max_calls, max_tokens=self.max_tokens,
            max_cost=self.max_cost,
        )


class RoutingRoute(_Route):
    """The first rule whose conditions all hold picks the target; `default` otherwise."""

    pattern: Literal["route"]
    rules: list[RuleConfig] = []
    default: str

    def build(self, name, config, resolve):
        try:
            router = Router([r.rule(i) for i, r in enumerate(self.rules)], self.default,
                            prices={p.name: p.price for p in config.providers})
        except ConfigError as err:
            where = "." if err.message.startswith("rules[") else ": "
            raise ConfigError(f"routes.{name}{where}{err.message}") from None
        return RouterCoordinator(name, resolve, router)


class FallbackRoute(_Route):
    """Each in turn until one answers."""

    pattern: Literal["fallback"]
    providers: list[str] = Field(min_length=1)

    def build(self, name, config, resolve):
        return FallbackCoordinator(name, resolve, self.providers)


class PipelineRoute(_Route):
    """Steps in order, each prompt a template over `{input}` and `{steps.NAME.output}`."""

    pattern: Literal["pipeline"]
    steps: list[StepConfig] = Field(min_length=1)
    on_error: Literal["fail_fast", "continue"] = "fail_fast"

    @model_validator(mode="after")
    def _steps_fit(self) -> "PipelineRoute":
        try:
            check_steps([s.step(i) for i, s in enumerate(self.steps)])
        except ConfigError as err:
            where, _, message = err.message.partition(": ")
            raise FieldError(where, message) from None
        return self

    def build(self, name, config, resolve):
        return PipelineCoordinator(name, resolve, [s.step(i) for i, s in enumerate(self.steps)], on_error=self.on_error)


class BalanceRoute(_Route):
    """Spread calls over members in proportion to their free quota (several keys or deployments)."""

    pattern: Literal["balance"]
    providers: list[str] = Field(min_length=1)

    def build(self, name, config, resolve):
        rpm = {p.name: p.limits.rpm for p in config.providers if p.name in self.providers}
        return BalanceCoordinator(name, resolve, self.providers, rpm=rpm)


# The table ────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Pattern:
    route: type[_Route]
    members: str = "providers"
    # Options whose ad-hoc HTTP name differs, because the route's name is also a chat request
    # field there (an ensemble's sample `temperature` beside the request's own).
    renamed: dict[str, str] = field(default_factory=dict)
    # The members answer one after another (an escalation, a chain of steps), so an exported
    # trace lays their calls out in turn rather than side by side (`orchestray.telemetry`).
    sequential: bool = False

    @property
    def name(self) -> str:
        return self.route.model_fields["pattern"].annotation.__args__[0]

    @property
    def summary(self) -> str:
        return (self.route.__doc__ or self.name).strip()

    def options(self) -> dict[str, Any]:
        """The ad-hoc options (field infos by route field name): all but the members and tags."""
        return {k: v for k, v in self.route.model_fields.items() if k not in ("pattern", "description", self.members)}


PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern(RaceRoute),
        Pattern(EnsembleRoute, renamed={"temperature": "sample_temperature"}),
        Pattern(CascadeRoute, sequential=True),
        Pattern(TreeOfThoughtRoute, renamed={"max_tokens": "max_total_tokens"}, sequential=True),
        Pattern(RoutingRoute, members="rules"),
        Pattern(FallbackRoute, sequential=True),
        Pattern(PipelineRoute, members="steps", sequential=True),
        Pattern(BalanceRoute),
    )
}

Route = Annotated[Union[tuple(p.route for p in PATTERNS.values())], Field(discriminator="pattern")]


def route_targets(route: _Route) -> list[tuple[str, str]]:
    """Every (field path, name) a route sends calls to, for reference checking."""
    found: list[tuple[str, str]] = []
    for i, name in enumerate(getattr(route, "providers", []) or []):
        found.append((f"providers[{i}]", name))
    for attr in ("judge", "default"):
        value = getattr(route, attr, None)
        if value:
            found.append((attr, value))
    for i, rule in enumerate(getattr(route, "rules", []) or []):
        found.append((f"rules[{i}].to", rule.to))
    for i, step in enumerate(getattr(route, "steps", []) or []):
        found.append((f"steps[{i}].model", step.model))
    return found
