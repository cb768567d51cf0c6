"""Write examples/questions.jsonl: arithmetic and multiple-choice questions with known answers."""

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


if __name__ == "__main__":
    main(*(int(a) if i == 0 else a for i, a in enumerate(sys.argv[1:])))
