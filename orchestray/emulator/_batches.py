"""The emulator's batch APIs: OpenAI Files + `/v1/batches`, and Anthropic `/v1/messages/batches`.

    POST /v1/files                  (multipart: file, purpose=batch)   GET /v1/files/{id}[/content]
    POST /v1/batches                GET /v1/batches[/{id}]             POST /v1/batches/{id}/cancel
    POST /v1/messages/batches       GET /v1/messages/batches[/{id}[/results]]   POST .../{id}/cancel

A batch moves through its states on the clock, looked at lazily (no background task): validating
for the first tenth of `batch_turnaround_s`, in progress until nine tenths, finalizing, then
ended. Its answers are made when it ends, by the same simulated models and wire formats as the
live endpoints, so a body from a batch is exactly a live body. A fraction of requests comes back
expired (`batch_expire_rate`) or errored with a 500 (`batch_error_rate`), for every model or only
those in `batch_fault_models` (so one member of a pattern can fail alone). Caps (`batch_max_requests`,
`batch_max_bytes`, default the providers' own) and a queue limit (`batch_queue_requests`: requests
in batches not yet ended) are enforced as the providers do. None of this touches the live
counters or rate limits: `GET /stats` reports it under `batches`, with `paid_twice`, the
submissions of a custom_id whose earlier submission was answered or is still pending.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from ._wire import ANTHROPIC, OPENAI, WireError

if TYPE_CHECKING:
    from ._server import Emulator

__all__ = ["BatchDesk", "PROVIDER_CAPS"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_JSON = "application/json"
# The providers' own caps per batch: (requests, bytes).
PROVIDER_CAPS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}
_ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class _Batch:
    api: str  # openai | anthropic
    id: str
    created: float  # wall clock
    started: float  # monotonic
    turnaround_s: float
    requests: list[tuple[str, Any]]  # (custom_id, body)
    input_file_id: str | None = None
    metadata: dict | None = None
    failed: list[dict] | None = None  # OpenAI validation errors
    cancelled_at: float | None = None
    results: list[dict] | None = None  # made when it ends
    counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None


class BatchDesk:
    def __init__(self, emulator: "Emulator"):
        self.emulator = emulator
        self._files: dict[str, dict] = {}
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self._rng = random.Random(emulator.options.seed + 1)
        self._seen: dict[str, str] = {}  # custom_id -> "pending" | "succeeded" | "expired" | "errored" | "canceled"
        self.reset()

    def reset(self) -> None:
        self.counts = {"files": 0, "batches": 0, "requests": 0, "succeeded": 0, "expired": 0, "errored": 0,
                       "canceled": 0, "paid_twice": 0, "refused": 0}
        self.by_api: dict[str, dict[str, int]] = {"openai": {"batches": 0, "requests": 0},
                                                  "anthropic": {"batches": 0, "requests": 0}}
        self._seen.clear()

    def stats(self) -> dict:
        self._settle_all()
        return {**self.counts, "by_api": {k: dict(v) for k, v in self.by_api.items()},
                "largest_batch": max((len(b.requests) for b in self._batches.values()), default=0)}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for prefix in ("/v1", ""):
            r.add_post(f"{prefix}/files", self._upload)
            r.add_get(f"{prefix}/files/{{id}}", self._file)
            r.add_get(f"{prefix}/files/{{id}}/content", self._file_content)
            r.add_post(f"{prefix}/batches", self._openai_create)
            r.add_get(f"{prefix}/batches", self._openai_list)
            r.add_get(f"{prefix}/batches/{{id}}", self._openai_get)
            r.add_post(f"{prefix}/batches/{{id}}/cancel", self._openai_cancel)
        r.add_post("/v1/messages/batches", self._anthropic_create)
        r.add_get("/v1/messages/batches", self._anthropic_list)
        r.add_get("/v1/messages/batches/{id}", self._anthropic_get)
        r.add_get("/v1/messages/batches/{id}/results", self._anthropic_results)
        r.add_post("/v1/messages/batches/{id}/cancel", self._anthropic_cancel)

    # --- shared -------------------------------------------------------------------------------

    def _caps(self, api: str) -> tuple[int, int]:
        options = self.emulator.options
        requests, size = PROVIDER_CAPS[api]
        return options.batch_max_requests or requests, options.batch_max_bytes or size

    def _queued(self, api: str) -> int:
        self._settle_all()
        return sum(len(b.requests) for b in self._batches.values() if b.api == api and b.results is None and not b.failed)

    def _unauthorized(self, dialect, headers) -> web.Response | None:
        key = self.emulator.options.api_key
        if key and not dialect.authorized(headers, key):
            return web.Response(status=401, body=dialect.error(401, "invalid or missing API key"), content_type=_JSON)
        return None

    def _error(self, dialect, status: int, message: str) -> web.Response:
        self.counts["refused"] += 1
        return web.Response(status=status, body=dialect.error(status, message), content_type=_JSON)

    def _new(self, api: str, requests: list[tuple[str, Any]], **kw) -> _Batch:
        number = next(self._ids)
        batch_id = f"batch_emu{number:010x}" if api == "openai" else f"msgbatch_emu{number:014x}"
        batch = _Batch(api, batch_id, time.time(), time.monotonic(), self.emulator.options.batch_turnaround_s,
                       requests, **kw)
        self._batches[batch_id] = batch
        if batch.failed:
            return batch
        self.counts["batches"] += 1
        self.counts["requests"] += len(requests)
        self.by_api[api]["batches"] += 1
        self.by_api[api]["requests"] += len(requests)
        for custom_id, _ in requests:
            if self._seen.get(custom_id) in ("pending", "succeeded"):
                self.counts["paid_twice"] += 1
            self._seen[custom_id] = "pending"
        return batch

    def _phase(self, batch: _Batch) -> str:
        if batch.failed:
            return "failed"
        if batch.results is not None:
            return "cancelled" if batch.cancelled_at is not None else "ended"
        elapsed = time.monotonic() - batch.started
        if batch.cancelled_at is not None:
            if elapsed >= 0 and time.time() - batch.cancelled_at >= min(0.05, batch.turnaround_s / 10):
                self._settle(batch)
                return "cancelled"
            return "cancelling"
        if elapsed >= batch.turnaround_s:
            self._settle(batch)
            return "ended"
        fraction = elapsed / batch.turnaround_s if batch.turnaround_s else 1.0
        return "validating" if fraction < 0.1 else "in_progress" if fraction < 0.9 else "finalizing"

    def _settle_all(self) -> None:
        for batch in list(self._batches.values()):
            self._phase(batch)

    def _settle(self, batch: _Batch) -> None:
        """Answer every request of an ended batch (a cancelled one answers none it had not begun)."""
        options = self.emulator.options
        dialect = OPENAI if batch.api == "openai" else ANTHROPIC
        results, counts = [], {"succeeded": 0, "expired": 0, "errored": 0, "canceled": 0}
        created = int(time.time())
        faulty = set(options.batch_fault_models)
        for custom_id, body in batch.requests:
            roll = self._rng.random()
            if faulty and (body.get("model") if isinstance(body, dict) else None) not in faulty:
                roll = 1.0  # a model the faults leave alone
            if batch.cancelled_at is not None:
                outcome: dict = {"type": "canceled"}
            elif roll < options.batch_expire_rate:
                outcome = {"type": "expired"}
            elif roll < options.batch_expire_rate + options.batch_error_rate:
                outcome = {"type": "errored", "status": 500, "body": dialect.error(500, "the emulator injected a batch fault")}
            else:
                outcome = self._answer(dialect, body, created)
            counts[outcome["type"]] += 1
            self.counts[outcome["type"]] += 1
            self._seen[custom_id] = outcome["type"]
            results.append({"custom_id": custom_id, **outcome})
        batch.results, batch.counts = results, counts
        if batch.api == "openai":
            self._openai_files(batch)

    def _answer(self, dialect, body: Any, created: int) -> dict:
        try:
            call = dialect.decode(_encode(body))
        except WireError as err:
            return {"type": "errored", "status": 400, "body": dialect.error(400, err.message, param=err.param)}
        model = self.emulator._model(call.request.model)
        answers = model.answers(call.request)
        response_id = dialect.new_id(next(self._ids))
        return {"type": "succeeded", "status": 200, "body": dialect.completion(call, answers, response_id, created)}

    # --- OpenAI: files ------------------------------------------------------------------------

    def _file_object(self, file_id: str) -> dict:
        f = self._files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    def _store_file(self, data: bytes, filename: str, purpose: str) -> str:
        file_id = f"file-emu{next(self._ids):016x}"
        self._files[file_id] = {"data": data, "filename": filename, "purpose": purpose, "created_at": int(time.time())}
        return file_id

    async def _upload(self, http: web.Request) -> web.Response:
        if (refused := self._unauthorized(OPENAI, http.headers)) is not None:
            return refused
        reader = await http.multipart()
        data, filename, purpose = None, "upload.jsonl", None
        async for part in reader:
            if part.name == "file":
                filename = part.filename or filename
                data = bytes(await part.read())
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
        if data is None or purpose is None:
            return self._error(OPENAI, 400, "a file upload needs `file` and `purpose`")
        _, max_bytes = self._caps("openai")
        if len(data) > max_bytes:
            return self._error(OPENAI, 413, f"file too large: {len(data)} bytes, the limit is {max_bytes}")
        self.counts["files"] += 1
        file_id = self._store_file(data, filename, purpose)
        return web.Response(body=_encode(self._file_object(file_id)), content_type=_JSON)

    async def _file(self, http: web.Request) -> web.Response:
        file_id = http.match_info["id"]
        if file_id not in self._files:
            return self._error(OPENAI, 404, f"no file {file_id!r}")
        return web.Response(body=_encode(self._file_object(file_id)), content_type=_JSON)

    async def _file_content(self, http: web.Request) -> web.Response:
        file_id = http.match_info["id"]
        if file_id not in self._files:
            return self._error(OPENAI, 404, f"no file {file_id!r}")
        return web.Response(body=self._files[file_id]["data"], content_type="application/octet-stream")

    # --- OpenAI: batches ----------------------------------------------------------------------

    def _openai_lines(self, data: bytes) -> tuple[list[tuple[str, Any]], list[dict]]:
        requests, errors, seen, models = [], [], set(), set()
        for number, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = _decode(raw)
                custom_id, url, body = line["custom_id"], line["url"], line["body"]
            except (msgspec.DecodeError, KeyError, TypeError):
                errors.append({"code": "invalid_json_line", "message": "not a batch request line", "line": number})
                continue
            if url != "/v1/chat/completions" or line.get("method") != "POST":
                errors.append({"code": "invalid_url", "message": f"url {url!r} is not the batch's endpoint", "line": number})
            if custom_id in seen:
                errors.append({"code": "duplicate_custom_id", "message": f"custom_id {custom_id!r} repeats", "line": number})
            seen.add(custom_id)
            models.add(body.get("model") if isinstance(body, dict) else None)
            requests.append((custom_id, body))
        if len(models) > 1:
            errors.append({"code": "mismatched_model", "message": "every request of a batch must use one model", "line": None})
        max_requests, _ = self._caps("openai")
        if len(requests) > max_requests:
            errors.append({"code": "too_many_requests", "message": f"{len(requests)} requests, more than {max_requests}", "line": None})
        return requests, errors

    async def _openai_create(self, http: web.Request) -> web.Response:
        if (refused := self._unauthorized(OPENAI, http.headers)) is not None:
            return refused
        try:
            body = _decode(await http.read())
            file_id = body["input_file_id"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return self._error(OPENAI, 400, "a batch needs `input_file_id`, `endpoint` and `completion_window`")
        if body.get("endpoint") != "/v1/chat/completions":
            return self._error(OPENAI, 400, f"endpoint {body.get('endpoint')!r} is not served in batches here")
        if body.get("completion_window") != "24h":
            return self._error(OPENAI, 400, "completion_window must be 24h")
        if file_id not in self._files:
            return self._error(OPENAI, 404, f"no file {file_id!r}")
        requests, errors = self._openai_lines(self._files[file_id]["data"])
        queue = self.emulator.options.batch_queue_requests
        if not errors and queue is not None and self._queued("openai") + len(requests) > queue:
            errors = [{"code": "token_limit_exceeded", "line": None,
                       "message": f"enqueued request limit reached: {queue} requests may wait at once"}]
        if errors:
            self.counts["refused"] += 1
        batch = self._new("openai", requests, input_file_id=file_id, metadata=body.get("metadata"),
                          failed=errors or None)
        return web.Response(body=_encode(self._openai_object(batch)), content_type=_JSON)

    def _openai_files(self, batch: _Batch) -> None:
        out, err = [], []
        for n, r in enumerate(batch.results or ()):
            record: dict[str, Any] = {"id": f"batch_req_emu{n:08x}", "custom_id": r["custom_id"], "response": None, "error": None}
            if r["type"] in ("succeeded", "errored"):
                record["response"] = {"status_code": r["status"], "request_id": f"req_emu{n:08x}", "body": _decode(r["body"])}
            else:
                code = "batch_expired" if r["type"] == "expired" else "batch_cancelled"
                record["error"] = {"code": code, "message": f"this request was not run before the batch {r['type']}"}
            (out if r["type"] == "succeeded" else err).append(_encode(record))
        if out:
            batch.output_file_id = self._store_file(b"\n".join(out) + b"\n", f"{batch.id}_output.jsonl", "batch_output")
        if err:
            batch.error_file_id = self._store_file(b"\n".join(err) + b"\n", f"{batch.id}_error.jsonl", "batch_output")

    def _openai_object(self, batch: _Batch) -> dict:
        phase = self._phase(batch)
        created = int(batch.created)
        done = int(batch.created + batch.turnaround_s)
        status = {"ended": "completed", "failed": "failed"}.get(phase, phase)
        if phase == "ended" and batch.counts.get("expired"):
            status = "expired"  # OpenAI ends a batch past its window as expired, keeping what finished
        total = len(batch.requests)
        if batch.results is not None:
            completed = batch.counts["succeeded"]
            failed = total - completed
        else:
            elapsed = time.monotonic() - batch.started
            share = 0.0 if phase == "validating" else min(1.0, elapsed / batch.turnaround_s if batch.turnaround_s else 1)
            completed, failed = int(total * share), 0
        obj = {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": batch.failed} if batch.failed else None,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "created_at": created, "in_progress_at": created if phase not in ("validating", "failed") else None,
            "expires_at": created + 86_400, "finalizing_at": done if batch.results is not None else None,
            "completed_at": done if status == "completed" else None,
            "failed_at": created if phase == "failed" else None,
            "expired_at": done if status == "expired" else None,
            "cancelling_at": int(batch.cancelled_at) if batch.cancelled_at else None,
            "cancelled_at": int(batch.cancelled_at) if phase == "cancelled" else None,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": batch.metadata,
        }
        # OpenAI leaves out what has not happened (its schema has no nulls for these fields).
        return {k: v for k, v in obj.items() if v is not None}

    def _page(self, http: web.Request, api: str, after_param: str) -> tuple[list[_Batch], int]:
        """The API's batches newest first, from after the cursor, and the page size asked for."""
        batches = [b for b in reversed(self._batches.values()) if b.api == api]
        after = http.query.get(after_param)
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        return batches, int(http.query.get("limit", 20))

    def _find(self, http: web.Request, api: str) -> _Batch | None:
        batch = self._batches.get(http.match_info["id"])
        return batch if batch is not None and batch.api == api else None

    async def _openai_get(self, http: web.Request) -> web.Response:
        batch = self._find(http, "openai")
        if batch is None:
            return self._error(OPENAI, 404, f"no batch {http.match_info['id']!r}")
        return web.Response(body=_encode(self._openai_object(batch)), content_type=_JSON)

    async def _openai_cancel(self, http: web.Request) -> web.Response:
        batch = self._find(http, "openai")
        if batch is None:
            return self._error(OPENAI, 404, f"no batch {http.match_info['id']!r}")
        if batch.results is None and not batch.failed and batch.cancelled_at is None and self._phase(batch) != "ended":
            batch.cancelled_at = time.time()
        return web.Response(body=_encode(self._openai_object(batch)), content_type=_JSON)

    async def _openai_list(self, http: web.Request) -> web.Response:
        batches, limit = self._page(http, "openai", "after")
        data = [self._openai_object(b) for b in batches[:limit]]
        body = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(batches) > limit}
        return web.Response(body=_encode(body), content_type=_JSON)

    # --- Anthropic ----------------------------------------------------------------------------

    async def _anthropic_create(self, http: web.Request) -> web.Response:
        if (refused := self._unauthorized(ANTHROPIC, http.headers)) is not None:
            return refused
        raw = await http.read()
        max_requests, max_bytes = self._caps("anthropic")
        if len(raw) > max_bytes:
            return self._error(ANTHROPIC, 413, f"request too large: {len(raw)} bytes, the limit is {max_bytes}")
        try:
            items = _decode(raw)["requests"]
            requests = [(item["custom_id"], item["params"]) for item in items]
        except (msgspec.DecodeError, KeyError, TypeError):
            return self._error(ANTHROPIC, 400, "a message batch needs `requests`: [{custom_id, params}]")
        if not requests or len(requests) > max_requests:
            return self._error(ANTHROPIC, 400, f"requests: {len(requests)}; a batch holds 1 to {max_requests}")
        ids = [custom_id for custom_id, _ in requests]
        bad = next((c for c in ids if not isinstance(c, str) or not _ANTHROPIC_ID.match(c)), None)
        if bad is not None:
            return self._error(ANTHROPIC, 400, f"custom_id {bad!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if len(set(ids)) != len(ids):
            return self._error(ANTHROPIC, 400, "custom_id values must be unique within a batch")
        queue = self.emulator.options.batch_queue_requests
        if queue is not None and self._queued("anthropic") + len(requests) > queue:
            return self._error(ANTHROPIC, 429, f"the batch queue is full: {queue} requests may wait at once")
        batch = self._new("anthropic", requests)
        return web.Response(body=_encode(self._anthropic_object(batch, http)), content_type=_JSON)

    def _anthropic_object(self, batch: _Batch, http: web.Request) -> dict:
        self._phase(batch)
        ended = batch.results is not None
        total = len(batch.requests)
        counts = batch.counts if ended else {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}

        def stamp(wall: float | None) -> str | None:
            return None if wall is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))

        base = f"{http.scheme}://{http.host}"
        return {
            "id": batch.id, "type": "message_batch",
            "processing_status": "ended" if ended else "canceling" if batch.cancelled_at else "in_progress",
            "request_counts": {"processing": 0 if ended else total, "succeeded": counts["succeeded"],
                               "errored": counts["errored"], "canceled": counts["canceled"], "expired": counts["expired"]},
            "created_at": stamp(batch.created), "expires_at": stamp(batch.created + 86_400),
            "ended_at": stamp(batch.created + batch.turnaround_s) if ended else None,
            "archived_at": None, "cancel_initiated_at": stamp(batch.cancelled_at),
            "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    async def _anthropic_get(self, http: web.Request) -> web.Response:
        batch = self._find(http, "anthropic")
        if batch is None:
            return self._error(ANTHROPIC, 404, f"no message batch {http.match_info['id']!r}")
        return web.Response(body=_encode(self._anthropic_object(batch, http)), content_type=_JSON)

    async def _anthropic_results(self, http: web.Request) -> web.Response:
        batch = self._find(http, "anthropic")
        if batch is None:
            return self._error(ANTHROPIC, 404, f"no message batch {http.match_info['id']!r}")
        self._phase(batch)
        if batch.results is None:
            return self._error(ANTHROPIC, 400, f"message batch {batch.id} has not ended")
        lines = []
        for r in batch.results:
            if r["type"] == "succeeded":
                result: dict = {"type": "succeeded", "message": _decode(r["body"])}
            elif r["type"] == "errored":
                result = {"type": "errored", "error": _decode(r["body"])}
            else:
                result = {"type": r["type"]}
            lines.append(_encode({"custom_id": r["custom_id"], "result": result}))
        return web.Response(body=b"\n".join(lines) + b"\n", content_type="application/binary")

    async def _anthropic_cancel(self, http: web.Request) -> web.Response:
        batch = self._find(http, "anthropic")
        if batch is None:
            return self._error(ANTHROPIC, 404, f"no message batch {http.match_info['id']!r}")
        if batch.results is None and batch.cancelled_at is None and self._phase(batch) != "ended":
            batch.cancelled_at = time.time()
        return web.Response(body=_encode(self._anthropic_object(batch, http)), content_type=_JSON)

    async def _anthropic_list(self, http: web.Request) -> web.Response:
        batches, limit = self._page(http, "anthropic", "after_id")
        data = [self._anthropic_object(b, http) for b in batches[:limit]]
        body = {"data": data, "has_more": len(batches) > limit, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
        return web.Response(body=_encode(body), content_type=_JSON)
