"""The forgetting check (issue 11 item 5): the general set, its batched scoring, the paired verdicts the advisor
warns with, the report's sections, the off switch, and rival strategies ("does it match a bigger model?")."""

from __future__ import annotations

import random

import pytest

from openft.evals.advisor import advise
from openft.evals.forgetting import (
    ForgettingSettings,
    ItemEncoder,
    SharedPrefix,
    common_prefix,
    conversation_losses,
    option_logprobs,
)
from openft.evals.general_set import describe, full_size, general_items
from openft.evals.report import build_report, to_html, to_markdown
from openft.evals.runner import EvalSettings, run_evaluation
from openft.evals.strategies import plan_strategies
from tests.evals.fakes import FakeChat, fake_embed, held_out_examples, train_examples

FT = "ft:base:acme:reviews:abc"


def test_the_general_set_ships_offline_with_its_licences_and_is_stable():
    everything = general_items()
    assert len(everything) == full_size() == 400
    assert general_items(40) == everything[:40]  # a smaller set is a prefix: sizes compare like with like
    about = describe(general_items(100))
    assert (about["n_conversations"], about["n_questions"]) == (50, 50)
    assert {(s["package"], s["licence"]) for s in about["sources"]} == {("chatterbot-corpus", "BSD"),
                                                                        ("countryinfo", "MIT")}
    assert about["fingerprint"] == describe(general_items(100))["fingerprint"]
    questions = [i for i in everything if i.kind == "question"]
    assert all(len(set(q.options)) == 4 and q.reference in q.options for q in questions)
    assert any(q.prompt == "What is the capital of France?" and q.reference == "Paris" for q in questions)


class FakeScorer:
    """Per-item scores without a model: the base's losses, the fine-tuned model's shifted by `loss_shift`, and
    accuracies where the fine-tuned model loses `lost_answers` of the base's right answers."""

    def __init__(self, loss_shift: float, lost_answers: int = 0) -> None:
        self.loss_shift, self.lost_answers, self.calls = loss_shift, lost_answers, []

    def base_of(self, model: str) -> str:
        return "base"

    def score(self, models, items, should_stop=None):
        self.calls.append(list(models))
        rng = random.Random(0)
        n_conv = sum(i.kind == "conversation" for i in items)
        n_q = len(items) - n_conv
        base_loss = [2.0 + rng.random() for _ in range(n_conv)]
        base_right = [1.0] * (n_q // 2) + [0.0] * (n_q - n_q // 2)
        ft_right = [0.0 if i < self.lost_answers else v for i, v in enumerate(base_right)]
        noise = [rng.gauss(0, 0.05) for _ in range(n_conv)]
        return {
            "base": {"general_loss": base_loss, "simple_qa_accuracy": base_right},
            FT: {"general_loss": [b + self.loss_shift + e for b, e in zip(base_loss, noise, strict=True)],
                 "simple_qa_accuracy": ft_right},
        }


def run(scorer, *, enabled: bool = True, rivals: tuple[str, ...] = (), n_items: int = 60):
    kinds = ["zero-shot", "few-shot", "fine-tuned", *(["rival"] if rivals else [])]
    settings = EvalSettings(base_model="base", strategies=kinds, fine_tuned_models=[FT], k=2, rival_models=rivals,
                            forgetting=ForgettingSettings(enabled=enabled, n_items=n_items))
    return run_evaluation(settings, held_out_examples(), train_examples(), FakeChat(), embed=fake_embed,
                          general_scorer=scorer)


def test_a_significant_drop_is_warned_about_in_the_advice_and_the_report():
    results = run(FakeScorer(loss_shift=0.4, lost_answers=12))
    check = results["forgetting"]
    rows = {(m["model"], m["role"]) for m in check["models"]}
    assert rows == {("base", "base"), (FT, "fine-tuned")}
    loss = next(c for c in check["comparisons"] if c["measure"] == "general_loss")
    assert loss["change"] == pytest.approx(0.4, abs=0.05) and loss["low"] > 0.3 and loss["forgot"]
    accuracy = next(c for c in check["comparisons"] if c["measure"] == "simple_qa_accuracy")
    assert accuracy["change"] == pytest.approx(-12 / 30) and accuracy["method"] == "mcnemar-exact"
    assert accuracy["p_value"] < 0.001 and accuracy["forgot"]

    advice = advise(results)
    assert advice["forgetting"]["forgetful_models"] == [FT]
    assert len(advice["forgetting"]["warnings"]) == 2
    assert "lost general ability" in advice["forgetting"]["warnings"][0]
    local = advice["recommendations"]["local"]
    assert local["choice"] == FT  # the fake fine-tune answers every held-out item right
    assert "forgot some general ability" in local["headline"]
    assert any(r.startswith("Warning:") and "loss on general conversations" in r for r in local["reasons"])

    report = build_report(results, advice)
    markdown = to_markdown(report)
    assert "## Forgetting check (general ability)" in markdown and "**Warning:**" in markdown
    assert "WORSE: forgot" in markdown and "chatterbot-corpus" in markdown and "(MIT)" in markdown
    html = to_html(report)
    assert 'id="forgetting"' in html and 'class="forgetting-changes"' in html and "Warning:" in html


def test_no_warning_for_an_unchanged_model_or_a_rise_within_the_tolerance():
    for shift in (0.0, 0.03):  # 0.03 nats on a loss near 2.5 is significant here but under 2% of it
        advice = advise(run(FakeScorer(loss_shift=shift)))
        assert advice["forgetting"]["warnings"] == []
        assert "forgot" not in advice["recommendations"]["local"]["headline"]
    loss = advice["forgetting"]["comparisons"][0]
    assert loss["significant"] and loss["worse"] and not loss["forgot"]
    assert "within the tolerance" in loss["verdict"]


def test_the_check_can_be_turned_off_and_needs_a_fine_tuned_model():
    scorer = FakeScorer(loss_shift=1.0)
    assert run(scorer, enabled=False)["forgetting"] is None
    settings = EvalSettings(base_model="base", strategies=["zero-shot"], k=2)
    results = run_evaluation(settings, held_out_examples(), train_examples(), FakeChat(), embed=fake_embed,
                             general_scorer=scorer)
    assert results["forgetting"] is None and scorer.calls == []
    assert advise(results)["forgetting"] is None
    assert "Forgetting check" not in to_markdown(build_report(results, advise(results)))


def test_the_set_size_is_a_parameter():
    scorer = FakeScorer(loss_shift=0.0)
    check = run(scorer, n_items=20)["forgetting"]
    assert check["set"]["n_items"] == 20 and all(c["n"] == 10 for c in check["comparisons"])
    assert scorer.calls == [["base", FT]]  # the base is scored once, before its fine-tunes


def test_a_bigger_base_model_is_a_rival_in_the_same_table():
    plan = plan_strategies(["zero-shot", "fine-tuned", "rival"], "small", [FT], rival_models=["big"])
    assert [(s.name, s.kind, s.model) for s in plan] == [("zero-shot", "zero-shot", "small"), (FT, "fine-tuned", FT),
                                                        ("rival:big", "rival", "big")]
    with pytest.raises(ValueError, match="rival"):
        plan_strategies(["rival"], "small", [])
    results = run(FakeScorer(loss_shift=0.0), rivals=("big",))
    assert "rival:big" in results["ranking"]
    advice = advise(results)
    (verdict,) = advice["rivals"]
    # FakeChat answers like the base model for any non-"ft:" model, so the fine-tune beats the rival on 4 items.
    assert verdict["fine_tuned"] == FT and verdict["rival"] == "rival:big" and verdict["rival_model"] == "big"
    assert verdict["outcome"] in ("matches", "beats") and verdict["difference"] > 0
    assert verdict["verdict"] in advice["recommendations"]["local"]["reasons"]
    assert "## Rivals: does the fine-tuned model match a bigger one?" in to_markdown(build_report(results, advice))


def test_batched_scoring_equals_one_item_at_a_time(tiny_model_dir):
    """Left padding, the shared prefix cache and the per-option cache copies change nothing in the numbers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    encoder = ItemEncoder(tokenizer, "You are a helpful assistant")
    items = general_items(4)
    conversations = [encoder.conversation(i) for i in items if i.kind == "conversation"]
    questions = [encoder.question(i) for i in items if i.kind == "question"]
    prefix = SharedPrefix(model, common_prefix([c[0] for c in conversations] + [q[0] for q in questions]))
    assert tokenizer.decode(prefix.ids).endswith("<|im_start|>user\n")

    def logprobs(ids):
        with torch.inference_mode():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)

    expected = []
    for ids, labels in conversations:
        lp, trained = logprobs(ids), [j for j, label in enumerate(labels) if label != -100]
        expected.append(-sum(lp[j - 1, ids[j]].item() for j in trained) / len(trained))
    assert conversation_losses(model, conversations, 2, prefix) == pytest.approx(expected, abs=1e-4)

    expected_options = []
    for prompt, options in questions:
        row = []
        for option in options:
            lp = logprobs(prompt + option)
            row.append(sum(lp[len(prompt) + t - 1, option[t]].item() for t in range(len(option))) / len(option))
        expected_options.append(row)
    got = option_logprobs(model, [q[0] for q in questions], [q[1] for q in questions], 2, prefix)
    assert [v for row in got for v in row] == pytest.approx([v for row in expected_options for v in row], abs=1e-4)


# ----- through the API: the worker scores a LoRA fine-tune of the tiny model and its base ----------------------


@pytest.fixture(scope="module")
def api(live_server, tiny_model_dir, tmp_path_factory):
    import io
    import json
    import time

    import httpx
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from openft.store.accounts import get_or_create_organization
    from openft.store.db import dispose_engines, session_scope
    from openft.store.tables import FineTunedModel
    from tests.evals.fakes import HELD_OUT, SYSTEM
    from tests.fixtures.server import register_model

    register_model(live_server.home, "tiny-llama-big", tiny_model_dir)  # the rival, as a second registry entry
    key = live_server.create_key("forgetting-org")
    adapter = tmp_path_factory.mktemp("forgetting-lora")
    torch.manual_seed(7)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(adapter)
    url = live_server.env.get("OPENFT_DATABASE_URL") or f"sqlite:///{live_server.home / 'openft.db'}"
    with session_scope(url) as session:
        org = get_or_create_organization(session, "forgetting-org")
        session.add(FineTunedModel(id=LIVE_FT, organization_id=org.id, base_model="tiny-llama", job_id="ftjob-f",
                                   created_at=int(time.time()), path=str(adapter), kind="lora"))
    dispose_engines()
    rows = [{"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": a}]}
            for t, a in HELD_OUT]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    eval_file = live_server.client(key).files.create(file=("held.jsonl", io.BytesIO(data)), purpose="evals").id
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        c.eval_file = eval_file
        yield c


LIVE_FT = "ft:tiny-llama:forgetting-org:narrow:abcd1234"


def create(api, **fields):
    body = {"eval_file": api.eval_file, "model": "tiny-llama", "max_tokens": 2, **fields}
    return api.post("/evaluations", json=body)


def test_an_evaluation_with_a_fine_tuned_model_reports_forgetting_and_the_rival(api):
    import time

    created = create(api, fine_tuned_models=[LIVE_FT], rival_models=["tiny-llama-big"], forgetting_items=16)
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["strategies"] == ["zero-shot", "fine-tuned", "rival"]
    assert (run["forgetting_check"], run["forgetting_items"], run["rival_models"]) == (True, 16, ["tiny-llama-big"])
    deadline = time.monotonic() + 600  # seconds on a quiet machine; minutes on a loaded one
    while run["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        run = api.get(f"/evaluations/{run['id']}").json()
    assert run["status"] == "succeeded", run["error"]
    assert "rival:tiny-llama-big" in run["summary"]["ranking"]
    forgetting = run["summary"]["forgetting"]
    assert forgetting["set"]["n_items"] == 16
    models = {m["model"]: m for m in forgetting["models"]}
    assert set(models) == {"tiny-llama", LIVE_FT}
    for row in models.values():
        loss, accuracy = row["general_loss"], row["simple_qa_accuracy"]
        assert loss["low"] <= loss["mean"] <= loss["high"] and loss["n"] == 8 and loss["mean"] > 0
        assert 0 <= accuracy["low"] <= accuracy["mean"] <= accuracy["high"] <= 1 and accuracy["n"] == 8
    changes = {c["measure"]: c for c in forgetting["comparisons"]}
    assert set(changes) == {"general_loss", "simple_qa_accuracy"}
    loss = changes["general_loss"]
    assert loss["change"] == pytest.approx(loss["fine_tuned_mean"] - loss["base_mean"])
    assert loss["low"] <= loss["change"] <= loss["high"] and loss["verdict"]

    html = api.get(f"/evaluations/{run['id']}/report", params={"format": "html"}).text
    assert 'id="forgetting"' in html and "Rivals: does the fine-tuned model match a bigger one?" in html
    advice = api.post(f"/evaluations/{run['id']}/advice", json={}).json()
    assert advice["forgetting"]["comparisons"] and advice["rivals"][0]["rival_model"] == "tiny-llama-big"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"forgetting_items": 5}, "forgetting_items"),
        ({"forgetting_items": 100_000}, "forgetting_items"),
        ({"forgetting_check": "no"}, "forgetting_check"),
        ({"rival_models": ["no-such-model"]}, "rival_models[0]"),
        ({"rival_models": ["tiny-llama-big", "tiny-llama-big"]}, "rival_models[1]"),
        ({"strategies": ["zero-shot", "rival"]}, "rival_models"),
    ],
)
def test_bad_forgetting_and_rival_fields_are_named(api, fields, param):
    answer = create(api, **fields)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_the_check_is_switched_off_per_request(api):
    created = create(api, fine_tuned_models=[LIVE_FT], forgetting_check=False, max_examples=1)
    assert created.status_code == 200 and created.json()["forgetting_check"] is False
    api.post(f"/evaluations/{created.json()['id']}/cancel")
