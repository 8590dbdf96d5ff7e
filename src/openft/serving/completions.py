"""OpenAI's legacy ``/v1/completions`` on the local engine: prompts, ``n``, ``best_of``, ``echo`` and logprobs.

A request can carry several prompts (strings or token-id lists); each gets ``best_of`` (default ``n``) generations,
and the ``n`` with the highest mean token logprob are returned. Choices are numbered prompt by prompt:
``index = prompt_index * n + rank``, as OpenAI does. Logprobs use the legacy shape (``tokens``,
``token_logprobs``, ``top_logprobs`` as ``{token: logprob}``, ``text_offset`` into the choice's ``text``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from openft.serving.detokenize import token_bytes
from openft.serving.types import GenerationRequest, TopLogprob

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (chat's is the model's limit)


class PromptError(ValueError):
    """A prompt the engine cannot take; the router answers 400 naming ``param``."""

    def __init__(self, message: str, param: str = "prompt") -> None:
        super().__init__(message)
        self.param = param


def prompt_token_lists(prompt: Any, tokenizer) -> list[list[int]]:
    """The four shapes OpenAI accepts: a string, a list of strings, a token-id list, a list of token-id lists."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(item, int) and not isinstance(item, bool) for item in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    vocab = len(tokenizer)
    out = []
    for index, item in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt[{index}]"
        ids = tokenizer.encode(item) if isinstance(item, str) else list(item)
        if not ids:
            raise PromptError(f"'{where}' is empty; give at least one token of prompt.", where)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise PromptError(f"'{where}' holds token id {bad}, outside this model's vocabulary (0..{vocab - 1}).",
                              where)
        out.append(ids)
    return out


def token_string(tokenizer, token_id: int) -> str:
    """A token as the legacy API shows it: its text, or ``bytes:\\xe2\\x80`` when it is part of a character."""
    raw = token_bytes(tokenizer, token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


@dataclass
class Sample:
    """One generation, token by token (``texts[i]`` is the text token i added to the output)."""

    token_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[TopLogprob]] = field(default_factory=list)
    tail: str = ""  # text released by the final event (held-back bytes or stop-string prefixes)
    finish_reason: str = "stop"
    completion_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.texts) + self.tail

    def mean_logprob(self) -> float:
        # best_of ranks by log probability per token; an empty answer has none and ranks last.
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("-inf")


def legacy_logprobs(tokenizer, ids: list[int], logprobs: list[float], tops: list[list[TopLogprob]],
                    texts: list[str], offset: int) -> dict[str, list]:
    """The legacy logprobs object for some tokens; ``offset`` is where the first token's text starts in ``text``.

    ``top_logprobs`` holds the top ``logprobs`` alternatives plus the sampled token, so up to ``logprobs + 1``
    entries, as OpenAI documents.
    """
    tokens = [token_string(tokenizer, t) for t in ids]
    top_maps, offsets = [], []
    for token, logprob, alternatives, text in zip(tokens, logprobs, tops, texts, strict=True):
        entry = {token_string(tokenizer, alt.token_id): alt.logprob for alt in alternatives}
        entry.setdefault(token, logprob)
        top_maps.append(entry)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": list(logprobs), "top_logprobs": top_maps, "text_offset": offsets}


class CompletionPlan:
    """What one completions request generates: one engine request per (prompt, sample)."""

    def __init__(self, body: dict[str, Any], tokenizer, base: GenerationRequest) -> None:
        self.body = body
        self.tokenizer = tokenizer
        self.prompts = prompt_token_lists(body["prompt"], tokenizer)
        self.n = int(body.get("n") or 1)
        self.best_of = int(body.get("best_of") or self.n)
        self.echo = bool(body.get("echo"))
        self.logprobs = body.get("logprobs")  # None, or 0..5 alternatives per token
        self.wants_logprobs = self.logprobs is not None
        needs_logprobs = self.wants_logprobs or self.best_of > self.n
        self.base = dataclasses.replace(base, logprobs=needs_logprobs, top_logprobs=int(self.logprobs or 0))
        self.prompt_texts = [self._decode(ids) for ids in self.prompts]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def request(self, prompt_index: int, sample: int) -> GenerationRequest:
        seed = self.base.seed
        return dataclasses.replace(self.base, prompt_ids=self.prompts[prompt_index],
                                   seed=None if seed is None else seed + sample)

    def choice(self, index: int, prompt_index: int, sample: Sample) -> dict[str, Any]:
        prefix = self.prompt_texts[prompt_index] if self.echo else ""
        logprobs = None
        if self.wants_logprobs:
            count = len(sample.logprobs)
            logprobs = legacy_logprobs(self.tokenizer, sample.token_ids[:count], sample.logprobs, sample.tops[:count],
                                       sample.texts[:count], len(prefix))
        return {"index": index, "text": prefix + sample.text, "finish_reason": _wire_finish(sample.finish_reason),
                "logprobs": logprobs}

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompts)


def _wire_finish(reason: str) -> str:
    return "stop" if reason == "cancelled" else reason


async def collect(generate: Callable[[GenerationRequest], AsyncIterator], request: GenerationRequest) -> Sample:
    sample = Sample()
    async with contextlib.aclosing(generate(request)) as events:
        async for event in events:
            if event.finish_reason is not None:
                sample.tail, sample.finish_reason = event.text, event.finish_reason
                sample.completion_tokens = event.usage.completion_tokens if event.usage else len(sample.token_ids)
                return sample
            sample.token_ids.append(event.token_id)
            sample.texts.append(event.text)
            if event.logprob is not None:
                sample.logprobs.append(event.logprob)
                sample.tops.append(event.top_logprobs or [])
    return sample


async def whole(plan: CompletionPlan, generate) -> tuple[list[dict[str, Any]], int]:
    """Every choice, and the completion tokens generated (best_of's discarded samples included: they ran)."""
    jobs = [collect(generate, plan.request(p, s)) for p in range(len(plan.prompts)) for s in range(plan.best_of)]
    samples = await asyncio.gather(*jobs)
    choices = []
    for prompt_index in range(len(plan.prompts)):
        mine = samples[prompt_index * plan.best_of : (prompt_index + 1) * plan.best_of]
        if plan.best_of > plan.n:
            mine = sorted(mine, key=Sample.mean_logprob, reverse=True)[: plan.n]
        for rank, sample in enumerate(mine):
            choices.append(plan.choice(prompt_index * plan.n + rank, prompt_index, sample))
    return choices, sum(s.completion_tokens for s in samples)


async def streamed(plan: CompletionPlan, generate) -> AsyncIterator[tuple[dict[str, Any] | None, int]]:
    """Choice deltas as tokens arrive, all choices interleaved; ``(None, completion_tokens)`` comes last.

    best_of > n cannot stream (the router refuses it): the best samples are known only at the end.
    """
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def run(index: int, prompt_index: int) -> None:
        prefix_len = len(plan.prompt_texts[prompt_index]) if plan.echo else 0
        offset, tokens = prefix_len, 0
        try:
            if plan.echo:
                await queue.put(_delta(index, plan.prompt_texts[prompt_index]))
            async with contextlib.aclosing(generate(plan.request(prompt_index, index % plan.n))) as events:
                async for event in events:
                    if event.finish_reason is not None:
                        tokens = event.usage.completion_tokens if event.usage else tokens
                        await queue.put(_delta(index, event.text, finish=_wire_finish(event.finish_reason)))
                        break
                    tokens += 1
                    logprobs = None
                    if plan.wants_logprobs and event.logprob is not None:
                        logprobs = legacy_logprobs(plan.tokenizer, [event.token_id], [event.logprob],
                                                   [event.top_logprobs or []], [event.text], offset)
                    offset += len(event.text)
                    if event.text or logprobs:
                        await queue.put(_delta(index, event.text, logprobs=logprobs))
            await queue.put((done, tokens))
        except Exception as error:  # surfaced to the consumer, which raises it
            await queue.put(error)

    tasks = [asyncio.create_task(run(p * plan.n + s, p)) for p in range(len(plan.prompts)) for s in range(plan.n)]
    finished, generated = 0, 0
    try:
        while finished < len(tasks):
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if isinstance(item, tuple):
                finished, generated = finished + 1, generated + item[1]
                continue
            yield item, 0
        yield None, generated
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _delta(index: int, text: str, finish: str | None = None, logprobs=None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
