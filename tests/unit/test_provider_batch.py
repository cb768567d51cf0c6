"""The provider-batch driver against a scripted batch API: retry budgets, a full queue, splitting
by bytes, and a rerun that collects what an earlier run submitted."""

from __future__ import annotations

import json

import pytest

from orchestray.backends._reply import Reply
from orchestray.config import parse_config
from orchestray.provider_batch import ProviderBatchOptions, run_provider_batch
from orchestray.provider_batch._apis import BatchState, Outcome, QueueFull
from orchestray.provider_batch._journal import Journal, journal_path


class ScriptedBatches:
    """A batch API that ends every batch at its first look; `script(key, attempt)` says how."""

    kind = "openai"

    def __init__(self, script=lambda key, attempt: "ok", queue_full_times: int = 0):
        self.script = script
        self.queue_full_times = queue_full_times
        self.batches: dict[str, list[str]] = {}
        self.tags: dict[str, str] = {}
        self.seen: dict[str, int] = {}
        self.sent: dict = {}

    def line(self, key, request):
        self.sent[key] = request
        return json.dumps({"custom_id": key, "body": {"q": request.last_user_text()}}).encode() + b"\n"

    async def submit(self, lines, tag):
        if self.queue_full_times:
            self.queue_full_times -= 1
            raise QueueFull("full")
        batch_id = f"b{len(self.batches)}"
        self.batches[batch_id] = [json.loads(line)["custom_id"] for line in lines]
        self.tags[tag] = batch_id
        return batch_id

    async def state(self, batch_id):
        return BatchState(batch_id, "p", "completed", {"total": len(self.batches[batch_id])})

    async def find(self, intent, known):
        found = self.tags.get(intent.tag)
        return None if found in known else found

    async def results(self, state):
        for key in self.batches[state.id]:
            attempt = self.seen[key] = self.seen.get(key, 0) + 1
            how = self.script(key, attempt)
            yield key, {"ok": Outcome("ok", 200, {"text": "Answer: 4"}),
                        "expired": Outcome("retry", 0, message="batch_expired"),
                        "bad": Outcome("error", 400, message="bad request")}[how]

    def reply(self, body, request):
        return Reply(text=body["text"], input_tokens=10, output_tokens=10, model="m")

    async def close(self):
        pass


CONFIG = parse_config({"providers": [{"name": "p", "kind": "openai", "base_url": "http://unused", "api_key_env": "X",
                                      "max_retries": 2, "price": {"input_per_1k": 1, "output_per_1k": 1},
                                      "batch": {"max_bytes": 400}}]})


def _input(tmp_path, n):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"c{i}", "body": {"model": "p", "messages": [
        {"role": "user", "content": f"What is {i} + 2?"}]}}) + "\n" for i in range(n)))
    return path


async def _no_live():
    raise AssertionError("nothing runs live")


async def _run(tmp_path, api, n=6):
    return await run_provider_batch(_input(tmp_path, n), tmp_path / "out.jsonl", CONFIG, _no_live,
                                    ProviderBatchOptions(progress=False, poll_s=0.001), apis={"p": api})


async def test_batches_are_split_at_the_byte_cap_and_priced_at_the_batch_discount(tmp_path):
    api = ScriptedBatches()
    result = await _run(tmp_path, api)
    assert all(len(keys) <= 400 // 60 for keys in api.batches.values()) and len(api.batches) > 1
    assert result.succeeded == 6 and result.cost == pytest.approx(6 * 0.02 * 0.5)


async def test_expired_requests_are_retried_until_the_budget_is_spent_then_written_as_errors(tmp_path):
    api = ScriptedBatches(lambda key, attempt: "expired" if key.startswith("l1-") or attempt == 1 else "ok")
    result = await _run(tmp_path, api)
    records = {json.loads(r)["custom_id"]: json.loads(r) for r in (tmp_path / "out.jsonl").read_text().splitlines()}
    assert records["c0"]["error"]["message"].endswith("the retry budget (2) is spent")
    assert result.succeeded == 5 and result.failed == 1 and result.rounds == 3  # 1 try + 2 retries
    assert api.seen[next(k for k in api.seen if k.startswith("l1-"))] == 3


async def test_a_4xx_is_an_error_record_at_once_and_a_full_queue_spends_no_retry(tmp_path):
    api = ScriptedBatches(lambda key, attempt: "bad" if key.startswith("l2-") else "ok", queue_full_times=3)
    result = await _run(tmp_path, api)
    assert result.failed == 1 and result.succeeded == 5 and result.rounds == 1


async def test_a_rerun_collects_a_batch_recorded_only_as_an_intent(tmp_path):
    """The driver died after creating a batch and before writing its id: found by its tag."""
    api = ScriptedBatches()
    source = _input(tmp_path, 2)
    journal = Journal(journal_path(tmp_path / "out.jsonl"))
    first = await _run(tmp_path, api, n=2)
    assert first.succeeded == 2
    (tmp_path / "out.jsonl").write_text("")  # as if nothing was written
    events = [json.loads(line) for line in journal.path.read_text().splitlines()]
    kept = [e for e in events if e["e"] == "intent"]  # the id, answers and collection lost
    journal.path.write_text("".join(json.dumps(e) + "\n" for e in kept))
    again = await run_provider_batch(source, tmp_path / "out.jsonl", CONFIG, _no_live,
                                     ProviderBatchOptions(progress=False, poll_s=0.001), apis={"p": api})
    assert again.succeeded == 2 and again.batch_requests == 0 and len(api.batches) == 1


async def test_responses_lines_go_through_the_batch_api_and_come_back_as_response_objects(tmp_path):
    """A `/v1/responses` line rides the provider's batch API like a chat line, and its record's
    body is a Response, as `orchestray batch` writes it for the same line run live."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/responses",
                                  "body": {"model": "p", "input": "What is 2 + 2?", "instructions": "Be brief."}}) + "\n"
                      + json.dumps({"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": "p", "messages": [{"role": "user", "content": "What is 1 + 2?"}]}}) + "\n")
    api = ScriptedBatches()
    result = await run_provider_batch(source, tmp_path / "out.jsonl", CONFIG, _no_live,
                                      ProviderBatchOptions(progress=False, poll_s=0.001), apis={"p": api})
    assert result.succeeded == 2 and result.batch_requests == 2
    (asked,) = [r for r in api.sent.values() if r.last_user_text() == "What is 2 + 2?"]
    assert [(m.role, m.text()) for m in asked.messages] == [("system", "Be brief."), ("user", "What is 2 + 2?")]
    records = {json.loads(r)["custom_id"]: json.loads(r) for r in (tmp_path / "out.jsonl").read_text().splitlines()}
    response = records["r1"]["response"]["body"]
    assert response["object"] == "response" and response["status"] == "completed"
    (message,) = [item for item in response["output"] if item["type"] == "message"]
    assert message["content"][0] == {**message["content"][0], "type": "output_text", "text": "Answer: 4"}
    assert response["usage"]["input_tokens"] == 10 and response["usage"]["output_tokens"] == 10
    assert records["c1"]["response"]["body"]["object"] == "chat.completion"


async def test_plain_lines_wait_on_disk_not_as_tasks_and_share_their_round_with_patterns(tmp_path, monkeypatch):
    """A line whose model is the provider itself is spooled, not run as a task: its request and
    a route's calls of the same round go out in one batch, each record is written once, and the
    spool is gone afterwards."""
    import asyncio

    config = parse_config({"providers": [{"name": "p", "kind": "openai", "base_url": "http://unused", "api_key_env": "X",
                                          "max_retries": 2, "price": {"input_per_1k": 1, "output_per_1k": 1}}],
                           "routes": {"vote": {"pattern": "ensemble", "providers": ["p"], "samples": 2}}})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"c{i}", "body": {"model": "vote" if i % 4 == 0 else "p",
                      "messages": [{"role": "user", "content": f"What is {i} + 2?"}]}}) + "\n" for i in range(40)))
    tasks = []
    create_task = asyncio.create_task
    monkeypatch.setattr(asyncio, "create_task", lambda coro, **kw: tasks.append(coro) or create_task(coro, **kw))
    api = ScriptedBatches(lambda key, attempt: "expired" if attempt == 1 and key.startswith("l3-") else "ok")
    result = await run_provider_batch(source, tmp_path / "out.jsonl", config, _no_live,
                                      ProviderBatchOptions(progress=False, poll_s=0.001), apis={"p": api})
    assert len([t for t in tasks if t.__qualname__.endswith("run_line")]) == 10  # the 10 route lines alone
    assert result.succeeded == 40 and result.rounds == 2  # line 3 expired once and came back a round later
    first, second = api.batches.values()
    assert len(first) == 30 + 10 * 2 and len(second) == 1  # plain and route calls in one batch a round
    records = [json.loads(r) for r in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in records) == sorted(f"c{i}" for i in range(40))
    assert not list(tmp_path.glob(".out.jsonl.spool-*"))
