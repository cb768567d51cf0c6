"""A simulated LLM with known truth, so orchestration patterns can be judged on correctness and cost.

Pure and deterministic: no sleeping, no I/O. Every draw comes from an RNG derived from the model's
seed and name and the request (prompt, `seed`, `temperature`) plus an optional `sample` index, so
the same request always gets the same answer and latency while `seed=i` gives independent draws.

Whether a draw is right depends on the question's difficulty (shared by every model: hard
questions are hard for all) and on per-draw noise, which dominates so that voting over samples
pays. Answers end with a line `Answer: <value>`, followed by `Confidence: <0..1>` when any message
asks for a confidence; confidence is informative (high when right, low when wrong).

Questions are handled by skills tried in order (`SKILLS`): the Game of 24, the reach-a-target
game of `orchestray.tasks.reach`, word problems, classification into named labels, summaries,
multiple choice, arithmetic, generic. Word
problems (`word_questions`) are answered as real models answer, in one of `PHRASINGS` drawn per
sample (a bold number, a box, JSON, a final line after reasoning, ...), confidence in the same
style, so extraction and voting are tried on free-form text. A task-specific skill is a callable `(Attempt) -> str | None` inserted ahead
of the generic one (ahead of arithmetic, too, when its prompts contain sample arithmetic).

Beyond text the model speaks the rest of the chat surface, so agent loops run end to end:
- offered `tools`, it calls the one that fits the question (by name and description; any tool
  when `tool_choice` is "required", the named one when named, none for "none"), its arguments
  filled from the tool's schema and the question; arithmetic goes to a calculator-like tool
  with the right expression or operands at the model's accuracy;
- after a tool result (a `tool` message after the last user turn) it answers from the result;
- `response_format` json_object gets a JSON object, json_schema an instance of the schema with
  the answer in the field that fits (`answer`, `result`, an enum holding it, ...);
- `n` gives independent choices (`answers`), `logprobs` gives OpenAI-shaped token logprobs,
  and images count in the input tokens as `ChatRequest.prompt_tokens` counts them.
"""

from orchestray.simulated._arithmetic import evaluate, find_expression
from orchestray.simulated._model import (
    DEFAULT_PROFILES,
    SUPPORTED_FIELDS,
    SimAnswer,
    SimProfile,
    SimulatedModel,
    difficulty,
    stream_pieces,
)
from orchestray.simulated._questions import Question, arithmetic_questions, choice_questions, word_questions
from orchestray.simulated._skills import (
    PHRASINGS,
    SKILLS,
    Attempt,
    Skill,
    arithmetic_skill,
    choice_skill,
    classify_skill,
    game24_skill,
    generic_skill,
    reach_skill,
    summarize_skill,
    word_problem_skill,
)

__all__ = [
    "SimProfile",
    "SimAnswer",
    "stream_pieces",
    "SimulatedModel",
    "DEFAULT_PROFILES",
    "SUPPORTED_FIELDS",
    "Attempt",
    "Skill",
    "SKILLS",
    "choice_skill",
    "arithmetic_skill",
    "generic_skill",
    "game24_skill",
    "reach_skill",
    "classify_skill",
    "summarize_skill",
    "Question",
    "arithmetic_questions",
    "choice_questions",
    "word_questions",
    "word_problem_skill",
    "PHRASINGS",
    "evaluate",
    "find_expression",
    "difficulty",
]
