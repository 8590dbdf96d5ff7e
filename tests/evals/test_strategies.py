import json

import pytest

from openft.evals.examples import EvalDataError, load_examples
from openft.evals.strategies import NearestExamples, build_messages, fixed_shots, plan_strategies, with_shots
from tests.evals.fakes import SYSTEM, example, fake_embed, held_out_examples, train_examples


def test_zero_shot_and_fine_tuned_send_the_example_prompt_unchanged():
    ex = example("Great phone", "positive")
    for strategy in plan_strategies(["zero-shot", "fine-tuned"], "base", ["ft:base:org::abc"]):
        assert build_messages(strategy, ex, k=3) == [SYSTEM, {"role": "user", "content": "Great phone"}]


def test_few_shot_puts_k_fixed_training_examples_as_prior_turns_after_the_system_prompt():
    train = train_examples()
    shots = fixed_shots(train, 2, seed=0)
    assert len(shots) == 2 and fixed_shots(train, 2, seed=0) == shots  # same shots for every example and rerun
    (few_shot,) = plan_strategies(["few-shot"], "base", [])
    for ex in held_out_examples():
        messages = build_messages(few_shot, ex, k=2, shots=shots)
        assert messages[0] == SYSTEM
        assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
        assert messages[1]["content"] == shots[0].user_input and messages[2]["content"] == shots[0].reference
        assert messages[-1]["content"] == ex.user_input
        assert sum(m["role"] == "system" for m in messages) == 1  # the shots' own system prompts are dropped


def test_k_larger_than_the_training_set_uses_every_training_example():
    assert len(fixed_shots(train_examples(), 50)) == len(train_examples())
    assert fixed_shots(train_examples(), 0) == []


def test_retrieval_picks_the_nearest_training_examples_nearest_last():
    retriever = NearestExamples(train_examples(), fake_embed)
    nearest = retriever.nearest("Awful battery", 2)
    assert nearest[0].user_input == "Awful battery life"  # shares both words
    (retrieval,) = plan_strategies(["retrieval-few-shot"], "base", [])
    messages = build_messages(retrieval, example("Awful battery", "negative"), k=2, retriever=retriever)
    assert messages[-3]["content"] == "Awful battery life"  # nearest sits right before the question
    assert messages[-2]["content"] == "negative"


def test_retrieval_never_shows_an_example_its_own_answer():
    retriever = NearestExamples(train_examples(), fake_embed)
    picked = retriever.nearest("I love this phone", 3, exclude_text="I love this phone")
    assert "I love this phone" not in [p.user_input for p in picked] and len(picked) == 3


def test_with_shots_keeps_multi_turn_examples_in_order():
    shot = example("Wonderful camera", "positive")
    messages = with_shots(example("Great phone", "positive"), [shot])
    assert [m["content"] for m in messages] == [SYSTEM["content"], "Wonderful camera", "positive", "Great phone"]


def test_plan_names_each_fine_tuned_model_and_checkpoint():
    plan = plan_strategies(
        ["zero-shot", "fine-tuned", "external"], "base", ["ft:a", "ft:a:ckpt-step-2"], external_model="gpt-4o-mini"
    )
    assert [s.name for s in plan] == ["zero-shot", "ft:a", "ft:a:ckpt-step-2", "external:gpt-4o-mini"]
    assert [s.fine_tuned for s in plan] == [False, True, True, False]
    with pytest.raises(ValueError, match="fine-tuned model"):
        plan_strategies(["fine-tuned"], "base", [])
    with pytest.raises(ValueError, match="unknown strategies"):
        plan_strategies(["many-shot"], "base", [])


def test_load_examples_uses_the_last_assistant_message_as_reference(tmp_path):
    path = tmp_path / "eval.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "a", "weight": 0},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "b"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "parts"}]},
                {"role": "assistant", "content": "c"},
            ]
        },
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    first, second = load_examples(path)
    assert first.reference == "b" and first.user_input == "again"
    assert first.prompt[1] == {"role": "assistant", "content": "a"}  # training-only "weight" dropped
    assert second.user_input == "parts"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1: not valid JSON"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "line 1: no assistant message"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}', "no text"),
        ('{"prompt": "x", "completion": "y"}', "chat format"),
    ],
)
def test_unusable_lines_are_reported_by_line_number(tmp_path, line, message):
    path = tmp_path / "eval.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EvalDataError, match=message):
        load_examples(path)
