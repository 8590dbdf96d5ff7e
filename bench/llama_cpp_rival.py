"""llama.cpp as the single-stream rival: the same prompt token ids, the same number of output tokens, the same
thread count, run through ``llama-cpp-python`` on a GGUF file of the same model.

``llama-cpp-python`` is installed for the bench only (it compiles llama.cpp from source, so it stays out of
``make test`` and CI):

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
      -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_INT8=OFF -DLLAMA_BUILD_TOOLS=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install llama-cpp-python

(3 minutes on the 2-core bench machine of 2026-12-01, llama-cpp-python 0.3.36; slower CPUs take longer.)
``-DGGML_NATIVE=ON`` on a CPU with AMX built a library whose ``llama_decode`` crashed with a segmentation
fault on the first token, so AMX is left off; drop the AVX-512 flags on a CPU without them.

Two files are measured: the bundled Q4_1 GGUF as llama.cpp runs it natively (4-bit weights), and an f32 GGUF
converted from the same weights openft serves (openft's own llama.cpp converter), so the report separates
what llama.cpp gains from quantisation and what from its kernels and loop.
"""

from __future__ import annotations

import time
from pathlib import Path


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def f32_gguf(model_dir: Path, work: Path) -> Path:
    """The served weights (fp32 safetensors) as an f32 GGUF, through openft's vendored llama.cpp converter."""
    from openft.models.gguf_export import _convert_model

    return _convert_model(model_dir, work / "model-f32.gguf", "f32")


def sequential_llama_cpp(gguf: str, prompts: list[list[int]], max_new: int, threads: int) -> dict:
    """One request at a time, greedy, exactly ``max_new`` tokens each (no stop at EOS, like the engine's
    ``ignore_eos`` runs). The KV cache is reset between prompts so no request reuses another's prefix."""
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    warm = llm.generate(prompts[0], temp=0.0, reset=True)
    next(warm)  # first call pays for buffer allocation; not timed
    ttfts, tokens, start = [], 0, time.perf_counter()
    for prompt in prompts:
        llm.reset()
        submitted = time.perf_counter()
        for count, _token in enumerate(llm.generate(prompt, temp=0.0, top_k=1, reset=True), start=1):
            if count == 1:
                ttfts.append(time.perf_counter() - submitted)
            if count == max_new:
                break
        tokens += max_new
    elapsed = time.perf_counter() - start
    ttfts.sort()
    return {
        "gguf": Path(gguf).name,
        "output_tokens": tokens,
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 1),
        "ttft_p50_ms": round(ttfts[len(ttfts) // 2] * 1000, 1),
    }
