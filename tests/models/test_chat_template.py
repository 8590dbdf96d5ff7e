"""The shared chat renderer: text, training labels, generation prompts and tool-call parsing."""

from __future__ import annotations

import json

import pytest

from openft.models.chat_template import (
    CHAT_TEMPLATE_JINJA,
    DEFAULT_SYSTEM_PROMPT,
    IGNORE_INDEX,
    EncodedChat,
    chat_template_jinja,
    encode_chat,
    encode_completion,
    encode_prompt,
    iter_trained_spans,
    parse_assistant_output,
    render_prompt,
    stop_token_ids,
)

# SmolLM2-135M-Instruct's own template, as stored in the bundled GGUF.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _call(name: str, arguments: dict, call_id: str = "call_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


TOOL_CONVERSATION = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "Weather in Paris and Zürich?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            _call("get_weather", {"city": "Paris"}),
            _call("get_weather", {"city": "Zürich", "unit": "c"}, "call_2"),
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 17}'},
    {"role": "assistant", "content": "Paris is 21°C, Zürich 17°C."},
]

TYPICAL_CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is 12 * 34?\nShow your work."},
        {"role": "assistant", "content": "12 × 34 = 408.\n\nDonc, la réponse est 408."},
        {"role": "user", "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "in code?"}]},
        {"role": "assistant", "content": "```python\nprint(12 * 34)  # 408\n```"},
    ],
    [
        {"role": "user", "content": "Classify: 'great product!!' "},
        {"role": "assistant", "content": "positive", "weight": 0},
        {"role": "user", "content": "Classify: 'broke in a day'"},
        {"role": "assistant", "content": "negative", "weight": 1},
    ],
    TOOL_CONVERSATION,
]


def _trained_texts(tokenizer, encoded: EncodedChat) -> list[str]:
    return [tokenizer.decode(encoded.input_ids[start:end]) for start, end in iter_trained_spans(encoded)]


def test_plain_chat_renders_like_smollm2s_own_template(smollm2_tokenizer):
    messages = TYPICAL_CONVERSATIONS[0]
    for with_system in (False, True):
        chat = ([{"role": "system", "content": "Be brief."}] if with_system else []) + messages
        expected = smollm2_tokenizer.apply_chat_template(
            chat, chat_template=SMOLLM2_TEMPLATE, tokenize=False, add_generation_prompt=True
        )
        assert render_prompt(chat) == expected


def test_default_system_prompt_is_a_parameter():
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompt(messages).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n")
    assert render_prompt(messages, default_system_prompt="Be terse.").startswith(
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )
    assert render_prompt(messages, default_system_prompt=None) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    own_system = [{"role": "system", "content": "Mine."}, *messages]
    assert DEFAULT_SYSTEM_PROMPT not in render_prompt(own_system)


def test_tools_render_in_the_system_message_and_calls_as_blocks():
    text = render_prompt(TOOL_CONVERSATION, tools=[WEATHER_TOOL], add_generation_prompt=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou answer weather questions.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(WEATHER_TOOL, ensure_ascii=False)}\n</tools>" in system
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in system
    assert (
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}\n</tool_call>'
        "<|im_end|>\n"
    ) in text
    assert '<|im_start|>tool\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n' in text
    assert text.endswith("<|im_start|>assistant\nParis is 21°C, Zürich 17°C.<|im_end|>\n")


def test_content_parts_and_null_content():
    parts = [{"type": "text", "text": "first"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "2nd"}]
    assert "<|im_start|>user\nfirst\n2nd<|im_end|>" in render_prompt([{"role": "user", "content": parts}])
    text = render_prompt([{"role": "user", "content": "x"}, {"role": "assistant", "content": None}], None, False)
    assert text.endswith("<|im_start|>assistant\n<|im_end|>\n")


def test_assistant_content_before_tool_calls_and_string_or_object_arguments_render_the_same():
    as_string = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [_call("get_weather", {"city": "Oslo"})],
    }
    as_object = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    }
    rendered = render_prompt([as_string], default_system_prompt=None, add_generation_prompt=False)
    assert rendered == render_prompt([as_object], default_system_prompt=None, add_generation_prompt=False)
    assert (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in rendered
    )


def test_labels_cover_exactly_trained_assistant_messages_and_their_im_end(smollm2_tokenizer):
    encoded = encode_chat(smollm2_tokenizer, TYPICAL_CONVERSATIONS[2])
    assert len(encoded.input_ids) == len(encoded.labels)
    # the weight-0 answer "positive" is context only; "negative" and its <|im_end|> are trained
    assert _trained_texts(smollm2_tokenizer, encoded) == ["negative<|im_end|>"]
    for label, token in zip(encoded.labels, encoded.input_ids, strict=True):
        assert label in (IGNORE_INDEX, token)


def test_every_assistant_message_is_trained_by_default_including_tool_calls(smollm2_tokenizer):
    encoded = encode_chat(smollm2_tokenizer, TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert _trained_texts(smollm2_tokenizer, encoded) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}\n</tool_call>'
        "<|im_end|>",
        "Paris is 21°C, Zürich 17°C.<|im_end|>",
    ]
    # the assistant header is never trained: each span starts right after it
    for start, _ in iter_trained_spans(encoded):
        assert smollm2_tokenizer.decode(encoded.input_ids[:start]).endswith("<|im_start|>assistant\n")


def test_all_weight_zero_leaves_no_trained_tokens(smollm2_tokenizer):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]
    assert encode_chat(smollm2_tokenizer, messages).num_trained_tokens == 0


@pytest.mark.parametrize("messages", TYPICAL_CONVERSATIONS)
def test_segment_encoding_equals_encoding_the_rendered_text(smollm2_tokenizer, messages):
    tools = [WEATHER_TOOL] if messages is TOOL_CONVERSATION else None
    encoded = encode_chat(smollm2_tokenizer, messages, tools=tools)
    whole = smollm2_tokenizer(render_prompt(messages, tools, add_generation_prompt=False), add_special_tokens=False)
    assert encoded.input_ids == whole["input_ids"]


@pytest.mark.parametrize("messages", TYPICAL_CONVERSATIONS)
def test_generation_prompt_is_a_prefix_of_the_training_sequence(smollm2_tokenizer, messages):
    """Training and serving see the same tokens up to the last assistant answer."""
    tools = [WEATHER_TOOL] if messages is TOOL_CONVERSATION else None
    prompt_ids = encode_prompt(smollm2_tokenizer, messages[:-1], tools=tools)
    assert smollm2_tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    full = encode_chat(smollm2_tokenizer, messages, tools=tools)
    assert full.input_ids[: len(prompt_ids)] == prompt_ids
    assert full.labels[len(prompt_ids)] != IGNORE_INDEX  # the answer's first token is trained


def test_leading_whitespace_answer_keeps_the_generation_boundary(smollm2_tokenizer):
    """The one documented case where segments differ from whole-text encoding: the segments win."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  indented"}]
    prompt_ids = encode_prompt(smollm2_tokenizer, messages[:1])
    assert encode_chat(smollm2_tokenizer, messages).input_ids[: len(prompt_ids)] == prompt_ids


def test_jinja_template_renders_the_same_text_and_trains_the_same_tokens(smollm2_tokenizer):
    # transformers and vLLM hand tool-call arguments to templates as objects
    messages = json.loads(json.dumps(TOOL_CONVERSATION))
    for message in messages:
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    messages[-1]["weight"] = 0
    for add_generation_prompt in (True, False):
        text = smollm2_tokenizer.apply_chat_template(
            messages,
            tools=[WEATHER_TOOL],
            chat_template=CHAT_TEMPLATE_JINJA,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        assert text == render_prompt(TOOL_CONVERSATION, [WEATHER_TOOL], add_generation_prompt)
    rendered = smollm2_tokenizer.apply_chat_template(
        messages,
        tools=[WEATHER_TOOL],
        chat_template=CHAT_TEMPLATE_JINJA,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    weighted = [*TOOL_CONVERSATION[:-1], {**TOOL_CONVERSATION[-1], "weight": 0}]
    encoded = encode_chat(smollm2_tokenizer, weighted, tools=[WEATHER_TOOL])
    assert rendered["input_ids"] == encoded.input_ids
    assert rendered["assistant_masks"] == [int(label != IGNORE_INDEX) for label in encoded.labels]


def test_jinja_template_follows_the_default_system_prompt(smollm2_tokenizer):
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    for default in (DEFAULT_SYSTEM_PROMPT, 'Custom "quoted" prompt\nline two', None):
        text = smollm2_tokenizer.apply_chat_template(
            messages, chat_template=chat_template_jinja(default), tokenize=False, add_generation_prompt=True
        )
        assert text == render_prompt(messages, default_system_prompt=default)


def test_tool_calls_round_trip_through_render_and_parse():
    calls = TOOL_CONVERSATION[2]["tool_calls"]
    rendered = render_prompt([TOOL_CONVERSATION[2]], default_system_prompt=None, add_generation_prompt=False)
    generated = rendered.removeprefix("<|im_start|>assistant\n").removesuffix("<|im_end|>\n")
    content, parsed = parse_assistant_output(generated)
    assert content is None
    assert [call["function"]["name"] for call in parsed] == ["get_weather", "get_weather"]
    for original, call in zip(calls, parsed, strict=True):
        assert json.loads(call["function"]["arguments"]) == json.loads(original["function"]["arguments"])
        assert call["type"] == "function"
        assert call["id"].startswith("call_") and len(call["id"]) > 10
    assert parsed[0]["id"] != parsed[1]["id"]


def test_parse_keeps_text_around_calls_and_malformed_blocks_as_content():
    text = 'Checking.\n<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>'
    content, calls = parse_assistant_output(text)
    assert content == "Checking."
    assert calls[0]["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}

    broken = "<tool_call>\n{not json}\n</tool_call>"
    assert parse_assistant_output(broken) == (broken, [])
    assert parse_assistant_output('<tool_call>\n{"arguments": {}}\n</tool_call>')[1] == []  # no name
    unterminated = 'Sure <tool_call>\n{"name": "f", "arguments": {}}'
    assert parse_assistant_output(unterminated) == (unterminated, [])

    mixed = broken + '\n<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
    content, calls = parse_assistant_output(mixed)
    assert content == broken
    assert calls[0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert parse_assistant_output("plain answer") == ("plain answer", [])


def test_encode_completion_trains_completion_and_eos(smollm2_tokenizer):
    encoded = encode_completion(smollm2_tokenizer, "Translate: cat ->", " chat")
    trained = [token for token in encoded.labels if token != IGNORE_INDEX]
    assert trained[-1] == smollm2_tokenizer.eos_token_id
    assert smollm2_tokenizer.decode(trained) == " chat<|im_end|>"
    prompt_len = len(smollm2_tokenizer("Translate: cat ->", add_special_tokens=False)["input_ids"])
    assert encoded.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len


def test_stop_token_ids_are_im_end_and_eos(smollm2_tokenizer):
    assert stop_token_ids(smollm2_tokenizer) == [smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert smollm2_tokenizer.eos_token_id in stop_token_ids(smollm2_tokenizer)
