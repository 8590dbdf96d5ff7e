"""What constrained decoding costs per decoding step, printed as JSON.

    python bench/grammar_cost.py             # tiny random model with the real SmolLM2 tokenizer: seconds
    python bench/grammar_cost.py --real      # the real SmolLM2-135M-Instruct

For each batch size, the same requests run twice through the engine: free, and with a response_format
json_schema grammar on every row. The grammar's time is measured inside the engine (mask computation for every
constrained row, unpacking and applying it to the logits) per decode step, and reported in ms and as a share of
the constrained step and of the free step at that batch size. One-time costs (llguidance's view of the tokenizer,
compiling a schema, creating a matcher) are reported separately. Keep runs short on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench_models import emit_report, prepare_model_dir  # bench/ is on sys.path when run as a script
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from openft.models.chat_template import encode_prompt, stop_token_ids
from openft.serving.engine import Engine
from openft.serving.grammar import GrammarVocabulary
from openft.serving.grammar_request import chat_grammar
from openft.serving.types import GenerationRequest

SCHEMA = {  # long enough that rows keep decoding for the whole measured run
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rating": {"type": "integer"},
    },
    "required": ["title", "summary", "tags", "rating"],
    "additionalProperties": False,
}
BODY = {"response_format": {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}}


class StepTimer:
    """Wraps the engine's decode step and its grammar masking to time both, step by step."""

    def __init__(self, engine: Engine) -> None:
        self.steps: list[tuple[float, float, int]] = []  # (step ms, grammar ms, constrained rows)
        self._grammar_ms = 0.0
        self._rows = 0
        decode, apply = engine._decode, engine._apply_grammars

        def timed_apply(sequences, logits):
            start = time.perf_counter()
            apply(sequences, logits)
            self._grammar_ms += (time.perf_counter() - start) * 1e3
            self._rows += sum(s.matcher is not None for s in sequences)

        def timed_decode():
            self._grammar_ms, self._rows = 0.0, 0
            start = time.perf_counter()
            decode()
            self.steps.append(((time.perf_counter() - start) * 1e3, self._grammar_ms, self._rows))

        engine._decode, engine._apply_grammars = timed_decode, timed_apply


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": round(statistics.mean(values), 3), "p50": round(statistics.median(values), 3),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3)}


def run_batch(engine: Engine, batch: int, steps: int, grammar: str | None) -> dict:
    tokenizer = engine.tokenizer
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": f"Review movie number {i} in JSON."}])
               for i in range(batch)]
    requests = [GenerationRequest(prompt_ids=p, max_new_tokens=steps, temperature=0.8, seed=i,
                                  stop_token_ids=stop_token_ids(tokenizer), grammar=grammar)
                for i, p in enumerate(prompts)]
    timer = StepTimer(engine)

    async def run():
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    results = asyncio.run(run())
    full = [s for s in timer.steps if s[2] == batch] if grammar else [s for s in timer.steps]
    full = full or timer.steps
    return {
        "decode_steps": len(timer.steps),
        "steps_with_every_row_running": len(full),
        "step_ms": _summary([s[0] for s in full]),
        "grammar_ms": _summary([s[1] for s in full]),
        "finish_reasons": sorted({r.finish_reason for r in results}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="the real SmolLM2-135M-Instruct (default: tiny model)")
    parser.add_argument("--model-dir", help="any local HF model folder instead")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--steps", type=int, default=24, help="decode steps per run (max_tokens)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model_dir = prepare_model_dir(not args.real, args.model_dir, Path(work))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        vocab_size = AutoConfig.from_pretrained(model_dir).vocab_size  # the engine's logits width
        start = time.perf_counter()
        vocabulary = GrammarVocabulary(tokenizer, vocab_size)
        one_time = {"tokenizer_view_s": round(time.perf_counter() - start, 3)}
        start = time.perf_counter()
        grammar = chat_grammar(BODY)
        one_time["compile_schema_ms"] = round((time.perf_counter() - start) * 1e3, 3)
        start = time.perf_counter()
        vocabulary.matcher(grammar)
        one_time["create_matcher_ms"] = round((time.perf_counter() - start) * 1e3, 3)

        def load():
            return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)

        engine = Engine(load, max_batch_size=max(int(b) for b in args.batch_sizes.split(",")))
        engine.wait_ready(timeout=600)
        engine._grammar_vocab = vocabulary  # built above and timed; not part of the per-step cost
        out = {"model": "real SmolLM2-135M-Instruct" if args.real else str(model_dir), "vocab_size": vocab_size,
               "steps": args.steps, "one_time": one_time, "batches": {}}
        try:
            run_batch(engine, 1, 4, grammar)  # warm-up: first forward passes and lexer states
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                free = run_batch(engine, batch, args.steps, None)
                constrained = run_batch(engine, batch, args.steps, grammar)
                grammar_ms = constrained["grammar_ms"]["mean"]
                out["batches"][str(batch)] = {
                    "grammar_ms_per_step": constrained["grammar_ms"],
                    "grammar_ms_per_row": round(grammar_ms / batch, 4),
                    "constrained_step_ms": constrained["step_ms"],
                    "free_step_ms": free["step_ms"],
                    "grammar_share_of_constrained_step": round(grammar_ms / constrained["step_ms"]["mean"], 4),
                    "grammar_share_of_free_step": round(grammar_ms / free["step_ms"]["mean"], 4),
                    "steps_measured": constrained["steps_with_every_row_running"],
                    "finish_reasons": constrained["finish_reasons"],
                }
        finally:
            engine.close()
    emit_report(out, args.out)


if __name__ == "__main__":
    main()
