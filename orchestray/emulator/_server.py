"""The emulator's HTTP server: one request flow for both wire formats, with limits, faults and stats."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import deque

import msgspec
from aiohttp import web

from orchestray.simulated import DEFAULT_PROFILES, SimAnswer, SimProfile, SimulatedModel

from ._batches import BatchDesk
from ._options import EmulatorOptions
from ._keys import ArrivalLog, KeyedQuotas, key_of
from ._quota import Quotas
from ._sampling import deprecated_sampling
from ._wire import ANTHROPIC, OPENAI, Call, Dialect, WireError

__all__ = ["Emulator"]

_encode = msgspec.json.Encoder().encode
_JSON = "application/json"
_SHUTDOWN_TIMEOUT_S = 0.5  # stop() waits this long for answers in flight, then cancels them
_MAX_CACHED_MODELS = 1024  # model names are client-chosen; don't let them grow memory unbounded
_WINDOW_HISTORY = 60  # seconds of admitted-per-second history kept for /stats


class _Counters:
    __slots__ = (
        "requests",
        "served",
        "rate_limited",
        "too_large",
        "faults",
        "hangs",
        "cancelled",
        "bad_requests",
        "unauthorized",
        "input_tokens",
        "output_tokens",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Stats:
    """What the emulator has seen since start or the last reset."""

    __slots__ = ("total", "by_model", "peak_concurrency", "started", "_second", "_count", "_history")

    def __init__(self, in_flight: int = 0) -> None:
        self.total = _Counters()
        self.by_model: dict[str, _Counters] = {}
        self.peak_concurrency = in_flight
        self.started = time.monotonic()
        self._second = -1
        self._count = 0
        self._history: deque[tuple[int, int]] = deque(maxlen=_WINDOW_HISTORY)

    def count(self, event: str, per_model: _Counters, amount: int = 1) -> None:
        setattr(self.total, event, getattr(self.total, event) + amount)
        setattr(per_model, event, getattr(per_model, event) + amount)

    def model(self, name: str) -> _Counters:
        counters = self.by_model.get(name)
        if counters is None:
            counters = self.by_model[name] = _Counters()
        return counters

    def admitted(self, now: float) -> None:
        second = int(now - self.started)
        if second != self._second:
            if self._second >= 0:
                self._history.append((self._second, self._count))
            self._second, self._count = second, 0
        self._count += 1

    def as_dict(self, in_flight: int) -> dict:
        windows = list(self._history)
        if self._second >= 0:
            windows.append((self._second, self._count))
        per_second = [count for _, count in windows]
        return {
            **self.total.as_dict(),
            "in_flight": in_flight,
            "peak_concurrency": self.peak_concurrency,
            "uptime_s": round(time.monotonic() - self.started, 3),
            # Requests admitted in each whole second since start (the last 60), oldest first.
            "admitted_per_second": [{"second": s, "count": c} for s, c in windows],
            "peak_admitted_per_second": max(per_second, default=0),
            "by_model": {name: c.as_dict() for name, c in self.by_model.items()},
        }


class _ConfigChange(msgspec.Struct, forbid_unknown_fields=True):
    rpm: int | None | msgspec.UnsetType = msgspec.UNSET
    tpm: int | None | msgspec.UnsetType = msgspec.UNSET
    limit_mode: str | msgspec.UnsetType = msgspec.UNSET
    latency_ms: float | None | msgspec.UnsetType = msgspec.UNSET
    latency_sigma: float | msgspec.UnsetType = msgspec.UNSET
    ms_per_output_token: float | msgspec.UnsetType = msgspec.UNSET
    accuracy: float | msgspec.UnsetType = msgspec.UNSET
    fault_rate: float | msgspec.UnsetType = msgspec.UNSET
    hang_rate: float | msgspec.UnsetType = msgspec.UNSET
    error_status: int | None | msgspec.UnsetType = msgspec.UNSET
    hang_s: float | msgspec.UnsetType = msgspec.UNSET
    seed: int | msgspec.UnsetType = msgspec.UNSET
    reject_sampling: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET
    key_rpm: tuple[tuple[str, int], ...] | msgspec.UnsetType = msgspec.UNSET
    log_arrivals: bool | msgspec.UnsetType = msgspec.UNSET
    batch_turnaround_s: float | msgspec.UnsetType = msgspec.UNSET
    batch_expire_rate: float | msgspec.UnsetType = msgspec.UNSET
    batch_error_rate: float | msgspec.UnsetType = msgspec.UNSET
    batch_max_requests: int | None | msgspec.UnsetType = msgspec.UNSET
    batch_max_bytes: int | None | msgspec.UnsetType = msgspec.UNSET
    batch_queue_requests: int | None | msgspec.UnsetType = msgspec.UNSET


_decode_config = msgspec.json.Decoder(_ConfigChange).decode


class Emulator:
    """An OpenAI- and Anthropic-compatible server whose models are `SimulatedModel`s.

    `await start()` binds and returns the base URL (`http://host:port`); the OpenAI SDK takes
    `openai_base_url` (that plus `/v1`), the Anthropic SDK `anthropic_base_url` (the same as
    `base_url`). Also usable as `async with Emulator(options) as emu:`.
    """

    def __init__(self, options: EmulatorOptions | None = None):
        self.options = options or EmulatorOptions()
        self._stats = _Stats()
        self._in_flight = 0  # a gauge, so it lives outside the stats a reset replaces
        self._quotas = self._new_quotas(self.options)
        self._arrivals = ArrivalLog()
        self._models: dict[str, SimulatedModel] = {}
        self._rng = random.Random(self.options.seed)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.batches = BatchDesk(self)  # the batch APIs: their own counts, never the live limits

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def app(self) -> web.Application:
        app = web.Application(client_max_size=300 * 1024 * 1024)  # batch uploads reach 256 MB
        chat_openai = self._handler(OPENAI)
        chat_anthropic = self._handler(ANTHROPIC)
        app.router.add_post("/v1/chat/completions", chat_openai)
        app.router.add_post("/chat/completions", chat_openai)  # a base_url without /v1 works too
        app.router.add_post("/v1/messages", chat_anthropic)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/models", self._list_models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_get("/arrivals", self._get_arrivals)
        app.router.add_post("/reset", self._post_reset)
        app.router.add_post("/config", self._post_config)
        self.batches.add_routes(app)
        return app

    async def start(self) -> str:
        if self._runner is not None:
            return self.base_url
        # handler_cancellation: a client that disconnects (a race loser) cancels its handler,
        # which is how the emulator sees and counts cancels.
        runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # --- control --------------------------------------------------------------------------------

    def stats(self) -> dict:
        return {**self._stats.as_dict(self._in_flight), "batches": self.batches.stats()}

    def reset(self) -> None:
        """Zero the counters and refill every rate-limit bucket."""
        self._stats = _Stats(self._in_flight)
        self.batches.reset()
        self._quotas = self._new_quotas(self.options)
        self._arrivals = ArrivalLog()

    @staticmethod
    def _new_quotas(options: EmulatorOptions) -> KeyedQuotas:
        return KeyedQuotas(options.rpm, options.tpm, options.limit_mode, options.key_rpm)

    def arrivals(self) -> dict:
        """Every call since the last reset (with `log_arrivals`): see `_keys.ArrivalLog`."""
        return self._arrivals.as_dict(self._stats.started)

    def configure(self, **changes) -> EmulatorOptions:
        """Change settings while running (host, port and api_key excepted)."""
        fixed = {"host", "port", "api_key"} & set(changes)
        if fixed:
            raise ValueError(f"cannot change {', '.join(sorted(fixed))} while running")
        old = self.options
        self.options = new = old.with_changes(**changes)
        if (new.rpm, new.tpm, new.limit_mode, new.key_rpm) != (old.rpm, old.tpm, old.limit_mode, old.key_rpm):
            self._quotas = self._new_quotas(new)
        if new.seed != old.seed:
            self._rng = random.Random(new.seed)
        self._models.clear()  # profiles depend on latency, accuracy and seed
        return new

    # --- handlers -------------------------------------------------------------------------------

    def _model(self, name: str) -> SimulatedModel:
        model = self._models.get(name)
        if model is None:
            options = self.options
            profile = DEFAULT_PROFILES.get(name) or SimProfile(accuracy=options.accuracy)
            if options.latency_ms is not None:
                profile = profile.with_latency(
                    options.latency_ms, options.latency_sigma, options.ms_per_output_token
                )
            model = SimulatedModel(name, profile, seed=options.seed)
            if len(self._models) < _MAX_CACHED_MODELS:
                self._models[name] = model
        return model

    def _handler(self, dialect: Dialect):
        async def handle(request: web.Request) -> web.StreamResponse:
            entered = time.monotonic()
            self._in_flight += 1
            stats = self._stats
            if self._in_flight > stats.peak_concurrency:
                stats.peak_concurrency = self._in_flight
            try:
                return await self._chat(request, dialect, stats, entered)
            finally:
                self._in_flight -= 1

        return handle

    def _error(self, dialect: Dialect, status: int, message: str, headers=None, **kw) -> web.Response:
        body = dialect.error(status, message, **kw)
        return web.Response(status=status, body=body, content_type=_JSON, headers=headers)

    async def _chat(self, http: web.Request, dialect: Dialect, stats: _Stats, entered: float) -> web.StreamResponse:
        total = stats.total
        total.requests += 1
        options = self.options
        if options.api_key and not dialect.authorized(http.headers, options.api_key):
            total.unauthorized += 1
            return self._error(dialect, 401, "invalid or missing API key")
        body = await http.read()
        try:
            call = dialect.decode(body)
        except WireError as err:
            total.bad_requests += 1
            return self._error(dialect, 400, err.message, param=err.param)
        if dialect is ANTHROPIC and (deprecated := deprecated_sampling(body, options.reject_sampling)):
            total.bad_requests += 1
            return self._error(dialect, 400, deprecated)

        model_name = call.request.model
        per_model = stats.model(model_name)
        per_model.requests += 1
        input_tokens = call.request.prompt_tokens()  # images, tools and schemas count too
        now = time.monotonic()
        key = key_of(http.headers)
        quotas = self._quotas.for_key(key)
        refused = self._refuse(quotas, dialect, model_name, input_tokens + call.max_output, now)
        if options.log_arrivals:
            self._arrivals.add(entered, now, key, refused is None)
        if refused is not None:
            stats.count("too_large" if refused.status == 413 else "rate_limited", per_model)
            return refused
        stats.admitted(now)
        headers = dialect.quota_headers(quotas.states(model_name, now), time.time())

        # Output tokens reserved at admission and not produced go back to the bucket, whatever
        # way this request ends (answered, fault, hang, client gone).
        produced = 0
        try:
            roll = self._rng.random() if options.fault_rate or options.hang_rate else 1.0
            if roll < options.fault_rate:
                stats.count("faults", per_model)
                return await self._fault(dialect, model_name, headers)
            if roll < options.fault_rate + options.hang_rate:
                stats.count("hangs", per_model)
                return await self._hang(dialect, headers)
            response, answers = await self._answer(http, dialect, call, headers)
            if answers is None:
                stats.count("cancelled", per_model)  # the client left mid-stream
                return response
            produced = sum(a.output_tokens for a in answers)
            stats.count("served", per_model)
            stats.count("input_tokens", per_model, input_tokens)
            stats.count("output_tokens", per_model, produced)
            return response
        except asyncio.CancelledError:
            stats.count("cancelled", per_model)
            raise
        finally:
            quotas.refund_tokens(model_name, call.max_output - produced, now, time.monotonic())

    def _refuse(self, quotas: Quotas, dialect: Dialect, model: str, cost: int, now: float) -> web.Response | None:
        """Admit the request against the model's quotas (the key's), or say why not (413, 429)."""
        if quotas.too_large(cost):
            message = (
                f"request too large for {model!r}: about {cost} tokens (prompt plus max_tokens), "
                f"more than the limit of {quotas.tpm} tokens per minute"
            )
            return self._error(dialect, 413, message)
        rejection = quotas.admit(model, cost, now)
        if rejection is None:
            return None
        headers = dialect.quota_headers(quotas.states(model, now), time.time())
        wait = rejection.retry_after_s
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        limit = quotas.rpm if rejection.kind == "requests" else quotas.tpm
        message = (
            f"rate limit reached for {model!r} on {rejection.kind} per minute: limit {limit}; "
            f"try again in {wait:.3f}s"
        )
        return self._error(dialect, 429, message, headers=headers, kind=rejection.kind)

    async def _answer(
        self, http: web.Request, dialect: Dialect, call: Call, headers: dict[str, str]
    ) -> tuple[web.StreamResponse, list[SimAnswer] | None]:
        """Answer after the model's latency; no answers when the client left mid-stream."""
        model = self._model(call.request.model)
        answers = model.answers(call.request)  # n choices: the first is the single answer
        response_id = dialect.new_id(next(self._ids))
        if call.stream:
            per_token_s = model.profile.ms_per_output_token / 1000.0
            response = web.StreamResponse(headers=headers)
            try:
                await self._stream(http, response, dialect, call, answers, response_id, per_token_s)
            except ConnectionResetError:
                return response, None  # aiohttp finishes a prepared response quietly
            return response, answers
        delay = max(a.latency_s for a in answers)
        if delay > 0:
            await asyncio.sleep(delay)
        body = dialect.completion(call, answers, response_id, int(time.time()))
        return web.Response(body=body, content_type=_JSON, headers=headers), answers

    async def _fault(self, dialect: Dialect, model: str, headers: dict[str, str]) -> web.Response:
        status = self.options.error_status or dialect.fault_status(self._rng)
        # Errors come back quicker than answers: after a tenth of the model's median latency.
        delay = self._model(model).profile.latency_ms / 10000.0
        if delay > 0:
            await asyncio.sleep(delay)
        message = f"the emulator injected a fault (status {status})"
        return self._error(dialect, status, message, headers=headers)

    async def _hang(self, dialect: Dialect, headers: dict[str, str]) -> web.Response:
        await asyncio.sleep(self.options.hang_s)  # the client usually gives up first
        return self._error(dialect, 504, "the emulator hung and timed out", headers=headers)

    @staticmethod
    async def _stream(
        http: web.Request,
        response: web.StreamResponse,
        dialect: Dialect,
        call: Call,
        answers: list[SimAnswer],
        response_id: str,
        per_token_s: float,
    ) -> None:
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        created = int(time.time())
        pieces = dialect.stream_pieces(call, answers, response_id, created)
        # The per-token part of the latency is spread over the pieces; the rest comes first.
        latency_s = max(a.latency_s for a in answers)
        streaming_s = min(latency_s, max(a.output_tokens for a in answers) * per_token_s)
        first_s = latency_s - streaming_s
        gap_s = streaming_s / len(pieces) if pieces else 0.0
        await response.prepare(http)
        if first_s > 0:
            await asyncio.sleep(first_s)
        await response.write(dialect.stream_open(call, answers, response_id, created))
        for piece in pieces:
            if gap_s > 0:
                await asyncio.sleep(gap_s)
            await response.write(piece)
        await response.write(dialect.stream_close(call, answers, response_id, created))
        await response.write_eof()

    async def _list_models(self, request: web.Request) -> web.Response:
        created = int(self._stats.started)
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "orchestray"}
            for name in DEFAULT_PROFILES
        ]
        return web.Response(body=_encode({"object": "list", "data": data}), content_type=_JSON)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=_encode(self.stats()), content_type=_JSON)

    async def _get_arrivals(self, request: web.Request) -> web.Response:
        return web.Response(body=_encode(self.arrivals()), content_type=_JSON)

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=_encode(self.stats()), content_type=_JSON)

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            change = _decode_config(await request.read())
            given = ((f, getattr(change, f)) for f in change.__struct_fields__)
            changes = {f: value for f, value in given if value is not msgspec.UNSET}
            options = self.configure(**changes)
        except (msgspec.MsgspecError, ValueError) as err:
            body = _encode({"error": {"message": str(err)}})
            return web.Response(status=400, body=body, content_type=_JSON)
        return web.Response(body=_encode(options.public()), content_type=_JSON)
