"""Batch files without Ray: a fake model behind `resolve`, real files on disk."""

import asyncio
import json

import pytest

from orchestray.batch import BatchOptions, run_batch, summary_path, write_summary
from orchestray.errors import ProviderUnavailableError
from orchestray.messages import Completion, Span

MODELS = {"good", "flaky"}


class FakeModel:
    def __init__(self, name, fail_ids=()):
        self.name = name
        self.fail_ids = set(fail_ids)
        self.calls = []
        self.in_flight = 0
        self.peak = 0

    async def complete(self, request):
        self.calls.append(request.request_id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)
            if request.request_id in self.fail_ids:
                raise ProviderUnavailableError("503 after retries", provider=self.name)
            span = Span(name=self.name, input_tokens=3, output_tokens=2, cost=0.5, latency_s=0.01)
            return Completion(content=f"echo {request.messages[-1].content}", model=self.name, provider=self.name,
                              input_tokens=3, output_tokens=2, cost=0.5, trace=span)
        finally:
            self.in_flight -= 1


def line(custom_id, model="good", content="hi", **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}})


def records(path):
    return [json.loads(raw) for raw in path.read_text().splitlines()]


def run(tmp_path, lines, models=None, **options):
    source = tmp_path / "in.jsonl"
    if not source.exists():
        source.write_text("\n".join(lines) + "\n")
    models = models or {name: FakeModel(name) for name in MODELS}
    out = tmp_path / "out.jsonl"
    result = asyncio.run(run_batch(source, out, models.__getitem__, models.__contains__,
                                   BatchOptions(progress=False, **options)))
    return result, records(out), models


def test_every_line_gets_exactly_one_record_bad_lines_included(tmp_path):
    lines = [
        line("a"),
        "{not json",
        "",
        json.dumps({"method": "POST", "body": {}}),
        line("a"),  # duplicate
        line("b", model="ghost"),
        line("c", temperature=7),
        json.dumps({"custom_id": "d", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
        json.dumps({"custom_id": "e", "url": "/v1/embeddings", "body": {}}),
        line("f", stream=True),
        json.dumps({"custom_id": "g", "body": {"model": "good", "messages": []}}),
        json.dumps([1, 2]),
        line("h"),
    ]
    result, out, _ = run(tmp_path, lines)
    assert len(out) == len(lines)
    by_line = {int(r["id"].split("_")[2]): r for r in out}
    codes = {n: (r["error"] or {}).get("code") for n, r in by_line.items()}
    assert codes == {
        1: None, 2: "invalid_json", 3: "empty_line", 4: "missing_custom_id", 5: "duplicate_custom_id",
        6: "model_not_found", 7: "invalid_body", 8: "invalid_method", 9: "invalid_url", 10: "invalid_body",
        11: "invalid_body", 12: "invalid_line", 13: None,
    }
    for n, r in by_line.items():
        if r["error"]:
            assert r["error"]["message"].startswith(f"line {n}: ") and r["response"] is None
    assert "temperature" in by_line[7]["error"]["message"]
    ok = by_line[1]
    assert ok["custom_id"] == "a" and ok["response"]["status_code"] == 200
    body = ok["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "echo hi"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (3, 2, 5)
    assert result.succeeded == 2 and result.invalid == 11


def test_failed_calls_get_error_records(tmp_path):
    models = {"good": FakeModel("good", fail_ids={"b"}), "flaky": FakeModel("flaky")}
    result, out, _ = run(tmp_path, [line("a"), line("b")], models)
    errors = [r for r in out if r["error"]]
    assert [r["custom_id"] for r in errors] == ["b"]
    assert errors[0]["error"] == {"code": "provider_unavailable", "message": "good: 503 after retries"}
    assert result.failed == 1 and result.succeeded == 1


def test_rerun_resumes_and_skips_what_is_done(tmp_path):
    lines = [line(f"id{i}") for i in range(20)] + ["garbage"]
    run(tmp_path, lines)
    result, out, models = run(tmp_path, lines)
    assert models["good"].calls == []
    assert result.skipped == 21 and len(out) == 21


def test_a_torn_last_line_is_cut_and_its_request_run_again(tmp_path):
    lines = [line(f"id{i}") for i in range(5)]
    run(tmp_path, lines)
    out = tmp_path / "out.jsonl"
    kept = out.read_text().splitlines()[:3]
    out.write_text("\n".join(kept) + "\n" + '{"id": "batch_req_4_x", "custom_')  # a crash mid-write
    result, records_after, models = run(tmp_path, lines)
    assert len(models["good"].calls) == 2
    assert sorted(r["custom_id"] for r in records_after) == [f"id{i}" for i in range(5)]


def test_retry_errors_runs_only_the_failed_lines_again(tmp_path):
    lines = [line("a"), line("b"), line("c")]
    run(tmp_path, lines, {"good": FakeModel("good", fail_ids={"b"}), "flaky": FakeModel("flaky")})
    result, out, models = run(tmp_path, lines, retry_errors=True)
    assert models["good"].calls == ["b"]
    assert sorted(r["custom_id"] for r in out) == ["a", "b", "c"] and not any(r["error"] for r in out)


def test_route_overrides_the_model_of_every_line(tmp_path):
    result, out, models = run(tmp_path, [line("a", model="good"), line("b", model="ghost")], route="flaky")
    assert len(models["flaky"].calls) == 2 and not models["good"].calls
    assert all(r["response"]["body"]["model"] == "flaky" for r in out)


def test_work_in_flight_is_bounded(tmp_path):
    _, _, models = run(tmp_path, [line(f"id{i}") for i in range(200)], max_in_flight=7)
    assert models["good"].peak <= 7


def test_summary_per_model_and_provider(tmp_path):
    result, _, _ = run(tmp_path, [line("a"), line("b", model="flaky"), line("c")])
    path = write_summary(result, tmp_path / "out.jsonl")
    assert path == summary_path(tmp_path / "out.jsonl") == tmp_path / "out.summary.json"
    summary = json.loads(path.read_text())
    assert summary["by_model"]["good"]["requests"] == 2
    assert summary["by_provider"]["flaky"]["cost"] == 0.5
    assert summary["cost"] == pytest.approx(1.5)


def test_missing_input_is_a_clear_error(tmp_path):
    from orchestray.errors import OrchestrayError

    with pytest.raises(OrchestrayError, match="no such input file"):
        asyncio.run(run_batch(tmp_path / "nope.jsonl", tmp_path / "o.jsonl", dict().__getitem__, lambda n: True))


class RichModel:
    """Answers as a model does when offered tools, a schema, n and logprobs."""

    def __init__(self):
        self.requests = []

    async def complete(self, request):
        from orchestray.messages import Choice, ToolCall

        self.requests.append(request)
        calls = (ToolCall("call_1", request.tools[0].name, '{"a": 2}'),) if request.tools else ()
        content = "" if calls else '{"answer": 4}'
        logprobs = {"content": [{"token": "4", "logprob": -0.1, "bytes": [52], "top_logprobs": []}], "refusal": None} \
            if request.logprobs else None
        more = tuple(Choice(index=i, content=content, tool_calls=calls, logprobs=logprobs,
                            finish_reason="tool_calls" if calls else "stop") for i in range(1, request.n))
        return Completion(content=content, tool_calls=calls, logprobs=logprobs, more_choices=more,
                          finish_reason="tool_calls" if calls else "stop", model="rich", provider="rich",
                          input_tokens=9, output_tokens=3, trace=Span(name="rich"))


def test_lines_with_tools_schemas_n_logprobs_and_images_are_answered_in_full(tmp_path, openai_schemas):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    image = [{"type": "text", "text": "What is 2 + 2?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    lines = [
        line("tools", model="rich", tools=[tool], tool_choice="required", parallel_tool_calls=False),
        line("schema", model="rich", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}),
        line("n", model="rich", n=3, logprobs=True, top_logprobs=1, seed=1, presence_penalty=0.5),
        line("image", model="rich", content=image),
    ]
    model = RichModel()
    result, out, _ = run(tmp_path, lines, models={"rich": model})
    assert result.succeeded == 4 and result.invalid == 0
    by_id = {r["custom_id"]: r["response"]["body"] for r in out}
    for body in by_id.values():
        openai_schemas.check("CreateChatCompletionResponse", body)
    assert by_id["tools"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "add"
    assert json.loads(by_id["schema"]["choices"][0]["message"]["content"]) == {"answer": 4}
    assert len(by_id["n"]["choices"]) == 3 and by_id["n"]["choices"][2]["logprobs"]["content"][0]["token"] == "4"
    sent = {r.request_id: r for r in model.requests}
    assert sent["tools"].tool_choice == "required" and sent["tools"].parallel_tool_calls is False
    assert sent["schema"].response_format.schema == schema
    assert (sent["n"].n, sent["n"].top_logprobs, sent["n"].presence_penalty) == (3, 1, 0.5)
    assert sent["image"].messages[0].images()[0].url.startswith("data:image/png")


def test_the_batch_command_prints_the_summary_and_writes_it_beside_the_output(tmp_path, monkeypatch, capsys):
    import orchestray.actors.batch as driver
    from orchestray.cli import main

    models = {name: FakeModel(name) for name in MODELS}

    def fake_job(input_path, output_path, config, options, address=None, workers=None):
        return asyncio.run(run_batch(input_path, output_path, models.__getitem__, models.__contains__, options))

    monkeypatch.setattr(driver, "run_batch_job", fake_job)
    source = tmp_path / "in.jsonl"
    source.write_text(line("a") + "\n" + line("b", model="nope") + "\n")
    code = main(["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "-q"])
    printed = capsys.readouterr().out
    assert code == 3  # a line failed
    assert "model good" in printed and "2 lines: 1 answered, 0 failed, 1 invalid" in printed
    assert f"summary written to {tmp_path / 'out.summary.json'}" in printed
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["lines"] == 2 and summary["by_model"]["good"]["succeeded"] == 1
