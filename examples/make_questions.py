"""Write examples/questions.jsonl (arithmetic and multiple-choice questions with known answers)
and examples/extract.jsonl (the same kind of questions as a json_schema structured-extraction batch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestray.simulated import arithmetic_questions, choice_questions

MODELS = ["sim-small", "sim-medium", "sim-large", "cheap", "vote", "fast", "reliable"]


def main(n: int = 240, path: str = str(Path(__file__).with_name("questions.jsonl"))) -> None:
    questions = arithmetic_questions(n // 2, seed=7) + choice_questions(n - n // 2, seed=8)
    with open(path, "w") as f:
        for i, q in enumerate(questions):
            line = {
                "custom_id": f"q{i:05d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODELS[i % len(MODELS)],
                    "messages": [{"role": "user", "content": q.prompt}],
                    "max_tokens": 64,
                },
            }
            f.write(json.dumps(line) + "\n")
    print(f"wrote {len(questions)} lines to {path}")


# What each line of the extraction batch asks for: the answer and the kind of question. (No
# free-text field: an ensemble votes over the whole object, and prose never agrees.)
EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "description": "the number, or the letter of the right option"},
        "kind": {"type": "string", "enum": ["arithmetic", "multiple_choice"]},
    },
    "required": ["answer", "kind"],
    "additionalProperties": False,
}


def extraction(n: int = 24, path: str = str(Path(__file__).with_name("extract.jsonl"))) -> None:
    questions = arithmetic_questions(n // 2, seed=17) + choice_questions(n - n // 2, seed=18)
    with open(path, "w") as f:
        for i, q in enumerate(questions):
            body = {
                "model": ["sim-medium", "vote"][i % 2],
                "messages": [
                    {"role": "system", "content": "Answer the question and classify it."},
                    {"role": "user", "content": q.prompt},
                ],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "extraction", "schema": EXTRACTION_SCHEMA, "strict": True}},
                "max_completion_tokens": 128,
            }
            f.write(json.dumps({"custom_id": f"x{i:03d}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
    print(f"wrote {len(questions)} lines to {path}")


if __name__ == "__main__":
    main(*(int(a) if i == 0 else a for i, a in enumerate(sys.argv[1:])))
    extraction()
