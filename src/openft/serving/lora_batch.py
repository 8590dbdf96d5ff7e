"""Mixed-adapter LoRA for a whole batch in three matrix ops per layer and decode step.

PEFT's ``adapter_names`` path loops over the adapters in every LoRA layer (gather rows, two small matmuls,
scatter back): with 4 adapters and ~200 adapted layers that is thousands of tiny ops per decode step. Here
each adapted ``nn.Linear`` keeps every loaded adapter side by side, ``A = [A_1 | A_2 | ...]`` and
``B = [B_1 ; B_2 ; ...]``; a per-row mask over the concatenated rank keeps each row's own adapter and
carries its scaling ``s_i``, so ``delta = ((x @ A) * mask_row) @ B`` serves every row at once (base rows have
an all-zero mask). PEFT's own ``lora_A``/``lora_B`` weights are then made views into the stack, so an adapter's
weights are in memory once, not twice (the adapter byte cap counts PEFT's parameters: now what is held).
When the batch uses at most half of the loaded adapters, the step multiplies by a stack of only those (built
once per set of adapters in use and kept while it lasts): otherwise 64 loaded rank-16 adapters would make
every decode step pay for a rank-1024 LoRA, more work than the base layer itself, whatever the batch uses.
From ``GROUPED_MIN_SLOTS`` adapters in the multiplied stack on, the mask's wasted arithmetic (every row times
every adapter) costs more than the ops it saves, and decode steps instead pad each adapter's rows into one
batch and run ``torch.bmm`` over [adapters, rows per adapter, width]: each row meets only its own adapter.
PEFT's own layers are switched to base-only and a forward hook adds the delta. Prefill passes (many
tokens per row) instead run each adapter on its own rows only: there the FLOPs, not the op count, dominate.
Where the engine runs the native decode step, decode steps hand every layout to its ``lora_rows`` kernel
instead (serving/native_decode.py): each adapter's rows times its own A and B, read once, in one call a layer,
from the full stack (it reads only the slots that have rows, so a batch's subset needs no stack of its own).
On layers whose base reads q4 decode weights the kernel reads bf16 copies of the stacks (``kernel_copy_dtype``):
half the bytes, at the precision of those layers' own bf16 batch copies, multiplied with vdpbf16ps where the CPU
has AVX512-BF16 (x and ``x @ A`` then rounded to bf16 too); PyTorch's paths keep the fp32 stack.

Only plain LoRA on linear layers is handled (no DoRA/variants, no LoRA bias, no fan_in_fan_out);
``supports`` says when the engine must fall back to PEFT's ``adapter_names``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer

from openft.serving.q4_linear import Q4DecodeLinear
from openft.serving.types import BASE_ADAPTER


def supports(model: PeftModel) -> bool:
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear) or module.fan_in_fan_out:
            return False
        if module.lora_variant or any(module.lora_bias.values()) or module.lora_embedding_A:
            return False
    return True


# From this many adapters in one stack, decode steps run each adapter on its own rows as one batched product
# (torch.bmm over [adapters, rows per adapter, width]) instead of every adapter on every row: the masked
# product's work grows with rows x adapters, and past a handful of adapters that arithmetic, not reading the
# weights, sets the step's time. All 210 adapted layers of the bundled model, rank 16, 2 cores: 64 rows with 64
# adapters 189 ms masked / 77 ms batched, 16 rows with 16 adapters 31 / 21 ms, 16 rows with 8 (5 in use)
# 18 / 16 ms; with 4 adapters the masked product is as fast or faster (16 rows: 10.1 / 11.5 ms).
GROUPED_MIN_SLOTS = 8
# From this many adapters in a prefill pass, each row's own A and B are gathered from the stack and two
# batched products cover the batch, instead of a loop of three ops per adapter. 64 rows x 30 tokens, 210
# layers, rows sorted by adapter: 8 adapters 223 ms looped / 238 gathered, 16: 280 / 239, 64: 531 / 281.
PREFILL_GATHER_MIN_ADAPTERS = 16


@dataclass(frozen=True)
class _Stacked:
    """Adapters side by side for one layer. Masked form: ``a`` [in, R], ``b`` [R, out] with R the ranks'
    sum. Grouped form (every slot present with the same rank r): ``a`` [slots, in, r], ``b`` [slots, r, out]."""

    a: torch.Tensor | None
    b: torch.Tensor | None
    layout: tuple[int, ...]  # each slot's rank here, 0 where the adapter has no LoRA on this layer
    grouped: bool
    scales: tuple[float, ...]  # each slot's LoRA scaling (alpha / r), applied to ``x @ A``; B is unscaled
    # Grouped form with scalings other than 1: [slots, 1, 1] to multiply ``x @ A`` by, else None.
    scale_column: torch.Tensor | None = None
    # ``layout`` and ``scales`` as tensors, for the native kernel (``BatchedLora.kernel``).
    ranks: torch.Tensor | None = None
    scale_values: torch.Tensor | None = None
    # bf16 copies of ``a`` and ``b`` for the native kernel (``kernel_copy_dtype``); None: it reads ``a``, ``b``.
    kernel_a: torch.Tensor | None = None
    kernel_b: torch.Tensor | None = None

    def kernel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) as the native kernel reads them."""
        return (self.a, self.b) if self.kernel_a is None else (self.kernel_a, self.kernel_b)

    def views(self) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Each slot's own (A, B) as views into the stack (no second copy), None where it has none."""
        if self.grouped:
            return [(self.a[slot], self.b[slot]) for slot in range(len(self.layout))]
        views, start = [], 0
        for width in self.layout:
            end = start + width
            views.append((self.a[:, start:end], self.b[start:end]) if width else None)
            start = end
        return views


def kernel_copy_dtype(layer: LoraLinear, kernel) -> torch.dtype | None:
    """The dtype of the copies of ``layer``'s adapters that the native kernel reads, None for none (it reads
    the fp32 stack). A layer whose base reads q4 decode weights (q4_linear.py: 4-bit single rows, bf16 copies
    for batches) gets bf16 copies: half the bytes a decode step reads for its adapters, at the precision of the
    base's own batch copies. Summed in fp32 either way."""
    return torch.bfloat16 if kernel is not None and type(layer.get_base_layer()) is Q4DecodeLinear else None


def kernel_copy_bytes(model: torch.nn.Module, name: str, kernel) -> int:
    """Bytes of the copies of adapter ``name``'s weights that a BatchedLora given ``kernel`` keeps for it."""
    total = 0
    for layer in model.modules():
        if isinstance(layer, LoraLinear) and name in layer.lora_A:
            copy = kernel_copy_dtype(layer, kernel)
            if copy is not None:
                weights = layer.lora_A[name].weight.numel() + layer.lora_B[name].weight.numel()
                total += weights * copy.itemsize
    return total


def _stack(parts: list[tuple[torch.Tensor, torch.Tensor] | None], scales: tuple[float, ...]) -> _Stacked:
    layout = tuple(0 if part is None else part[0].shape[1] for part in parts)
    present = [part for part in parts if part is not None]
    if not present:
        return _Stacked(None, None, layout, False, scales)
    tensors = {"ranks": torch.tensor(layout, dtype=torch.long), "scale_values": torch.tensor(scales)}
    # A is stored as [R, in] (PEFT's own layout) and used through its transpose: each rank's column is then
    # contiguous, as the native kernel's dot products read it; MKL takes either layout.
    if len(parts) >= GROUPED_MIN_SLOTS and len(present) == len(parts) and len(set(layout)) == 1:
        a = torch.stack([part[0].t() for part in parts]).transpose(1, 2)
        b = torch.stack([part[1] for part in parts])
        column = None
        if any(scale != 1.0 for scale in scales):
            column = torch.tensor(scales, dtype=a.dtype).view(-1, 1, 1)
        return _Stacked(a, b, layout, True, scales, column, **tensors)
    if len(present) == 1:  # one adapter (the only one loaded, or a batch's subset of one): its weights, no copy
        return _Stacked(present[0][0], present[0][1], layout, False, scales, **tensors)
    a = torch.cat([part[0].t() for part in present], dim=0).t()
    b = torch.cat([part[1] for part in present], dim=0).contiguous()
    return _Stacked(a, b, layout, False, scales, **tensors)


class _LayerStack:
    def __init__(self, layer: LoraLinear, slots: list[str], copy: torch.dtype | None = None) -> None:
        dtype = layer.get_base_layer().weight.dtype  # the activations' dtype; PEFT keeps adapters in fp32
        parts, scales = [], []
        for name in slots:
            if name in layer.lora_A:
                a = layer.lora_A[name].weight.t().to(dtype)  # [in, r]
                # [r, out] with each rank's row contiguous, as the native kernel reads B (PEFT's own weight is
                # [out, r]; it becomes a view of this copy below, so the adapter is still in memory once).
                b = layer.lora_B[name].weight.t().to(dtype).contiguous()
                parts.append((a, b))
                scales.append(float(layer.scaling[name]))
            else:
                parts.append(None)
                scales.append(0.0)
        self.scales = tuple(scales)
        self.full = _stack(parts, self.scales)
        if copy is not None and self.full.a is not None:
            # Only the full stack: the kernel reads it for any batch. ``to`` keeps the strides (A is [R, in]).
            self.full = replace(self.full, kernel_a=self.full.a.to(copy), kernel_b=self.full.b.to(copy))
        self.per_slot = self.full.views()
        self._subset: tuple[tuple[int, ...], _Stacked] | None = None
        # PEFT's weights become views into the stack: one copy of each adapter in memory, not two. Only when
        # the stack keeps PEFT's dtype (fp32 activations); a bf16 stack is a separate copy.
        for name, part in zip(slots, self.per_slot, strict=True):
            if part is not None and part[0].dtype == layer.lora_A[name].weight.dtype:
                layer.lora_A[name].weight.data = part[0].t()
                layer.lora_B[name].weight.data = part[1].t()

    def subset(self, used: tuple[int, ...]) -> _Stacked:
        """The stack of only the slots in ``used`` (0-based), in that order; the last one is kept."""
        if self._subset is None or self._subset[0] != used:
            parts = [self.per_slot[slot] for slot in used]
            self._subset = (used, _stack(parts, tuple(self.scales[slot] for slot in used)))
        return self._subset[1]


@dataclass(frozen=True)
class _Grouping:
    """Where a decode step's rows go in the grouped product's [slots, per_slot, width] batch and back."""

    per_slot: int  # the most rows any one slot has (the others are padded with zero rows)
    positions: torch.Tensor  # each adapter row's place: its slot * per_slot + its rank among that slot's rows
    rows: torch.Tensor | None  # the rows that use an adapter, None when all do
    # Each place's row in the output. Padding places add their delta, exactly zero (zero input rows, finite
    # weights: adapters with non-finite weights are refused at load), to row 0: one index_add_ for all.
    targets: torch.Tensor

    @classmethod
    def of(cls, row_slots: torch.Tensor, slots: int) -> _Grouping:
        """``row_slots``: each row's 1-based slot in a stack of ``slots`` (0: the base model)."""
        rows = (row_slots > 0).nonzero().flatten()
        slot = row_slots[rows] - 1
        counts = torch.bincount(slot, minlength=slots)
        order = torch.argsort(slot, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(slot)
        rank[order] = torch.arange(len(slot)) - starts[slot[order]]
        per_slot = int(counts.max())
        positions = slot * per_slot + rank
        targets = torch.zeros(slots * per_slot, dtype=torch.long)
        targets[positions] = rows
        return cls(per_slot, positions, None if len(rows) == len(row_slots) else rows, targets)


_generations = itertools.count()


class BatchedLora:
    """Owns the stacked adapter weights and the per-step row masks; installed once per PeftModel."""

    def __init__(self, model: PeftModel, kernel=None) -> None:
        self._model = model
        # The native extension (serving/native_decode.py), whose ``lora_rows`` then adds decode steps' updates.
        self.kernel = kernel
        self._layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
        self._stacks: dict[int, _LayerStack] = {}
        self._slots: list[str] = []
        self._masks: dict[tuple[int, ...], torch.Tensor] | None = None
        self._row_slots: torch.Tensor | None = None
        # Decode over a subset: the slots in use (0-based), and each row's 1-based position among them (0: base).
        self._used: tuple[int, ...] | None = None
        self._used_row_slots: torch.Tensor | None = None
        self._used_masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._groupings: dict[bool, _Grouping] = {}  # by whether the step multiplies by a subset
        # The kernel's arguments for a group of layers (their ids and output offsets): built once per set of
        # loaded adapters, not on each of a decode step's ~120 calls.
        self._kernel_args: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple] = {}
        self._one_adapter = False  # every row of the pass uses the same adapter
        self._adapters_in_pass = 0  # how many distinct adapters the pass's rows use
        self._token_row_slots: tuple[int, torch.Tensor] | None = None  # (tokens, each position's slot)
        self.bypassed = False  # inside base_only: the model's layers are the base layers
        self.generation = next(_generations)  # which stacks these are: changes with every rebuild
        self._only_slot = 0  # then its 0-based slot in the full stack
        # Prefill with many adapters: the rows that use one, their 0-based slots, and whether that is every row.
        self._adapter_rows: tuple[torch.Tensor, torch.Tensor, bool] | None = None
        self._padded: tuple[torch.Tensor, _Grouping, torch.Tensor] | None = None  # (input, for, its batch)
        self._groups: list[tuple[int, torch.Tensor | slice]] | None = None  # (slot, rows using it), no base rows
        self._handles = [layer.register_forward_hook(self._hook) for layer in self._layers]
        self._places: list[tuple[torch.nn.Module, str, LoraLinear]] = []  # where each LoRA layer sits

    def rebuild(self, adapter_names: list[str]) -> None:
        """Call after adapters were loaded or deleted (PEFT adds LoRA layers lazily, so look again)."""
        known = {id(layer) for layer in self._layers}
        for module in self._model.modules():
            if isinstance(module, LoraLinear) and id(module) not in known:
                self._layers.append(module)
                self._handles.append(module.register_forward_hook(self._hook))
        self._slots = list(adapter_names)
        self._stacks = {}
        self._kernel_args = {}
        # Views handed out before (to the native decode step) are stale now; unique across instances.
        self.generation = next(_generations)
        with torch.no_grad():
            for layer in self._layers:
                layer.enable_adapters(False)  # PEFT computes the base output; the hook adds LoRA
                self._stacks[id(layer)] = _LayerStack(layer, self._slots, kernel_copy_dtype(layer, self.kernel))
        ours = {id(layer) for layer in self._layers}
        self._places = [
            (parent, name, child)
            for parent in self._model.modules()
            for name, child in parent._modules.items()
            if id(child) in ours
        ]

    @contextmanager
    def base_only(self) -> Iterator[None]:
        """For a pass whose rows all use the base model: each LoRA layer's parent calls the base layer directly.

        PEFT's wrapper and the hook cost ~10 us per adapted layer even when they add nothing: ~2 ms of a
        ~16 ms single-row 4-bit decode step for the bundled model with adapters loaded. The engine runs one
        pass at a time on its own thread, so swapping the modules for the pass is safe.
        """
        for parent, name, layer in self._places:
            parent._modules[name] = layer.base_layer
        self.bypassed = True
        try:
            yield
        finally:
            self.bypassed = False
            for parent, name, layer in self._places:
                parent._modules[name] = layer

    def remove(self) -> None:
        """Hand mixed-adapter batches back to PEFT (an adapter this class cannot stack was loaded)."""
        for handle in self._handles:
            handle.remove()
        for layer in self._layers:
            layer.enable_adapters(True)
        self._handles, self._layers, self._stacks, self._places = [], [], {}, []

    def set_rows(self, adapter_names: list[str]) -> None:
        """Adapter (PEFT name or ``__base__``) of each row for the next forward pass."""
        if all(name == BASE_ADAPTER for name in adapter_names):
            self._row_slots, self._masks = None, None
            return
        index = {name: slot + 1 for slot, name in enumerate(self._slots)}
        self._row_slots = torch.tensor([index.get(name, 0) for name in adapter_names], dtype=torch.long)
        self._masks = {}
        self._groups = None  # built by the first prefill pass that needs them; decode steps never do
        used = tuple(sorted(set(self._row_slots.tolist()) - {0}))
        self._one_adapter = len(used) == 1 and bool((self._row_slots > 0).all())
        self._adapters_in_pass = len(used)
        self._token_row_slots = None
        self._only_slot = used[0] - 1 if self._one_adapter else 0
        if 2 * len(used) <= len(self._slots):
            position = torch.zeros(len(self._slots) + 1, dtype=torch.long)
            position[list(used)] = torch.arange(1, len(used) + 1)
            self._used, self._used_row_slots = tuple(slot - 1 for slot in used), position[self._row_slots]
        else:
            self._used, self._used_row_slots = None, None
        self._used_masks = {}
        self._groupings = {}
        self._padded = None
        self._adapter_rows = None

    @staticmethod
    def _row_mask(masks: dict, row_slots: torch.Tensor, stacked: _Stacked, dtype: torch.dtype) -> torch.Tensor:
        """Each row's [R] mask: its own adapter's scaling over that adapter's rank columns, zero elsewhere."""
        key = (stacked.layout, stacked.scales)
        mask = masks.get(key)
        if mask is None:
            table = torch.zeros((len(stacked.layout) + 1, sum(stacked.layout)), dtype=dtype)
            start = 0
            for slot, (width, scale) in enumerate(zip(stacked.layout, stacked.scales, strict=True)):
                table[slot + 1, start : start + width] = scale
                start += width
            mask = table[row_slots]
            masks[key] = mask
        return mask

    def single_row_slot(self) -> int | None:
        """The 0-based slot of the adapter every row of the next pass uses, None where rows differ or are base."""
        return self._only_slot if self._row_slots is not None and self._one_adapter else None

    def slot_update(self, layer: LoraLinear, slot: int) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """Adapter ``slot``'s (A [in, r], B [r, out], scaling) for ``layer`` as views into the stack; None where
        that adapter has no LoRA on the layer. ``layer`` must be ``direct``."""
        stack = self._stacks[id(layer)]
        part = stack.per_slot[slot]
        return None if part is None else (part[0], part[1], stack.scales[slot])

    def direct(self, layer: torch.nn.Module) -> bool:
        """Whether ``layer`` is one of ours in its batched state: its output is its base layer's output plus
        ``add_delta`` (the engine's decode step then calls the two itself, skipping PEFT's wrapper)."""
        return id(layer) in self._stacks and layer.disable_adapters and not layer.merged

    def _hook(self, layer: LoraLinear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return self.add_delta(layer, args[0], output)

    def add_delta(self, layer: LoraLinear, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """``output`` (the base layer's for ``x``, changed in place) plus each row's own adapter's delta."""
        if self._row_slots is None:
            return output
        stack = self._stacks.get(id(layer))
        if stack is None or stack.full.a is None:
            return output
        if x.dim() == 3 and x.shape[1] > 1:
            if self._prefill_kernel_takes(stack, x, output):
                flat_x, flat_output = _positions(x), _positions(output)
                self._kernel_deltas([layer], flat_x, flat_output, (0,), self._token_slots(x.shape[1]))
                return output
            return self._per_adapter_delta(stack, x, output)
        if self._kernel_takes(x, output):
            # Each adapter's rows times its own A and B only, natively: the masked product below multiplies
            # every row by every adapter, and MKL's fixed cost per call is most of its time at these sizes.
            self._kernel_deltas([layer], x, output, (0,))
            return output
        subset = self._used is not None
        stacked = stack.subset(self._used) if subset else stack.full
        if stacked.a is None:
            return output
        row_slots = self._used_row_slots if subset else self._row_slots
        if stacked.grouped:
            grouping = self._groupings.get(subset)
            if grouping is None:
                grouping = self._groupings[subset] = _Grouping.of(row_slots, len(stacked.layout))
            return self._grouped_delta(stacked, grouping, x, output)
        hidden = torch.matmul(x, stacked.a)
        alpha = 1.0
        if self._one_adapter:  # one adapter on every row: no mask, its scaling goes into the addmm
            alpha = stacked.scales[0 if subset else self._only_slot]
        else:
            masks = self._used_masks if subset else self._masks
            hidden.mul_(self._row_mask(masks, row_slots, stacked, x.dtype)[:, None, :])
        # In place, fused with the matmul: no extra output-sized tensor per layer and decode step.
        output.view(-1, output.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]), stacked.b, alpha=alpha)
        return output

    def _kernel_takes(self, x: torch.Tensor, output: torch.Tensor) -> bool:
        """Whether the native kernel adds this decode pass's updates (one token a row, fp32, unit strides)."""
        return (
            self.kernel is not None and x.dtype == output.dtype == torch.float32 and x.stride(-1) == 1
            and output.stride(-1) == 1 and (x.dim() == 2 or x.shape[1] == 1)
        )  # fmt: skip

    def add_deltas(
        self, layers: list[LoraLinear], x: torch.Tensor, output: torch.Tensor, offsets: tuple[int, ...]
    ) -> None:
        """``add_delta`` for several layers that read the same ``x`` (q/k/v, gate/up), their outputs side by side
        in ``output`` from the columns ``offsets`` on: one native call for all where the kernel serves the pass
        (one parallel region instead of one a layer, and no view of each layer's part)."""
        if self._row_slots is None:
            return
        if not self._kernel_takes(x, output):
            for layer, start in zip(layers, offsets, strict=True):
                self.add_delta(layer, x, output[..., start : start + layer.out_features])
            return
        self._kernel_deltas(layers, x, output, offsets)

    def _prefill_kernel_takes(self, stack: _LayerStack, x: torch.Tensor, output: torch.Tensor) -> bool:
        """Whether the native kernel adds this prefill pass's updates: rows on two or more adapters, fp32
        activations whose positions are rows of one stride (a Q4Siblings member's output is a column slice of
        the stack's), and either the fp32 stack (fp32 engines: the same fp32 arithmetic in another order) or
        bf16 copies that it multiplies with vdpbf16ps (``lora_rows_has_bf16_products``: q4 engines on CPUs with
        AVX512-BF16; x and ``x @ A`` rounded to bf16 as well, as the base layer's bf16 product rounds x).
        Each adapter's rows then take its weights from cache: 16 rows x 39 tokens on 4 adapters of the bundled
        model, the adapters' cost a pass 63-129 -> 36-72 ms in fp32 and about halved with the bf16 products.
        With one adapter on every row MKL's one large product is faster. Measured with 2-4 adapters; from
        ``PREFILL_GATHER_MIN_ADAPTERS`` on the gathered products stay."""
        return (
            self.kernel is not None and 2 <= self._adapters_in_pass < PREFILL_GATHER_MIN_ADAPTERS
            and (stack.full.kernel_a is None or self._kernel_has_bf16_products())
            and x.dtype == output.dtype == stack.full.a.dtype == torch.float32 and _positions(x) is not None
            and _positions(output) is not None
        )  # fmt: skip

    def _kernel_has_bf16_products(self) -> bool:
        probe = getattr(self.kernel, "lora_rows_has_bf16_products", None)
        return probe is not None and bool(probe())

    def _token_slots(self, tokens: int) -> torch.Tensor:
        """Each row's slot repeated for its ``tokens`` positions: a prefill pass's rows as the kernel sees them."""
        if self._token_row_slots is None or self._token_row_slots[0] != tokens:
            self._token_row_slots = (tokens, self._row_slots.repeat_interleave(tokens))
        return self._token_row_slots[1]

    def _kernel_deltas(
        self, layers: list[LoraLinear], x: torch.Tensor, output: torch.Tensor, offsets: tuple[int, ...],
        row_slots: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """``add_deltas`` through the native kernel (``_kernel_takes`` said it serves the pass); ``row_slots``:
        each row's slot, where the rows are not the pass's own (a prefill pass's positions)."""
        key = (tuple(map(id, layers)), offsets)
        args = self._kernel_args.get(key)
        if args is None:
            args = self._kernel_args[key] = self._kernel_arguments(layers, offsets)
        if args[0]:
            # bf16 products for bf16 copies (q4 layers; fp32 stacks ignore it): in a 16-row decode step on 4
            # adapters the widening loops' arithmetic was ~1 of the kernel's ~4 ms, memory the rest.
            self.kernel.lora_rows(x, output, *args, self._row_slots if row_slots is None else row_slots, True)

    def _kernel_arguments(self, layers: list[LoraLinear], offsets: tuple[int, ...]) -> tuple:
        """The output offsets of those of ``layers`` with adapters, and their A, B, ranks and scales lists:
        ``lora_rows``' arguments after the output. Always the full stacks: the kernel reads only the slots
        that have rows, so the stacks of a batch's subset (built for the masked product, which multiplies every
        row by every slot) would only cost copies each time the subset changes."""
        kept, stacks = [], []
        for layer, start in zip(layers, offsets, strict=True):
            stack = self._stacks.get(id(layer))
            if stack is not None and stack.full.a is not None:
                kept.append(start)
                stacks.append(stack.full)
        weights = [stacked.kernel_weights() for stacked in stacks]
        return (
            kept, [a for a, _ in weights], [b for _, b in weights], [s.ranks for s in stacks],
            [s.scale_values for s in stacks],
        )  # fmt: skip

    def _grouped_delta(
        self, stacked: _Stacked, grouping: _Grouping, x: torch.Tensor, output: torch.Tensor
    ) -> torch.Tensor:
        """Decode with many adapters: each slot's rows times that slot's own A and B, as two batched products."""
        slots, width = stacked.a.shape[0], x.shape[-1]
        padded = self._padded
        # q/k/v and gate/up read the same input tensor: pad it once for them all (checked by identity, as
        # Q4Siblings does; holding the tensor keeps its identity from being reused).
        if padded is None or padded[0] is not x or padded[1] is not grouping:
            flat = x.reshape(-1, width)
            if grouping.rows is not None:
                flat = flat.index_select(0, grouping.rows)
            batch = flat.new_zeros(slots * grouping.per_slot, width).index_copy_(0, grouping.positions, flat)
            padded = self._padded = (x, grouping, batch.view(slots, grouping.per_slot, width))
        hidden = torch.bmm(padded[2], stacked.a)
        if stacked.scale_column is not None:
            hidden.mul_(stacked.scale_column)
        delta = torch.bmm(hidden, stacked.b)
        output.view(-1, output.shape[-1]).index_add_(0, grouping.targets, delta.view(-1, delta.shape[-1]))
        return output

    def _per_adapter_delta(self, stack: _LayerStack, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Prefill: many tokens per row, so computing every adapter for every row (the decode path) would
        multiply the LoRA work by the number of adapters; each group of rows gets only its own adapter. A group
        of consecutive rows (all of them, when one adapter serves the whole batch) is a slice: no gather and
        scatter copies of its activations (64 rows x 30 tokens, 210 layers: 135 against 196 ms)."""
        if self._groups is None:
            slots = sorted(set(self._row_slots.tolist()) - {0})
            self._groups = [(slot - 1, _rows_or_slice((self._row_slots == slot).nonzero().flatten())) for slot in slots]
        if len(self._groups) >= PREFILL_GATHER_MIN_ADAPTERS and stack.full.grouped:
            return self._gathered_delta(stack.full, x, output)
        for slot, rows in self._groups:
            part = stack.per_slot[slot]
            if part is None:
                continue
            a, b = part
            scale = stack.scales[slot]
            if isinstance(rows, slice):
                hidden = torch.matmul(x[rows], a)
                output[rows].view(-1, output.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]), b, alpha=scale)
            else:
                delta = torch.matmul(torch.matmul(x.index_select(0, rows), a), b)
                output.index_add_(0, rows, delta, alpha=scale)
        return output

    def _gathered_delta(self, stacked: _Stacked, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Prefill with many adapters in the batch: a loop over them would be three small ops per adapter and
        layer (64 adapters: ~40,000 a pass); instead each row's own A and B are gathered from the stack
        (copies of the weights, not of the activations) and two batched products cover every row."""
        if self._adapter_rows is None:
            rows = (self._row_slots > 0).nonzero().flatten()
            self._adapter_rows = (rows, self._row_slots[rows] - 1, len(rows) == len(self._row_slots))
        rows, slots, every_row = self._adapter_rows
        inputs = x if every_row else x.index_select(0, rows)
        hidden = torch.bmm(inputs, stacked.a.index_select(0, slots))
        if stacked.scale_column is not None:
            hidden.mul_(stacked.scale_column.index_select(0, slots))
        delta = torch.bmm(hidden, stacked.b.index_select(0, slots))
        return output.add_(delta) if every_row else output.index_add_(0, rows, delta)


def _positions(t: torch.Tensor) -> torch.Tensor | None:
    """A prefill pass's [rows, tokens, width] as a [rows * tokens, width] view with unit column stride (what
    ``lora_rows`` reads), None where its strides allow none."""
    if t.dim() != 3 or t.stride(2) != 1 or t.stride(0) != t.shape[1] * t.stride(1):
        return None
    return t.view(-1, t.shape[2])


def _rows_or_slice(rows: torch.Tensor) -> torch.Tensor | slice:
    """``rows`` (ascending) as a slice when they are consecutive."""
    first, last = int(rows[0]), int(rows[-1])
    return slice(first, last + 1) if last - first + 1 == len(rows) else rows
