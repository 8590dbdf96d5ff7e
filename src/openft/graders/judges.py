"""Judges for score_model / label_model graders: a model openft serves, called through a serving backend.

`backend_judge(chat_completion)` turns any OpenAI-shaped `chat_completion(body) -> dict` (the server's local
backend, a worker's engines, or an OpenAI-compatible endpoint) into a Judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openft.graders.model_graders import Judge, JudgeReply


def backend_judge(chat_completion: Callable[[dict[str, Any]], dict[str, Any]]) -> Judge:
    def judge(model: str, messages: list[dict[str, Any]], sampling: dict[str, Any]) -> JudgeReply:
        body = {"model": model, "messages": messages, "temperature": 0, **sampling,
                "response_format": {"type": "json_object"}}  # fmt: skip
        completion = chat_completion(body)
        message = ((completion.get("choices") or [{}])[0]).get("message") or {}
        return JudgeReply(message.get("content") or "", completion.get("usage") or {}, message.get("refusal"))

    return judge
