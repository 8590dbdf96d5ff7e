"""Deterministic stand-ins for models and the embedder, so evaluation tests need no engine."""

from __future__ import annotations

import re
from typing import Any

from openft.evals.chat import ChatReply
from openft.evals.examples import EvalExample

SYSTEM = {"role": "system", "content": "Classify the sentiment as positive or negative."}
TRAIN = [
    ("I love this phone", "positive"),
    ("Great battery and a great screen", "positive"),
    ("Terrible support, never again", "negative"),
    ("The screen cracked in a day", "negative"),
    ("Wonderful camera", "positive"),
    ("Awful battery life", "negative"),
]
HELD_OUT = [
    ("I love the camera", "positive"),
    ("Awful screen", "negative"),
    ("Great phone", "positive"),
    ("Terrible battery", "negative"),
]
ANSWERS = dict(TRAIN + HELD_OUT)


def example(text: str, label: str) -> EvalExample:
    return EvalExample(prompt=[SYSTEM, {"role": "user", "content": text}], reference=label)


def train_examples() -> list[EvalExample]:
    return [example(t, label) for t, label in TRAIN]


def held_out_examples() -> list[EvalExample]:
    return [example(t, label) for t, label in HELD_OUT]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


class FakeChat:
    """Prompt tokens = words in the prompt; latency = 1 ms per prompt token + 10 ms.

    Fine-tuned models ("ft:...") answer correctly. The base model copies the answer of the last shot whose
    input shares a word with the question (so retrieval helps), else the last shot's answer, else "neutral".
    """

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail_on = fail_on

    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        self.calls.append((model, messages))
        question = messages[-1]["content"]
        if self.fail_on is not None and self.fail_on in question:
            raise RuntimeError("engine overloaded")
        prompt_tokens = sum(len(words(m["content"])) for m in messages)
        if model.startswith("ft:"):
            text = ANSWERS[question]
        else:
            text = "neutral"
            shots = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(1, len(messages) - 2, 2)]
            for shot_input, shot_answer in shots:
                if set(words(shot_input)) & set(words(question)):
                    text = shot_answer
            if text == "neutral" and shots:
                text = shots[-1][1]
        return ChatReply(text, {"prompt_tokens": prompt_tokens, "completion_tokens": 1}, 0.01 + 0.001 * prompt_tokens)


VOCABULARY = sorted({w for text in ANSWERS for w in words(text)})


def fake_embed(texts):
    """Bag-of-words vectors: texts sharing words are near each other."""
    return [[float(w in words(text)) for w in VOCABULARY] for text in texts]
