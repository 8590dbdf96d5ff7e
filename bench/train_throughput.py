"""Training throughput: openft's trainer vs a plain TRL `SFTTrainer` on the same model, data and epochs.

Both train the same LoRA (rank 16, all linear projections), batch size, learning rate and epochs on the
same short mixed-length chat conversations (answers of 5-200 words). openft feeds pre-tokenized rows in
padding-free batches; the baseline gets the rendered text of the same conversations and TRL's defaults
(padded batches, gradient checkpointing on). Both use the same precision: bf16 autocast where the hardware
runs bf16 natively (TRL's default is bf16 everywhere, which transformers refuses on a CPU unless `use_cpu`
is set, so the baseline sets it), else fp32. Each run is a separate process so its peak RSS is its own.
Throughput counts real tokens only (no padding) for both. Prints JSON.

    python bench/train_throughput.py                 # real SmolLM2-135M-Instruct (from the model registry)
    python bench/train_throughput.py --tiny          # tiny random model, seconds
    python bench/train_throughput.py --examples 64   # fewer conversations
    python bench/train_throughput.py --curves --quick --out curves.json   # openft's scaling curves (minutes)

Baselines: `trl_default` (TRL's defaults: padded batches, gradient checkpointing on), `trl_no_gradient_checkpointing`,
and `trl_tuned`: gradient checkpointing off, bf16 where native, and TRL's `padding_free=True` (one row per batch,
`position_ids` restarting per example). On SDPA, transformers 5 turns those position_ids into a block-diagonal
mask, so padding-free is correct on this backend (CPU or CUDA) without FlashAttention; it is the fastest TRL
setting that trains the same examples per step (TRL's `packing=True` would change what a batch is).

Allocator: openft runs with the allocator its worker gives task children (tcmalloc where installed,
openft/jobs/allocator.py: about 18% faster training on a CPU); the TRL baselines with glibc's, as a plain
script runs, and `trl_tuned_tcmalloc` (where tcmalloc is installed) is the tuned baseline with tcmalloc too.

MFU: full fine-tuning does ~6 x params FLOPs per token (forward 2, backward 4). With LoRA the frozen
weights need no weight gradient, so ~4 x params (forward 2 + input gradients 2); the adapter's own FLOPs
and attention's sequence-length term are left out. Peak: square matmuls of several sizes, each timed over
several trials before and after the runs, in the precision training uses (bf16 where the GPU or CPU runs it
natively, else fp32); the best figure counts, so background load only ever lowers a trial, never the peak.
`mfu_ceiling_at_model_shapes` is the same ratio for the model's own weight products (its projections and
output layer at one step's token count, operands hot): no step of this model passes it on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_models import emit_report, in_child_process, prepare_model_dir  # noqa: E402  (bench/ is on sys.path as a script)

from openft.jobs.allocator import task_env  # noqa: E402

WORDS = (
    "the model learns short answers from examples while a careful engineer measures tokens time memory and "
    "cost across many small runs so every number can be checked again later by anyone on the team"
).split()


def make_conversations(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Short, mixed-length chats: a 3-20 word question and a 5-200 word answer."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 200)))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Question {index}: {question}?"},
                    {"role": "assistant", "content": answer.capitalize() + "."},
                ]
            }
        )
    return rows


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_gpu_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_openft(args: dict[str, Any]) -> dict[str, Any]:
    from openft.training.callbacks import NullReporter
    from openft.training.hyperparameters import resolve_hyperparameters
    from openft.training.trainer import build_trainer
    from openft.training.trainer_config import TrainerRunConfig

    hparams = resolve_hyperparameters(
        "supervised",
        {"n_epochs": args["epochs"], "batch_size": args["batch_size"], "max_seq_length": args["max_seq_length"]},
        n_train_examples=args["examples"],
        context_length=args["max_seq_length"],
    )
    config = TrainerRunConfig(
        base_model=args["model_dir"],
        training_file=args["train_file"],
        output_dir=args["output_dir"],
        hyperparameters=hparams,
        seed=0,
        report_to=[],
        max_micro_batch_size=args["batch_size"],
    )
    run = build_trainer(config, NullReporter())
    started = time.perf_counter()
    run.trainer.train()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "real_tokens": run.train.stats.tokens * hparams.n_epochs,
        "loss_tokens": run.train.stats.trainable_tokens * hparams.n_epochs,
        "steps": run.trainer.state.global_step,
        "final_loss": run.progress.history[-1].get("train_loss"),
        "peak_rss_mib": _peak_rss_mib(),
        "peak_gpu_mib": _peak_gpu_mib(),
        "params": sum(p.numel() for p in run.trainer.model.parameters()),
    }


def run_plain_trl(args: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from openft.models.chat_template import render_prompt
    from openft.training.hyperparameters import BASE_LEARNING_RATES
    from openft.training.trainer import use_bf16

    rows = [json.loads(line) for line in Path(args["train_file"]).read_text().splitlines() if line.strip()]
    texts = [render_prompt(row["messages"], add_generation_prompt=False) for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(args["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(args["model_dir"], dtype=torch.float32)
    bf16 = use_bf16()
    config = SFTConfig(
        output_dir=args["output_dir"],
        num_train_epochs=args["epochs"],
        per_device_train_batch_size=args["batch_size"],
        learning_rate=BASE_LEARNING_RATES[("supervised", True)],
        gradient_checkpointing=args["gradient_checkpointing"],
        padding_free=args.get("padding_free", False),
        max_length=None if args.get("padding_free") else args["max_seq_length"],  # TRL: no truncation when padding-free
        # Same precision as openft: bf16 autocast where the hardware runs bf16 natively (TRL's own default is
        # bf16 everywhere, which transformers refuses on a CPU unless `use_cpu` is set).
        bf16=bf16,
        use_cpu=bf16 and not torch.cuda.is_available(),
        save_strategy="epoch",  # openft saves each epoch too
        save_total_limit=3,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON report
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    logged = [entry for entry in trainer.state.log_history if "num_tokens" in entry]
    return {
        "seconds": seconds,
        "real_tokens": int(logged[-1]["num_tokens"]),  # TRL counts attention_mask == 1, i.e. no padding
        "steps": trainer.state.global_step,
        "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
        "peak_rss_mib": _peak_rss_mib(),
        "peak_gpu_mib": _peak_gpu_mib(),
        "params": sum(p.numel() for p in trainer.model.parameters()),
    }


def matmul_peak_flops(device: str, dtype: torch.dtype, size: int, repeats: int = 5, trials: int = 3) -> float:
    """Best of a few timed matmul trials: on a shared machine the slow trials measure the neighbours."""
    return max(_matmul_flops(device, dtype, size, repeats) for _ in range(trials))


def steady_matmul_peak(device: str, dtype: torch.dtype, quick: bool = False) -> dict[str, Any]:
    """The best FLOP/s over several matrix sizes and trials, with each size's best for the record.

    One size can sit badly in a cache or a kernel's tiling; one trial can share the cores with a neighbour.
    The maximum over both is the figure that moves least from run to run, so MFU stays comparable.
    """
    sizes = (2048, 4096, 8192) if device == "cuda" else (1024, 1536, 2048, 3072)
    if quick:
        sizes = sizes[:2]
    per_size = {size: matmul_peak_flops(device, dtype, size, repeats=3, trials=2 if quick else 4) for size in sizes}
    return {
        "flops": max(per_size.values()),
        "tflops_by_size": {str(k): round(v / 1e12, 3) for k, v in per_size.items()},
    }


def _matmul_flops(device: str, dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / _timed_matmul(a, b, device, repeats)


def model_shape_matmul_flops(device: str, dtype: torch.dtype, model_dir: Path, tokens: int, trials: int = 3) -> float:
    """FLOP/s of a forward pass's weight products at the model's own shapes for ``tokens`` rows, each the best of
    a few trials with its operands hot: what MFU would be if a step did nothing but these products.

    A small model's products are thin (576-wide for the bundled one), and thin products run far below the
    square-matmul peak; this is the ceiling MFU cannot pass however the rest of the step is trimmed.
    """
    config = json.loads((model_dir / "config.json").read_text())
    hidden, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv_width = config.get("num_key_value_heads", heads) * head_dim
    layer = [(hidden, heads * head_dim), (hidden, kv_width), (hidden, kv_width), (heads * head_dim, hidden)]
    layer += [(hidden, inner), (hidden, inner), (inner, hidden)]
    counted = [(shape, config["num_hidden_layers"]) for shape in layer] + [((hidden, vocab), 1)]
    flops = seconds = 0.0
    for (width_in, width_out), times in counted:
        x = torch.randn(tokens, width_in, device=device, dtype=dtype)
        w = torch.randn(width_in, width_out, device=device, dtype=dtype)
        best = min(_timed_matmul(x, w, device) for _ in range(trials))
        flops += 2 * tokens * width_in * width_out * times
        seconds += best * times
    return flops / seconds


def _timed_matmul(x: torch.Tensor, w: torch.Tensor, device: str, repeats: int = 3) -> float:
    """Seconds per ``x @ w``, averaged over ``repeats`` after one warm-up."""
    torch.matmul(x, w)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(x, w)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def summarize(run: dict[str, Any], peak_flops: float, flops_per_param_token: int) -> dict[str, Any]:
    tokens_per_second = run["real_tokens"] / run["seconds"]
    achieved = flops_per_param_token * run["params"] * tokens_per_second
    return {
        **run,
        "tokens_per_second": round(tokens_per_second, 1),
        "mfu": round(achieved / peak_flops, 4),
        "seconds": round(run["seconds"], 2),
        "peak_rss_mib": round(run["peak_rss_mib"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model with the real tokenizer")
    parser.add_argument("--model-dir", help="a local HF folder instead of the registry's default model")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats; each variant's best counts")
    parser.add_argument(
        "--skip-no-checkpointing-baseline",
        action="store_true",
        help="do not also run plain TRL with gradient checkpointing off (isolates the padding effect)",
    )
    parser.add_argument("--curves", action="store_true", help="openft's tokens/s vs sequence length and batch size")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps: a few minutes")
    parser.add_argument("--out", help="also write the JSON report to this file")
    options = parser.parse_args()

    from openft.training.trainer import use_bf16

    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if use_bf16() else torch.float32
    device = "cuda" if on_gpu else "cpu"
    peak_before = steady_matmul_peak(device, dtype, options.quick)
    if options.curves:
        report = training_curves(options, peak_before)
        emit_report(report, options.out)
        return

    with tempfile.TemporaryDirectory(prefix="openft-bench-") as tmp:
        work = Path(tmp)
        model_dir = prepare_model_dir(options.tiny, options.model_dir, work)
        train_file = work / "train.jsonl"
        rows = make_conversations(options.examples)
        train_file.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
        shared = {
            "model_dir": str(model_dir),
            "train_file": str(train_file),
            "examples": options.examples,
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "max_seq_length": options.max_seq_length,
        }
        # openft runs as its worker starts a task child: with the task allocator (tcmalloc where installed,
        # openft/jobs/allocator.py). The TRL baselines run as `python train.py` does, with glibc's malloc;
        # `trl_tuned_tcmalloc` gives the tuned baseline the same allocator, for the like-for-like ratio.
        worker_env = task_env(os.environ)
        tuned = {"gradient_checkpointing": False, "padding_free": True}
        variants = {
            "openft": (run_openft, {}, worker_env),
            "trl_default": (run_plain_trl, {"gradient_checkpointing": True}, {}),
            "trl_tuned": (run_plain_trl, tuned, {}),
        }
        if "LD_PRELOAD" in worker_env:
            variants["trl_tuned_tcmalloc"] = (run_plain_trl, tuned, worker_env)
        if not options.skip_no_checkpointing_baseline:
            variants["trl_no_gradient_checkpointing"] = (run_plain_trl, {"gradient_checkpointing": False}, {})
        # Rounds interleave the variants and keep each one's fastest run, so a burst of background load
        # on a shared machine penalises no variant more than the others.
        best: dict[str, dict[str, Any]] = {}
        for round_index in range(options.rounds):
            for name, (runner, extra, allocator_env) in variants.items():
                output_dir = str(work / f"{name}-{round_index}")
                run = in_child_process(
                    runner, {**shared, **extra, "output_dir": output_dir}, allocator_env=allocator_env
                )
                if name not in best or run["seconds"] < best[name]["seconds"]:
                    best[name] = run
        step_tokens = max(1, round(best["openft"]["real_tokens"] / max(1, best["openft"]["steps"])))
        shape_flops = model_shape_matmul_flops(device, dtype, Path(model_dir), step_tokens)

    peak_after = steady_matmul_peak(device, dtype, options.quick)
    peak = max(peak_before["flops"], peak_after["flops"])
    lora_flops = 4  # see the module docstring
    report: dict[str, Any] = {
        "model": "tiny" if options.tiny else str(options.model_dir or "smollm2-135m-instruct"),
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({os.cpu_count()} cores)",
        "examples": options.examples,
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "matmul_peak_tflops": round(peak / 1e12, 3),
        "matmul_tflops_by_size": {"before": peak_before["tflops_by_size"], "after": peak_after["tflops_by_size"]},
        "rounds": options.rounds,
        # The model's own products at a step's token count: the MFU no step of this model can pass here.
        "matmul_tflops_at_model_shapes": round(shape_flops / 1e12, 3),
        "mfu_ceiling_at_model_shapes": round(shape_flops / peak, 4),
        "tokens_per_step": step_tokens,
        **{name: summarize(run, peak, lora_flops) for name, run in best.items()},
    }
    report["speedup_vs_trl_default"] = round(
        report["openft"]["tokens_per_second"] / report["trl_default"]["tokens_per_second"], 2
    )
    if "trl_no_gradient_checkpointing" in best:
        report["speedup_vs_trl_no_gradient_checkpointing"] = round(
            report["openft"]["tokens_per_second"] / report["trl_no_gradient_checkpointing"]["tokens_per_second"], 2
        )
    report["speedup_vs_trl_tuned"] = round(
        report["openft"]["tokens_per_second"] / report["trl_tuned"]["tokens_per_second"], 2
    )
    report["openft_allocator"] = "tcmalloc" if "LD_PRELOAD" in worker_env else "system"
    if "trl_tuned_tcmalloc" in best:
        report["speedup_vs_trl_tuned_tcmalloc"] = round(
            report["openft"]["tokens_per_second"] / report["trl_tuned_tcmalloc"]["tokens_per_second"], 2
        )
    # issue 15; against the tuned baseline with openft's allocator too, when it ran
    like_for_like = report.get("speedup_vs_trl_tuned_tcmalloc", report["speedup_vs_trl_tuned"])
    report["target_met"] = min(report["speedup_vs_trl_tuned"], like_for_like) >= 2.0 and report["openft"]["mfu"] >= 0.40
    emit_report(report, options.out)


def make_long_conversations(count: int, tokens: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chats of about `tokens` tokens each (the bench words are ~1 token each), for the sequence-length curve."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        answer = " ".join(rng.choice(WORDS) for _ in range(max(4, tokens - 30)))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Question {index}: write {tokens} words."},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def training_curves(options, peak: dict[str, Any]) -> dict[str, Any]:
    """openft's training tokens/s against sequence length (at one batch size) and against batch size (at one
    length), each point a fresh child process; --quick keeps each point to a few optimizer steps."""
    lengths = (128, 512, 2048) if options.quick else (128, 256, 512, 1024, 2048)
    batches = (1, 4, 8) if options.quick else (1, 2, 4, 8, 16)
    steps = 3 if options.quick else 8
    points: dict[str, list[dict[str, Any]]] = {"by_sequence_length": [], "by_batch_size": []}
    with tempfile.TemporaryDirectory(prefix="openft-curves-") as tmp:
        work = Path(tmp)
        model_dir = prepare_model_dir(options.tiny, options.model_dir, work)
        # Batch 4 for the length curve: 8 x 2048 tokens of the real model took more than 24 GiB on the CPU.
        grid = [("by_sequence_length", length, 4) for length in lengths]
        grid += [("by_batch_size", 512, batch) for batch in batches]
        for curve, length, batch in grid:
            examples = batch * steps
            train_file = work / f"train-{length}-{batch}.jsonl"
            rows = make_long_conversations(examples, length)
            train_file.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
            args = {
                "model_dir": str(model_dir),
                "train_file": str(train_file),
                "examples": examples,
                "epochs": 1,
                "batch_size": batch,
                "max_seq_length": length,
                "output_dir": str(work / f"out-{curve}-{length}-{batch}"),
            }
            try:
                run = in_child_process(run_openft, args)
            except RuntimeError as error:  # killed, e.g. by the kernel's OOM killer: a point of the curve too
                points[curve].append({"sequence_length": length, "batch_size": batch, "error": str(error)})
                continue
            row = summarize(run, peak["flops"], 4)
            points[curve].append(
                {
                    "sequence_length": length,
                    "batch_size": batch,
                    "tokens_per_second": row["tokens_per_second"],
                    "mfu": row["mfu"],
                    "peak_rss_mib": row["peak_rss_mib"],
                    "peak_gpu_mib": run["peak_gpu_mib"],
                }
            )
    return {
        "kind": "training_curves",
        "model": "tiny" if options.tiny else str(options.model_dir or "smollm2-135m-instruct"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "quick": options.quick,
        "matmul_peak_tflops": round(peak["flops"] / 1e12, 3),
        "matmul_tflops_by_size": peak["tflops_by_size"],
        **points,
    }


if __name__ == "__main__":
    main()
