"""RAG as an evaluation strategy: documents cut into passages, the right passage retrieved, and the RAG rows in
the results, the report and the advice (deterministic fakes; the real model is in test_rag_real_model.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from openft.evals.advisor import AdviceSettings, advise
from openft.evals.chat import ChatReply
from openft.evals.chunking import Chunk, DocumentError, chunk_documents, chunk_text, paragraphs, read_documents
from openft.evals.examples import EvalExample
from openft.evals.rag import PassageIndex, with_passages
from openft.evals.report import build_report, to_html, to_markdown
from openft.evals.runner import EvalSettings, run_evaluation

FT = "ft:base:acme::rag12345"
FACTS = {
    "Zorbia": "Quux",
    "Plindor": "Vettle",
    "Marsk": "Oborn",
    "Tellavy": "Grusk",
}
HANDBOOK = "# Capitals of the invented lands\n\n" + "\n\n".join(
    f"The capital city of {land} is {capital}." for land, capital in FACTS.items()
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


VOCABULARY = sorted({w for land in FACTS for w in words(land)} | {"capital", "city"})


def embed(texts):
    """Bag of the invented names: a question and the passage about the same land are nearest."""
    return [[float(w in words(t)) for w in VOCABULARY] + [0.1] for t in texts]


def questions() -> list[EvalExample]:
    return [
        EvalExample(prompt=[{"role": "user", "content": f"What is the capital of {land}?"}], reference=capital)
        for land, capital in FACTS.items()
    ]


class KnowsOnlyWhatItReads:
    """Answers with the last word of the last passage shown (the nearest), else "unknown"; tokens = words."""

    def __init__(self) -> None:
        self.prompts: list[tuple[str, str]] = []

    def __call__(self, model: str, messages: list[dict[str, Any]], **params: Any) -> ChatReply:
        text = messages[-1]["content"]
        self.prompts.append((model, text))
        passages = re.findall(r"^\[\d+\] (.*)$", text, re.MULTILINE)
        answer = words(passages[-1])[-1].capitalize() if passages else "unknown"
        tokens = sum(len(m["content"].split()) for m in messages)
        return ChatReply(answer, {"prompt_tokens": tokens, "completion_tokens": 1}, 0.01)


def test_paragraphs_are_packed_and_a_heading_stays_with_its_paragraph():
    assert paragraphs("# Title\n\nFirst  para.\r\n\r\nSecond\npara.") == ["# Title\nFirst para.", "Second para."]
    chunks = chunk_text("one two three\n\nfour five\n\nsix seven eight nine", "d.md", max_words=5, overlap_words=1)
    assert [c.text for c in chunks] == ["one two three\nfour five", "six seven eight nine"]
    assert [(c.source, c.index) for c in chunks] == [("d.md", 0), ("d.md", 1)]
    sections = chunk_text("## Returns\nThirty days.\n\n## Shipping\nTwo days.", "faq.md")
    assert [c.text for c in sections] == ["## Returns\nThirty days.", "## Shipping\nTwo days."]  # a heading cuts


def test_a_long_paragraph_is_cut_into_overlapping_windows_that_lose_no_word():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(f"short one\n\n{text}", "d.txt", max_words=10, overlap_words=3)
    assert chunks[0].text == "short one"  # the paragraph before is not glued to a window
    windows = [c.text.split() for c in chunks[1:]]
    assert all(len(w) <= 10 for w in windows)
    assert [w[:3] for w in windows[1:]] == [prev[-3:] for prev in windows[:-1]]  # 3 shared words at each cut
    assert sorted({x for w in windows for x in w}, key=lambda x: int(x[1:])) == text.split()


def test_text_markdown_and_jsonl_files_become_documents():
    assert read_documents(b"\xef\xbb\xbfHello", "a.txt")[0].text == "Hello"  # BOM dropped
    assert read_documents(b"# T\n\nbody", "notes.md")[0].name == "notes.md"
    jsonl = b'{"title": "Returns", "text": "Thirty days."}\n\n"A plain string line"\n{"content": "third"}\n'
    docs = read_documents(jsonl, "kb.jsonl")
    assert [(d.name, d.text) for d in docs] == [
        ("kb.jsonl#1", "Returns\n\nThirty days."),
        ("kb.jsonl#3", "A plain string line"),
        ("kb.jsonl#4", "third"),
    ]
    assert [c.source for c in chunk_documents(docs)] == ["kb.jsonl#1", "kb.jsonl#3", "kb.jsonl#4"]


@pytest.mark.parametrize(
    ("raw", "name", "why"),
    [
        (b"%PDF-1.7 \x00\x01", "manual.pdf", "not a text document"),
        (b"text\x00with a NUL", "notes.txt", "binary data"),
        (b"caf\xe9", "notes.txt", "not UTF-8"),
        (b'{"text": "ok"}\n{"nope": 1}\n', "kb.jsonl", "line 2"),
        (b'{"text": "ok"}\n{broken\n', "kb.jsonl", "line 2: not valid JSON"),
        (b"\n  \n", "empty.md", "holds no text"),
    ],
)
def test_a_document_that_is_not_usable_text_is_refused_with_the_reason(raw, name, why):
    with pytest.raises(DocumentError, match=why):
        read_documents(raw, name)


def test_the_nearest_passage_is_retrieved_and_put_last_before_the_question():
    chunks = chunk_documents(read_documents(HANDBOOK.encode(), "handbook.md"), max_words=12, overlap_words=2)
    index = PassageIndex(chunks, embed)
    found = index.search("What is the capital of Marsk?", k=2)
    assert "Marsk is Oborn" in found.passages[0].text and found.scores[0] > found.scores[1]
    assert found.seconds >= 0
    example = EvalExample(prompt=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "What is the capital of Marsk?"}], reference="Oborn")
    messages = with_passages(example, found.passages)
    assert messages[0] == {"role": "system", "content": "Be brief."} and example.prompt[1]["content"].startswith("What")
    user = messages[1]["content"]
    assert user.endswith("What is the capital of Marsk?")
    assert user.index(found.passages[1].text) < user.index(found.passages[0].text)  # the nearest is closest


def run_rag(**overrides):
    settings = EvalSettings(base_model="base", strategies=["zero-shot", "rag", "fine-tuned", "rag-fine-tuned"],
                            fine_tuned_models=[FT], metrics=["exact_match"], rag_k=1, **overrides)
    chat = KnowsOnlyWhatItReads()
    passages = [Chunk(f"The capital city of {land} is {capital}.", "handbook.md", i)
                for i, (land, capital) in enumerate(FACTS.items())]
    return run_evaluation(settings, questions(), [], chat, embed=embed, passages=passages), chat


def test_rag_and_rag_with_the_fine_tuned_model_answer_from_the_documents_at_a_cost_in_prompt_tokens():
    results, chat = run_rag()
    by_name = {s["name"]: s for s in results["strategies"]}
    assert set(by_name) == {"zero-shot", "rag", FT, f"rag+{FT}"}
    assert by_name["rag"]["kind"] == "rag" and by_name[f"rag+{FT}"]["fine_tuned"] is True
    assert by_name["rag"]["quality"]["exact_match"]["mean"] == 1.0
    assert by_name[f"rag+{FT}"]["quality"]["exact_match"]["mean"] == 1.0
    assert by_name["zero-shot"]["quality"]["exact_match"]["mean"] == 0.0
    assert by_name["rag"]["prompt_tokens"]["mean"] > by_name["zero-shot"]["prompt_tokens"]["mean"] + 8
    # a RAG request's latency is the model's 10 ms plus its retrieval, which is recorded on its own as well
    assert by_name["rag"]["latency_s"]["p50"] > 0.01 and by_name["rag"]["retrieval_s"]["p50"] > 0
    assert by_name["zero-shot"]["retrieval_s"] is None
    assert [m for m, _ in chat.prompts].count(FT) == 8  # the fine-tuned model alone and with passages
    sample = results["samples"][2]
    assert sample["predictions"]["rag"]["passages"] == ["handbook.md:2"]  # Marsk's passage, for the Marsk question
    assert results["rag"] == {"k": 1, "n_passages": 4, "n_documents": 1, "max_words": 120, "overlap_words": 20}


def test_the_report_and_the_advisor_weigh_rag_beside_the_other_strategies():
    results, _ = run_rag()
    json.dumps(results)  # JSON-ready as stored
    advice = advise(results)
    costs = {c["strategy"]: c for c in advice["costs"]}
    assert costs["rag"]["fine_tuned"] is False and costs[f"rag+{FT}"]["fine_tuned"] is True
    assert costs["rag"]["hosted_model"] == "gpt-4o-mini"
    assert advice["recommendations"]["local"]["choice"] in ("rag", f"rag+{FT}")
    mapped = advise(results, AdviceSettings(hosted_models={"fine-tuned": "ft:gpt-4.1-mini-2025-04-14"}))
    hosted = {c["strategy"]: c["hosted_model"] for c in mapped["costs"]}
    assert hosted[f"rag+{FT}"] == hosted[FT] == "ft:gpt-4.1-mini-2025-04-14"  # priced as its fine-tuned model
    report = build_report(results, advice, {"id": "eval-rag"})
    md = to_markdown(report)
    assert "| rag |" in md and "RAG: the top 1 of 4 passages from 1 document(s) per question" in md
    assert "rag: +" in md and "prompt tokens per request over zero-shot" in md
    assert f"rag+{FT}: +" in md and f"over {FT}" in md
    assert "RAG: the top 1 of 4 passages" in to_html(report)


def test_rag_without_passages_is_refused():
    settings = EvalSettings(base_model="base", strategies=["rag"], metrics=["exact_match"])
    with pytest.raises(ValueError, match="need knowledge documents"):
        run_evaluation(settings, questions(), [], KnowsOnlyWhatItReads(), embed=embed)
