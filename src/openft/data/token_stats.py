"""Token counts with the base model's own tokenizer and chat template, exactly as training will see them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openft.data.formats import Format
from openft.data.normalize import conversation_for
from openft.models.chat_template import IGNORE_INDEX, encode_chat, encode_completion


@dataclass(frozen=True)
class ExampleTokens:
    total: int
    trained: int  # labels != -100: the assistant tokens the loss sees


def count_tokens(tokenizer: Any, example: dict, fmt: Format, template_options: dict[str, Any]) -> ExampleTokens:
    """Render and tokenize one valid example; raises if the template cannot render it.
    `template_options` go to encode_chat (the base model's `default_system_prompt`)."""
    if fmt == "completion":
        encoded = encode_completion(tokenizer, example["prompt"], example["completion"])
    else:
        conversation = conversation_for(example, fmt)
        encoded = encode_chat(tokenizer, conversation.messages, conversation.tools, **template_options)
    trained = sum(1 for label in encoded.labels if label != IGNORE_INDEX)
    return ExampleTokens(total=len(encoded.input_ids), trained=trained)


def tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
