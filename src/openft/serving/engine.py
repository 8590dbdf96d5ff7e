"""The local generation engine: one model thread, continuous batching, mixed LoRA adapters per batch.

Async callers submit requests; one background thread owns the model and loops: drop cancelled rows, admit
waiting requests (prefill them together), then run one decode step for every running row. Prefill is chunked
as vLLM's is: a pass takes at most ``max_prefill_tokens`` prompt tokens, so a long prompt is prefilled a chunk
per loop with the running rows' decode steps in between, and streams already running keep their pace. Each
row carries its own adapter name (PEFT's ``adapter_names``), sampler settings, RNG, stop rules and grammar
matcher, so requests for different adapters and settings share each forward pass. Tokens travel back to the
caller's event loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from openft.serving import grammar as grammars
from openft.serving import kv_batch, lora_batch
from openft.serving.adapters import AdapterCache, AdapterResolver
from openft.serving.decode_step import LlamaDecodeStep
from openft.serving.decode_weights import native_decode_enabled
from openft.serving.detokenize import IncrementalDetokenizer, StopStringFilter
from openft.serving.sampling import logprobs_for, sample_row
from openft.serving.types import (
    BASE_ADAPTER,
    Completion,
    EngineOverloaded,
    FinishReason,
    GenerationRequest,
    RequestTooLarge,
    TokenEvent,
    Usage,
)

log = logging.getLogger(__name__)

ModelLoader = Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]


@dataclass
class EngineStats:
    forward_steps: int = 0
    prefill_steps: int = 0
    decode_steps: int = 0
    max_batch_size_seen: int = 0
    multi_request_steps: int = 0
    mixed_adapter_steps: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    generated_tokens: int = 0
    prefill_chunks: int = 0  # prefill forward passes; more than prefill_steps when long prompts were chunked


@dataclass(eq=False)
class _Sequence:
    """One request's state inside the model thread."""

    request: GenerationRequest
    deliver: Callable[[TokenEvent | BaseException], None]
    budget: int
    adapter_name: str = BASE_ADAPTER
    generated: list[int] = field(default_factory=list)
    length: int = 0  # real tokens in the KV cache
    next_token: int | None = None  # sampled, not yet fed to the model
    generator: torch.Generator | None = None
    detok: IncrementalDetokenizer | None = None
    stops: StopStringFilter | None = None
    matcher: grammars.llguidance.LLMatcher | None = None  # the grammar's state, for constrained requests
    stop_ids: frozenset[int] = frozenset()
    cancelled: bool = False
    released: bool = False


@dataclass(eq=False)
class _Prefill:
    """Admitted requests whose (left-padded) prompts go into their own KV cache a chunk of columns at a time."""

    sequences: list[_Sequence]
    input_ids: torch.Tensor  # [rows, longest prompt]
    mask: torch.Tensor
    position_ids: torch.Tensor
    cache: DynamicCache
    done: int = 0  # columns already in the cache


# A prefill pass's prompt tokens (rows x padded width) at most, as vLLM's chunked prefill budget. A 2,000-token
# prompt joining four running streams on the bundled model (2 cores, fp32) held every stream for 2.7 s in one
# pass; in chunks of 512 the longest gap is 1.1 s and the long request's first token comes 1.2x later
# (256: 0.65 s and 1.3x; bench/prefill_interleave.py, docs/performance.md).
DEFAULT_MAX_PREFILL_TOKENS = 512


class Engine:
    """Serves one base model and its LoRA adapters.

    ``max_queue``: requests waiting for a batch slot; ``max_total_tokens``: prompt + max_new_tokens summed over
    every admitted request (queued and running). Beyond either, ``generate`` raises ``EngineOverloaded``.
    ``max_prefill_tokens``: the prompt tokens (rows x padded width) one prefill pass takes; longer prompts are
    prefilled in chunks between decode steps, and requests waiting to join are admitted while they fit
    (always at least one). None: every admitted prompt in one pass. ``native_decode``: run single-row decode
    steps as one compiled call (serving/native_decode.py); None: ``OPENFT_SERVING_NATIVE_DECODE`` decides.
    """

    def __init__(
        self,
        model_loader: ModelLoader,
        adapter_resolver: AdapterResolver | None = None,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        max_total_tokens: int = 262_144,
        max_loaded_adapters: int = 8,
        max_prefill_tokens: int | None = DEFAULT_MAX_PREFILL_TOKENS,
        native_decode: bool | None = None,
        name: str = "engine",
    ) -> None:
        if max_prefill_tokens is not None and max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be at least 1, got {max_prefill_tokens}")
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        # Single-row decode steps as one native call (serving/native_decode.py); None: the setting decides.
        self.native_decode = native_decode_enabled() if native_decode is None else native_decode
        self.max_queue = max_queue
        self.max_total_tokens = max_total_tokens
        self._loader = model_loader
        self._resolver = adapter_resolver
        self._max_loaded_adapters = max_loaded_adapters
        self._name = name
        self._lock = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._prefilling: _Prefill | None = None  # admitted, their prompts part-way into the cache
        self._tokens_in_flight = 0
        self._closed = False
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._stats = EngineStats()
        self._thread: threading.Thread | None = None
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self.model: PreTrainedModel | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.adapters: AdapterCache | None = None
        self._grammar_vocab: grammars.GrammarVocabulary | None = None
        self._default_stop_ids: frozenset[int] = frozenset()
        self._max_positions = 1 << 30
        self._batched_lora: lora_batch.BatchedLora | None = None
        self._lora_version = 0
        self._decode_step: LlamaDecodeStep | None = None

    # ----- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the model thread (loads the model there); idempotent."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"openft-{self._name}", daemon=True)
                self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        self.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("model did not load in time")
        if self._load_error is not None:
            raise RuntimeError(f"model failed to load: {self._load_error}") from self._load_error

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def stats(self) -> dict:
        prefill = self._prefilling  # read once: the model thread may finish it meanwhile
        with self._lock:
            out = dict(vars(self._stats))
            out.update(
                running=sum(not s.cancelled for s in self._running),
                prefilling=len(prefill.sequences) if prefill is not None else 0,
                waiting=len(self._waiting),
                tokens_in_flight=self._tokens_in_flight,
                loaded_adapters=list(self.adapters.loaded_keys) if self.adapters else [],
                adapter_loads=self.adapters.loads if self.adapters else 0,
                adapter_evictions=self.adapters.evictions if self.adapters else 0,
                native_decode_steps=self._decode_step.native_steps if self._decode_step is not None else 0,
            )
        return out

    # ----- async API ---------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Yield one event per generated token, then a final event with ``finish_reason`` and ``usage``.

        Stopping iteration early (or cancelling the task) removes the request from the batch.
        """
        request.validate()
        if not self._ready.is_set():
            await asyncio.to_thread(self.wait_ready)
        if self._load_error is not None:
            raise RuntimeError(f"model failed to load: {self._load_error}") from self._load_error
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()

        def deliver(event: TokenEvent | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the consumer's loop is gone; the sequence gets cancelled below
                sequence.cancelled = True

        sequence = self._submit(request, deliver)
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            self._cancel(sequence)

    async def complete(self, request: GenerationRequest) -> Completion:
        """Run ``generate`` to the end and collect the text, tokens and logprobs."""
        text, ids, logprobs, tops = [], [], [], []
        async for event in self.generate(request):
            text.append(event.text)
            if event.finish_reason is not None:
                return Completion(
                    text="".join(text),
                    token_ids=ids,
                    finish_reason=event.finish_reason,
                    usage=event.usage or Usage(len(request.prompt_ids), len(ids)),
                    logprobs=logprobs if request.logprobs else None,
                    top_logprobs=tops if request.logprobs and request.top_logprobs else None,
                )
            ids.append(event.token_id)
            logprobs.append(event.logprob)
            tops.append(event.top_logprobs or [])
        raise RuntimeError("generation ended without a final event")

    # ----- admission ----------------------------------------------------------------------------------------

    def _submit(self, request: GenerationRequest, deliver) -> _Sequence:
        budget = len(request.prompt_ids) + request.max_new_tokens
        if budget > self.max_total_tokens:
            raise RequestTooLarge(
                f"prompt ({len(request.prompt_ids)} tokens) plus max_tokens ({request.max_new_tokens}) exceeds "
                f"this server's limit of {self.max_total_tokens} tokens per request",
                "max_tokens",
            )
        if len(request.prompt_ids) >= self._max_positions:
            raise RequestTooLarge(
                f"prompt has {len(request.prompt_ids)} tokens; the model's context is {self._max_positions} tokens",
                "messages",
            )
        if budget > self._max_positions:
            # As OpenAI: refuse rather than silently stop at the context limit.
            raise RequestTooLarge(
                f"This model's maximum context length is {self._max_positions} tokens. However, you requested "
                f"{budget} tokens ({len(request.prompt_ids)} in the prompt, {request.max_new_tokens} for the "
                "completion). Reduce max_tokens or the prompt.",
                "max_tokens",
            )
        with self._lock:
            if self._closed:
                raise EngineOverloaded("the engine is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise EngineOverloaded(
                    f"too many requests waiting ({len(self._waiting)} queued, limit {self.max_queue}); retry later"
                )
            if self._tokens_in_flight + budget > self.max_total_tokens:
                raise EngineOverloaded(
                    f"too many tokens in flight ({self._tokens_in_flight} + {budget} requested, limit "
                    f"{self.max_total_tokens}); retry later"
                )
            if request.adapter is not None and self.adapters is not None:
                self.adapters.resolve(request.adapter)  # unknown adapters fail now, not in the model thread
            sequence = _Sequence(request=request, deliver=deliver, budget=budget)
            self._tokens_in_flight += budget
            self._waiting.append(sequence)
            self._lock.notify_all()
        return sequence

    def _cancel(self, sequence: _Sequence) -> None:
        with self._lock:
            sequence.cancelled = True
            self._lock.notify_all()

    # ----- model thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            model, tokenizer = self._loader()
            model.eval()
            self.model, self.tokenizer = model, tokenizer
            eos = model.generation_config.eos_token_id if model.generation_config is not None else None
            eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
            self._default_stop_ids = frozenset(i for i in [*eos_ids, tokenizer.eos_token_id] if i is not None)
            self._max_positions = getattr(model.config, "max_position_embeddings", 1 << 30)
            if LlamaDecodeStep.supports(model):
                self._decode_step = LlamaDecodeStep(model, native=self.native_decode)
            self.adapters = AdapterCache(model, self._resolver, self._max_loaded_adapters, kernel=self._kernel())
        except BaseException as exc:  # surfaced to callers by wait_ready
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._closed and not self._waiting and not self._running and not self._prefilling:
                        self._lock.wait()
                    if self._closed:
                        break
                    joining = self._take_waiting()
                try:
                    self._step(joining)
                except Exception as exc:  # a bug or OOM must not hang every caller: fail the batch
                    log.exception("engine step failed")
                    prefilling = self._prefilling.sequences if self._prefilling is not None else []
                    for sequence in self._running + prefilling + joining:
                        self._finish_with_error(sequence, exc)
                        self._release(sequence, cancelled=False)
                    self._running, self._cache, self._mask, self._prefilling = [], None, None, None
        prefilling = self._prefilling.sequences if self._prefilling is not None else []
        for sequence in list(self._running) + prefilling + list(self._waiting):
            sequence.deliver(EngineOverloaded("the engine shut down"))

    def _take_waiting(self) -> list[_Sequence]:
        """The requests that join next, in arrival order: none while a prefill is part-way; otherwise while
        the batch has room and their padded prompts fit in ``max_prefill_tokens`` (the first one always)."""
        joining: list[_Sequence] = []
        if self._prefilling is not None:
            return joining
        longest, budget = 0, self.max_prefill_tokens
        while self._waiting and len(self._running) + len(joining) < self.max_batch_size:
            sequence = self._waiting[0]
            if sequence.cancelled:
                self._release(self._waiting.popleft(), cancelled=True)
                continue
            width = max(longest, len(sequence.request.prompt_ids))
            if joining and budget is not None and width * (len(joining) + 1) > budget:
                break
            joining.append(self._waiting.popleft())
            longest = width
        return joining

    def _step(self, joining: list[_Sequence]) -> None:
        self._drop_finished()
        admitted = [s for s in joining if self._prepare(s)]
        if admitted:
            # Each adapter's rows side by side (stable: arrival order within one): the prefill pass then runs
            # each adapter on a slice of the batch, with no gather and scatter copies (lora_batch.py).
            admitted.sort(key=lambda sequence: sequence.adapter_name)
            self._prefilling = self._start_prefill(admitted)
        if self._prefilling is not None:
            self._prefill_chunk()
            self._drop_finished()
        if self._running:
            self._decode()
            self._drop_finished()

    def _prepare(self, sequence: _Sequence) -> bool:
        request = sequence.request
        try:
            sequence.adapter_name = self.adapters.acquire(request.adapter)
        except Exception as exc:
            self._finish_with_error(sequence, exc)
            self._release(sequence, cancelled=False)
            return False
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        sequence.generator = torch.Generator().manual_seed(seed)
        sequence.detok = IncrementalDetokenizer(self.tokenizer, request.prompt_ids)
        sequence.stops = StopStringFilter(request.stop_strings)
        default_stops = frozenset() if request.ignore_eos else self._default_stop_ids
        sequence.stop_ids = frozenset(request.stop_token_ids) | default_stops
        grammar = grammars.json_object_grammar() if request.json_mode else request.grammar
        if grammar is not None:
            try:
                sequence.matcher = self._grammar_vocabulary().matcher(grammar)
            except Exception as exc:
                self._finish_with_error(sequence, exc)
                self._release(sequence, cancelled=False)
                return False
            # A grammar decides when the output may end; the tokenizer's EOS always ends a constrained row.
            if self.tokenizer.eos_token_id is not None:
                sequence.stop_ids |= {self.tokenizer.eos_token_id}
        return True

    # ----- forward passes -----------------------------------------------------------------------------------

    def _forward(self, sequences, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        adapter_names = [s.adapter_name for s in sequences]
        kwargs = {}
        only_base = contextlib.nullcontext()
        if self.adapters.model is not self.model:
            if self._lora_version != self.adapters.version:
                self._sync_batched_lora()
            if self._batched_lora is not None:
                self._batched_lora.set_rows(adapter_names)
                if all(name == BASE_ADAPTER for name in adapter_names):
                    only_base = self._batched_lora.base_only()
            else:
                kwargs["adapter_names"] = adapter_names
        with only_base:
            if self._decode_step is not None and input_ids.shape[1] == 1 and not kwargs:
                logits = self._decode_step(input_ids, attention_mask, position_ids, cache, self._batched_lora)
            else:
                logits = self.adapters.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    **kwargs,
                ).logits[:, -1, :]
        stats = self._stats
        stats.forward_steps += 1
        stats.max_batch_size_seen = max(stats.max_batch_size_seen, len(sequences))
        if len(sequences) > 1:
            stats.multi_request_steps += 1
        if len(set(adapter_names)) > 1:
            stats.mixed_adapter_steps += 1
        return logits.float()

    def _kernel(self):
        """The native extension (where the decode step built it): BatchedLora's decode updates run on it."""
        return self._decode_step.extension if self._decode_step is not None else None

    def _sync_batched_lora(self) -> None:
        model = self.adapters.model
        if lora_batch.supports(model):
            if self._batched_lora is None:
                self._batched_lora = lora_batch.BatchedLora(model, kernel=self._kernel())
            self._batched_lora.rebuild(self.adapters.loaded_names)
        elif self._batched_lora is not None:
            log.info("an adapter needs PEFT's own mixed-batch forward; switching to adapter_names")
            self._batched_lora.remove()
            self._batched_lora = None
        self._lora_version = self.adapters.version

    def _start_prefill(self, sequences: list[_Sequence]) -> _Prefill:
        longest = max(len(s.request.prompt_ids) for s in sequences)
        input_ids = torch.zeros((len(sequences), longest), dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            prompt = sequence.request.prompt_ids
            input_ids[row, longest - len(prompt) :] = torch.tensor(prompt)
            mask[row, longest - len(prompt) :] = 1
            sequence.length = len(prompt)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return _Prefill(sequences, input_ids, mask, position_ids, kv_batch.new_cache(self.model.config))

    def _prefill_chunk(self) -> None:
        """The next chunk of the prefilling prompts; after the last one the rows join the running batch."""
        prefill = self._prefilling
        if all(sequence.cancelled for sequence in prefill.sequences):  # every caller left: stop paying for it
            for sequence in prefill.sequences:
                self._release(sequence, cancelled=True)
            self._prefilling = None
            return
        rows, width = prefill.input_ids.shape
        end = width
        if self.max_prefill_tokens is not None:
            end = min(width, prefill.done + max(1, self.max_prefill_tokens // rows))
        columns = slice(prefill.done, end)
        logits = self._forward(
            prefill.sequences, prefill.input_ids[:, columns], prefill.mask[:, :end],
            prefill.position_ids[:, columns], prefill.cache,
        )  # fmt: skip
        # After every chunk, not only the last: the next chunk's real tokens attend over these positions.
        kv_batch.zero_padding(prefill.cache, prefill.mask[:, :end])
        prefill.done = end
        self._stats.prefill_chunks += 1
        if end < width:
            return
        self._prefilling = None
        self._stats.prefill_steps += 1
        self._cache, self._mask = kv_batch.merge(self._cache, self._mask, prefill.cache, prefill.mask)
        self._running.extend(prefill.sequences)
        self._sample(prefill.sequences, logits)

    def _decode(self) -> None:
        sequences = self._running
        input_ids = torch.tensor([[s.next_token] for s in sequences], dtype=torch.long)
        position_ids = torch.tensor([[s.length] for s in sequences], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(sequences), 1), dtype=self._mask.dtype)], dim=1)
        logits = self._forward(sequences, input_ids, self._mask, position_ids, self._cache)
        self._stats.decode_steps += 1
        for sequence in sequences:
            sequence.length += 1
        self._sample(sequences, logits)

    # ----- sampling and output ------------------------------------------------------------------------------

    def _sample(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        self._apply_grammars(sequences, logits)
        greedy = torch.argmax(logits, dim=-1).tolist()
        for row, sequence in enumerate(sequences):
            if sequence.cancelled:
                continue
            request = sequence.request
            token, processed = sample_row(
                logits[row],
                temperature=request.temperature,
                top_p=request.top_p,
                generator=sequence.generator,
                greedy_token=greedy[row],
            )
            self._emit(sequence, token, processed)

    def _apply_grammars(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        """Mask the logits of constrained rows (unconstrained rows in the batch are left as they are)."""
        rows = [row for row, s in enumerate(sequences) if s.matcher is not None and not s.cancelled]
        if not rows:
            return
        vocab = self._grammar_vocabulary()
        allowed = vocab.allowed([sequences[r].matcher for r in rows], [sequences[r].stop_ids for r in rows])
        for index in (~allowed.any(axis=1)).nonzero()[0].tolist():
            sequence = sequences[rows[index]]  # a grammar with no way forward is a bug, never a silent stop
            reason = sequence.matcher.get_error() or "no token can continue the grammar"
            self._finish_with_error(sequence, grammars.GrammarError(reason))
        vocab.mask_logits(logits, rows, allowed)

    def _emit(self, sequence: _Sequence, token: int, processed: torch.Tensor) -> None:
        request = sequence.request
        sequence.generated.append(token)
        self._stats.generated_tokens += 1
        if token in sequence.stop_ids:
            self._finish(sequence, "stop", text="")
            return
        logprob, tops = None, None
        if request.logprobs:
            logprob, tops = logprobs_for(processed, token, request.top_logprobs, self.token_text)
        text = sequence.stops.push(sequence.detok.push(token))
        finish: FinishReason | None = None
        if sequence.matcher is not None:
            grammars.advance(sequence.matcher, token)
            if grammars.is_finished(sequence.matcher):
                finish = "stop"  # the grammar is complete and nothing can follow
        if sequence.stops.stopped:
            finish = "stop"
        elif finish is None and len(sequence.generated) >= request.max_new_tokens:
            finish = "length"
        elif finish is None and sequence.length + 1 >= self._max_positions:
            finish = "length"
        sequence.deliver(TokenEvent(token_id=token, text=text, logprob=logprob, top_logprobs=tops))
        if finish is not None:
            tail = "" if sequence.stops.stopped else sequence.stops.push(sequence.detok.flush())
            self._finish(sequence, finish, text=tail + sequence.stops.flush())
        else:
            sequence.next_token = token

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _grammar_vocabulary(self) -> grammars.GrammarVocabulary:
        if self._grammar_vocab is None:  # built on first use: ~0.7 s for a 49k vocabulary
            vocab_size = self.model.get_output_embeddings().weight.shape[0]
            self._grammar_vocab = grammars.GrammarVocabulary(self.tokenizer, vocab_size)
        return self._grammar_vocab

    # ----- leaving the batch --------------------------------------------------------------------------------

    def _finish(self, sequence: _Sequence, reason: FinishReason, text: str) -> None:
        usage = Usage(prompt_tokens=len(sequence.request.prompt_ids), completion_tokens=len(sequence.generated))
        sequence.deliver(TokenEvent(token_id=None, text=text, finish_reason=reason, usage=usage))
        sequence.next_token = None
        sequence.cancelled = True  # the row leaves the batch before the next forward pass
        self._stats.requests_finished += 1
        self._release(sequence, cancelled=False)

    def _finish_with_error(self, sequence: _Sequence, exc: BaseException) -> None:
        if not sequence.released:
            sequence.deliver(exc)
        sequence.cancelled = True

    def _drop_finished(self) -> None:
        keep = [row for row, s in enumerate(self._running) if not s.cancelled]
        if len(keep) == len(self._running):
            return
        for sequence in self._running:
            if sequence.cancelled:
                self._release(sequence, cancelled=True)  # no-op for finished rows: _finish released them
        self._running = [self._running[row] for row in keep]
        if self._running:
            self._cache, self._mask = kv_batch.select_rows(self._cache, self._mask, keep)
        else:
            self._cache, self._mask = None, None

    def _release(self, sequence: _Sequence, cancelled: bool) -> None:
        if sequence.released:
            return
        sequence.released = True
        if sequence.detok is not None:  # set only once the adapter was acquired
            self.adapters.release(sequence.request.adapter)
        if cancelled:
            self._stats.requests_cancelled += 1
        with self._lock:
            self._tokens_in_flight -= sequence.budget
