"""Fine-tuned and checkpoint model names in OpenAI's shape."""

from __future__ import annotations

import pytest

from openft.models.names import ParsedModelName, checkpoint_model_name, fine_tuned_model_name, parse_model_name


def test_fine_tuned_name_has_openai_shape_and_is_stable_per_job():
    name = fine_tuned_model_name("smollm2-135m-instruct", "org-acme", "support-bot", "ftjob-abc123")
    prefix, base, org, suffix, short_id = name.split(":")
    assert (prefix, base, org, suffix) == ("ft", "smollm2-135m-instruct", "org-acme", "support-bot")
    assert len(short_id) == 8 and short_id.isalnum()
    assert name == fine_tuned_model_name("smollm2-135m-instruct", "org-acme", "support-bot", "ftjob-abc123")
    other_job = fine_tuned_model_name("smollm2-135m-instruct", "org-acme", "support-bot", "ftjob-abc124")
    assert other_job != name


def test_no_suffix_leaves_the_segment_empty():
    name = fine_tuned_model_name("base", "org", None, "ftjob-1")
    assert name.startswith("ft:base:org::") and len(name.split(":")[-1]) == 8
    assert fine_tuned_model_name("base", "org", "", "ftjob-1") == name


def test_checkpoint_name_appends_step():
    name = fine_tuned_model_name("base", "org", "s", "ftjob-1")
    assert checkpoint_model_name(name, 120) == f"{name}:ckpt-step-120"
    with pytest.raises(ValueError, match="not a fine-tuned model name"):
        checkpoint_model_name("base", 1)
    with pytest.raises(ValueError, match="not a fine-tuned model name"):
        checkpoint_model_name(checkpoint_model_name(name, 1), 2)


def test_parse_round_trips_generated_names():
    name = fine_tuned_model_name("HuggingFaceTB/SmolLM2-135M", "org-1", "", "ftjob-9")
    parsed = parse_model_name(name)
    assert parsed == ParsedModelName(
        base="HuggingFaceTB/SmolLM2-135M", fine_tuned=name, checkpoint_step=None, org="org-1", suffix=""
    )
    assert parsed.is_fine_tuned
    checkpoint = parse_model_name(checkpoint_model_name(name, 50))
    assert (checkpoint.base, checkpoint.fine_tuned, checkpoint.checkpoint_step) == (
        "HuggingFaceTB/SmolLM2-135M",
        name,
        50,
    )


def test_parse_base_names():
    for base in ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "gpt-4o-mini"):
        parsed = parse_model_name(base)
        assert parsed == ParsedModelName(base=base)
        assert not parsed.is_fine_tuned


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ft:base:org:suffix", "4 ':'-separated parts"),
        ("ft:base:org:suffix:abc:ckpt-step-x", "ckpt-step-<number>"),
        ("ft:base:org:suffix:abc:step-3", "ckpt-step-<number>"),
        ("ft::org:suffix:abcd1234", "base model is empty"),
        ("ft:base::suffix:abcd1234", "organization is empty"),
        ("ft:base:org:suffix:", "id ''"),
        ("ft:a:b:c:d:e:f", "7 ':'-separated parts"),
    ],
)
def test_malformed_fine_tuned_names_raise_clear_errors(name, message):
    with pytest.raises(ValueError, match="malformed fine-tuned model name") as error:
        parse_model_name(name)
    assert message in str(error.value)
    assert repr(name) in str(error.value)


def test_segments_with_colons_are_rejected():
    with pytest.raises(ValueError, match="suffix 'a:b' must not contain ':'"):
        fine_tuned_model_name("base", "org", "a:b", "ftjob-1")
    with pytest.raises(ValueError, match="must not be empty"):
        fine_tuned_model_name("base", "", "s", "ftjob-1")
    with pytest.raises(ValueError, match="must not be empty"):
        parse_model_name("")
