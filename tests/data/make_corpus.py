"""Regenerates tests/data/corpus: good files per format and one bad file per problem code.

Run: .venv/bin/python tests/data/make_corpus.py (the files are checked in; this documents how they were made).
"""

import json
from pathlib import Path

OUT = Path(__file__).parent / "corpus"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def chat(i):
    return {
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": str(i + i)},
        ]
    }


def dpo(i):
    return {
        "input": {"messages": [{"role": "user", "content": f"Say hello to person {i}."}]},
        "preferred_output": [{"role": "assistant", "content": f"Hello, person {i}!"}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }


def completion(i):
    return {"prompt": f"Q: {i} times 2?\nA:", "completion": f" {i * 2}"}


def call(args='{"city": "Paris"}', name="get_weather", cid="call_1"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def tool_chat(calls, reply_id="call_1", tools=TOOLS):
    example = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": reply_id, "content": "Sunny, 21 C"},
            {"role": "assistant", "content": "Sunny and 21 C."},
        ]
    }
    if tools is not None:
        example["tools"] = tools
    return example


def user_assistant(user_message):
    return {"messages": [user_message, {"role": "assistant", "content": "ok"}]}


def write(name, lines):
    data = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    (OUT / name).write_bytes(data)


good_chat = [chat(i) for i in range(8)]
good_chat.append({**tool_chat([call()]), "parallel_tool_calls": False})
good_chat.append(
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there, how can I help?", "weight": 0},
            {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]},
            {"role": "assistant", "content": "Why did the chicken cross the road?", "weight": 1},
        ]
    }
)
good_chat.append(
    {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {"role": "function", "name": "get_weather", "content": "Snow"},
            {"role": "assistant", "content": "It snows in Oslo."},
        ],
        "functions": [TOOLS[0]["function"]],
    }
)
write("good_chat.jsonl", good_chat)
write("good_dpo.jsonl", [dpo(i) for i in range(10)])
write("good_completion.jsonl", [completion(i) for i in range(10)])

chats = [chat(i) for i in range(10)]
dpos = [dpo(i) for i in range(10)]
completions = [completion(i) for i in range(10)]


def bad_dpo_output(**kw):
    return {**dpo(99), **kw}


# code -> (lines, expected line, expected field, options)
CASES = {
    "data_type": (chats + [[1, 2]], 11, None, {}),
    "missing_messages_list": (chats + [{"messages": "Hello"}], 11, "messages", {}),
    "message_missing_key": (chats + [user_assistant({"content": "hi"})], 11, "messages[0].role", {}),
    "message_unrecognized_key": (
        chats + [user_assistant({"role": "user", "content": "hi", "mood": "happy"})],
        11,
        "messages[0].mood",
        {},
    ),
    "unrecognized_role": (
        chats + [{"messages": [{"role": "narrator", "content": "Once"}] + chat(0)["messages"]}],
        11,
        "messages[0].role",
        {},
    ),
    "missing_content": (chats + [user_assistant({"role": "user"})], 11, "messages[0].content", {}),
    "example_missing_assistant_message": (chats + [{"messages": chat(0)["messages"][:2]}], 11, "messages", {}),
    "empty_file": ([], None, None, {}),
    "invalid_utf8": (chats + [b'{"messages": "caf\xe9"}'], 11, None, {}),
    "invalid_json": (chats + [b'{"messages": [{"role": "user", "content": "hi"},]}'], 11, None, {}),
    "line_too_long": (
        chats + [user_assistant({"role": "user", "content": "x" * 500})],
        11,
        None,
        {"max_line_bytes": 400},
    ),
    "blank_line": (chats[:5] + [b""] + chats[5:], 6, None, {}),
    "mixed_formats": (chats + [completion(1)], 11, None, {}),
    "too_few_examples": (chats[:3], None, None, {}),
    "unrecognized_key": (chats + [{**chat(42), "metadata": {"source": "crm"}}], 11, "metadata", {}),
    "invalid_content_type": (chats + [user_assistant({"role": "user", "content": 42})], 11, "messages[0].content", {}),
    "empty_content": (
        chats + [{"messages": [{"role": "system", "content": ""}] + chat(42)["messages"][1:]}],
        11,
        "messages[0].content",
        {},
    ),
    "invalid_weight": (
        chats + [{"messages": chat(42)["messages"][:2] + [{"role": "assistant", "content": "84", "weight": 2}]}],
        11,
        "messages[2].weight",
        {},
    ),
    "empty_assistant_mask": (
        chats + [{"messages": chat(42)["messages"][:2] + [{"role": "assistant", "content": "84", "weight": 0}]}],
        11,
        "messages",
        {},
    ),
    "invalid_tool_definition": (
        chats + [tool_chat([call()], tools=[{"type": "function", "function": {"name": "get weather!"}}])],
        11,
        "tools[0].function.name",
        {},
    ),
    "invalid_parallel_tool_calls": (
        chats + [{**tool_chat([call()]), "parallel_tool_calls": "no"}],
        11,
        "parallel_tool_calls",
        {},
    ),
    "invalid_tool_call": (
        chats + [tool_chat([{**call(), "type": "code_interpreter"}])],
        11,
        "messages[1].tool_calls[0].type",
        {},
    ),
    "tool_call_arguments_not_string": (
        chats + [tool_chat([call(args={"city": "Paris"})])],
        11,
        "messages[1].tool_calls[0].function.arguments",
        {},
    ),
    "tool_call_arguments_invalid_json": (
        chats + [tool_chat([call(args="{city: Paris}")])],
        11,
        "messages[1].tool_calls[0].function.arguments",
        {},
    ),
    "tool_call_unknown_function": (
        chats + [tool_chat([call(name="get_time")])],
        11,
        "messages[1].tool_calls[0].function.name",
        {},
    ),
    "tool_reply_without_call": (chats + [tool_chat([call()], reply_id="call_9")], 11, "messages[2].tool_call_id", {}),
    "last_message_not_assistant": (
        chats + [{"messages": chat(42)["messages"] + [{"role": "user", "content": "Thanks"}]}],
        11,
        "messages[3]",
        {},
    ),
    "dpo_missing_input": (
        dpos
        + [
            {
                "messages": [{"role": "user", "content": "Hi"}],
                "preferred_output": [{"role": "assistant", "content": "Hello!"}],
                "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
            }
        ],
        11,
        "input",
        {},
    ),
    "dpo_missing_output": (
        dpos + [{k: v for k, v in dpo(99).items() if k != "non_preferred_output"}],
        11,
        "non_preferred_output",
        {},
    ),
    "dpo_output_not_assistant": (
        dpos + [bad_dpo_output(preferred_output=[{"role": "user", "content": "Hi"}])],
        11,
        "preferred_output[0].role",
        {},
    ),
    "dpo_multiple_outputs": (
        dpos
        + [
            bad_dpo_output(
                preferred_output=[{"role": "assistant", "content": "Hi"}, {"role": "assistant", "content": "Again"}]
            )
        ],
        11,
        "preferred_output",
        {},
    ),
    "dpo_identical_outputs": (
        dpos + [bad_dpo_output(non_preferred_output=dpo(99)["preferred_output"])],
        11,
        "non_preferred_output",
        {},
    ),
    "missing_prompt": (completions + [{"prompt": 7, "completion": " 14"}], 11, "prompt", {}),
    "missing_completion": (completions + [{"prompt": "Q: 7 times 2?\nA:", "completion": ""}], 11, "completion", {}),
    "example_too_long": (
        chats + [user_assistant({"role": "user", "content": "word " * 200})],
        11,
        None,
        {"context_length": 100, "needs_tokenizer": True},
    ),
    "duplicate_example": (chats + [chat(0)], 11, None, {}),
}
manifest = {}
for code, (lines, line, field, options) in CASES.items():
    write(f"{code}.jsonl", lines)
    manifest[code] = {"file": f"{code}.jsonl", "line": line, "field": field, "options": options}
(OUT / "expected.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(len(manifest))
