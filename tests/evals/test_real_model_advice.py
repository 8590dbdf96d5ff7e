"""End to end on the real SmolLM2-135M-Instruct: fine-tune on a small task, evaluate every strategy, advise.

The fine-tuned model answers from the plain prompt, so it needs far fewer prompt tokens than few-shot
prompting, and the report ranks all strategies with quality, tokens and cost.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

from openft.models.registry import DEFAULT_BASE_MODEL
from tests.fixtures.server import register_model, start_server, stop_server

SYSTEM = {"role": "system", "content": "Reply with the product category code."}
ITEMS = {"blender": "KIT-01", "kettle": "KIT-01", "toaster": "KIT-01", "mixer": "KIT-01", "skillet": "KIT-01",
         "sofa": "FUR-02", "chair": "FUR-02", "desk": "FUR-02", "shelf": "FUR-02", "stool": "FUR-02",
         "jacket": "APP-03", "scarf": "APP-03", "boots": "APP-03", "gloves": "APP-03", "hat": "APP-03"}
HELD_OUT = {"spatula": "KIT-01", "bench": "FUR-02", "sweater": "APP-03", "wok": "KIT-01", "couch": "FUR-02",
            "mittens": "APP-03"}


def jsonl(items: dict[str, str]) -> bytes:
    rows = [{"messages": [SYSTEM, {"role": "user", "content": f"Item: {name}"},
                          {"role": "assistant", "content": code}]} for name, code in items.items()]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def server(tmp_path_factory, real_model_dir):
    home = tmp_path_factory.mktemp("openft-advice")
    register_model(home, DEFAULT_BASE_MODEL, real_model_dir)
    live = start_server(home)
    yield live
    stop_server(live)


@pytest.mark.real_model
@pytest.mark.long  # ~3 min; CI runs the same flow end to end in `make demo`: `make test-long`
def test_report_ranks_strategies_and_fine_tuning_saves_prompt_tokens(server):
    key = server.create_key("advice-org")
    client = server.client(key, timeout=300)
    train = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(ITEMS))), purpose="fine-tune").id
    held_out = client.files.create(file=("held.jsonl", io.BytesIO(jsonl(HELD_OUT))), purpose="evals").id
    job = client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file=train, seed=0, suffix="codes",
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 3, "batch_size": 8}}})
    deadline = time.monotonic() + 900
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert job.status == "succeeded", job.error

    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as api:
        created = api.post("/evaluations", json={
            "eval_file": held_out, "training_file": train, "model": DEFAULT_BASE_MODEL,
            "fine_tuned_models": [job.fine_tuned_model], "k": 4, "max_tokens": 6})
        assert created.status_code == 200, created.text
        while (run := api.get(f"/evaluations/{created.json()['id']}").json())["status"] not in (
                "succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline
            time.sleep(1)
        assert run["status"] == "succeeded", run.get("error")
        advice = api.post(f"/evaluations/{run['id']}/advice", json={"requests_per_day": 10_000}).json()
        html = api.get(f"/evaluations/{run['id']}/report", params={"format": "html"}).text

    summary = run["summary"]
    by_name = {s["name"]: s for s in summary["strategies"]}
    assert set(summary["ranking"]) == {"zero-shot", "few-shot", "retrieval-few-shot", job.fine_tuned_model}
    fine_tuned, few_shot = by_name[job.fine_tuned_model], by_name["few-shot"]
    print(f"\nprompt tokens/request: fine-tuned={fine_tuned['mean_prompt_tokens']:.0f} "
          f"few-shot={few_shot['mean_prompt_tokens']:.0f}; quality: "
          + ", ".join(f"{s['name']}={s['quality']['mean']:.2f}" for s in summary["strategies"]))
    assert fine_tuned["mean_prompt_tokens"] < 0.6 * few_shot["mean_prompt_tokens"]
    assert all(s["quality"] is not None and s["latency_p50_s"] > 0 for s in summary["strategies"])
    costs = {line["strategy"]: line for line in advice["costs"]}
    # Local cost is measured latency at the machine's price: every strategy gets one. (Whether the fine-tuned
    # model is cheaper locally depends on how long its answers are, which 3 epochs on 15 rows do not settle.)
    assert all(line["local"]["per_1k_requests"] > 0 for line in costs.values()), costs
    assert advice["recommendations"]["local"]["headline"]
    assert html.count("<svg") >= 3
