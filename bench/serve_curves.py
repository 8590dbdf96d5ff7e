"""Serving scaling curves of the openft engine, written as JSON (plots: bench/plot_curves.py).

- tokens/s and time to first token (p50/p95) against concurrency 1..64, base model;
- tokens/s against the number of distinct adapters in one batch (1..64), each request on its own adapter
  (round robin), at the same concurrency as the base-model point it is compared with;
- memory per loaded adapter: resident memory (GPU memory on CUDA) after loading N adapters, minus before, / N.

Every request generates exactly ``--max-new-tokens`` tokens (``ignore_eos``), as in serve_throughput.py.
Each curve point is the best of ``--rounds`` runs (background load only ever slows a run).

    python bench/serve_curves.py --tiny --quick --out serve-curves.json     # seconds
    python bench/serve_curves.py --quick --out serve-curves.json            # SmolLM2-135M, a few minutes
    python bench/serve_curves.py --out serve-curves.json                    # the full grid
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_models import emit_report, in_child_process, prepare_model_dir  # noqa: E402  (bench/ is on sys.path as a script)
from peft import LoraConfig, get_peft_model  # noqa: E402
from serve_throughput import TOPICS, run_engine  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from openft.models.chat_template import encode_prompt  # noqa: E402
from openft.serving.engine import Engine  # noqa: E402
from openft.serving.types import GenerationRequest  # noqa: E402


def make_adapters(model_dir: Path, work: Path, count: int) -> dict[str, Path]:
    """`count` distinct rank-16 LoRA adapters on all linear layers, from one PEFT model re-randomised per seed."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    adapters = {}
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        folder = work / f"adapter{index}"
        model.save_pretrained(folder)
        adapters[f"ft:curve:{index}"] = folder
    return adapters


def _resident_mib() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def curves(model_dir: Path, adapters: dict[str, Path], prompts: list[list[int]], args: dict) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    keys = list(adapters)
    max_concurrency = max(args["concurrency"])

    def loader():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tokenizer

    engine = Engine(
        loader, lambda key: adapters[key], max_batch_size=max_concurrency, max_queue=4 * max_concurrency,
        max_loaded_adapters=len(keys),
    )  # fmt: skip
    engine.wait_ready()

    def requests(count: int, n_adapters: int) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                prompt_ids=prompts[i % len(prompts)], adapter=keys[i % n_adapters] if n_adapters else None,
                max_new_tokens=args["max_new_tokens"], temperature=0, ignore_eos=True,
            )
            for i in range(count)
        ]  # fmt: skip

    async def best_of(count: int, n_adapters: int, concurrency: int) -> dict:
        best = None
        for _ in range(args["rounds"]):
            run = await run_engine(engine, requests(count, n_adapters), concurrency)
            best = run if best is None or run["tokens_per_s"] > best["tokens_per_s"] else best
        return best

    async def all_curves() -> dict:
        await engine.complete(requests(1, 0)[0])  # warm up
        by_concurrency = []
        for concurrency in args["concurrency"]:
            # two waves per point, so the steady state and not only the first prefill is measured
            by_concurrency.append(await best_of(2 * concurrency, 0, concurrency))
        before = _resident_mib()
        for key in keys:  # load every adapter once, outside the timed runs
            await engine.complete(GenerationRequest(prompt_ids=prompts[0], adapter=key, max_new_tokens=1))
        memory = {"adapters": len(keys), "per_adapter_mib": round((_resident_mib() - before) / len(keys), 2)}
        by_adapters = []
        for n_adapters in args["adapters"]:
            mixed = await best_of(max_concurrency, n_adapters, max_concurrency)
            by_adapters.append({"distinct_adapters": n_adapters, **mixed})
        base = await best_of(max_concurrency, 0, max_concurrency)
        for point in by_adapters:
            point["slowdown_vs_base"] = round(base["tokens_per_s"] / point["tokens_per_s"], 2)
        return {
            "by_concurrency": by_concurrency,
            "by_distinct_adapters": by_adapters,
            "base_at_max_concurrency": base,
            "adapter_memory": memory,
        }

    results = asyncio.run(all_curves())
    engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model for a quick run")
    parser.add_argument("--model-dir", help="an HF model folder instead of the registry's default model")
    parser.add_argument("--quick", action="store_true", help="fewer points and shorter answers: a few minutes")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", help="also write the JSON report to this file")
    options = parser.parse_args()
    quick = options.quick
    args = {
        "concurrency": (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64),
        "adapters": (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64),
        "max_new_tokens": options.max_new_tokens or (16 if quick else 48),
        "rounds": options.rounds or (1 if quick else 2),
    }
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = prepare_model_dir(options.tiny, options.model_dir, work)
        adapters = make_adapters(model_dir, work, max(args["adapters"]))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        prompts = [
            encode_prompt(tokenizer, [{"role": "user", "content": f"Write two sentences about {TOPICS[i % 8]}."}])
            for i in range(16)
        ]
        results = in_child_process(curves, model_dir, adapters, prompts, args)
    report = {
        "kind": "serving_curves",
        "model": "tiny-random-llama" if options.tiny else str(options.model_dir or "smollm2-135m-instruct"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()},
        **results,
    }
    emit_report(report, options.out)


if __name__ == "__main__":
    main()
