"""What the benchmarks share: the model they run (the real SmolLM2-135M-Instruct, or a tiny random one with
`--tiny` for a quick run), running each measured side in a fresh process, and printing the JSON report."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from queue import Empty

import torch


def prepare_model_dir(tiny: bool, model_dir: str | None, work: Path) -> Path:
    if model_dir:
        return Path(model_dir)
    from openft.models.registry import DEFAULT_BASE_MODEL, materialize

    real = materialize(DEFAULT_BASE_MODEL)
    if not tiny:
        return real
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(real)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=2,
        bos_token_id=1, pad_token_id=2, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(work / "tiny")
    tokenizer.save_pretrained(work / "tiny")
    return work / "tiny"


def _child(function, args: tuple, queue) -> None:
    import datasets

    datasets.disable_progress_bars()
    torch.manual_seed(0)
    queue.put(function(*args))


def in_child_process(function, *args, allocator_env: dict[str, str] | None = None):
    """`function(*args)` in a fresh process, so its peak RSS is its own and nothing built earlier in this
    process (adapters, the other side of a comparison) changes its speed: here the allocator state left by
    earlier models slowed whatever ran later by up to 30%. `function` must be importable (module level).
    `allocator_env`: the child's LD_PRELOAD and tcmalloc settings (openft.jobs.allocator.task_env gives the
    ones openft's worker starts its task children with); None or {}: the system allocator."""
    from openft.jobs.allocator import starting_with

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(function, args, queue))
    with starting_with(allocator_env or {}):
        process.start()
    while True:  # a child that dies without answering (a crash in native code) must not hang the bench
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not process.is_alive():
                raise RuntimeError(f"{function.__name__} died with exit code {process.exitcode}") from None
    process.join()
    return result


def emit_report(report: dict, out: str | None) -> None:
    """Print the report as JSON, and write it to ``out`` too when given."""
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
