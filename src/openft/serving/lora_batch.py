"""Mixed-adapter LoRA for a whole batch in three matrix ops per layer and decode step.

PEFT's ``adapter_names`` path loops over the adapters in every LoRA layer (gather rows, two small matmuls,
scatter back): with 4 adapters and ~200 adapted layers that is thousands of tiny ops per decode step. Here
each adapted ``nn.Linear`` keeps every loaded adapter side by side, ``A = [A_1 | A_2 | ...]`` and
``B = [s_1 B_1 ; s_2 B_2 ; ...]``; a per-row 0/1 mask over the concatenated rank keeps each row's own
adapter, so ``delta = ((x @ A) * mask_row) @ B`` serves every row at once (base rows have an all-zero mask).
When the batch uses at most half of the loaded adapters, the step multiplies by a stack of only those (built
once per set of adapters in use and kept while it lasts): otherwise 64 loaded rank-16 adapters would make
every decode step pay for a rank-1024 LoRA, more work than the base layer itself, whatever the batch uses.
PEFT's own layers are switched to base-only and a forward hook adds the delta. Prefill passes (many
tokens per row) instead run each adapter on its own rows only: there the FLOPs, not the op count, dominate.

Only plain LoRA on linear layers is handled (no DoRA/variants, no LoRA bias, no fan_in_fan_out);
``supports`` says when the engine must fall back to PEFT's ``adapter_names``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer

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


class _LayerStack:
    def __init__(self, layer: LoraLinear, slots: list[str]) -> None:
        dtype = layer.get_base_layer().weight.dtype  # the activations' dtype; PEFT keeps adapters in fp32
        a_parts, b_parts, widths = [], [], []
        for name in slots:
            if name in layer.lora_A:
                a_parts.append(layer.lora_A[name].weight.t())  # [in, r]
                b_parts.append((layer.lora_B[name].weight * layer.scaling[name]).t())  # [r, out]
                widths.append(a_parts[-1].shape[1])
            else:
                widths.append(0)
        self.layout = tuple(widths)
        self.a = torch.cat(a_parts, dim=1).to(dtype).contiguous() if a_parts else None  # [in, R]
        self.b = torch.cat(b_parts, dim=0).to(dtype).contiguous() if b_parts else None  # [R, out]
        # Each slot's own (A, s*B) as views into the stacks (no second copy), None where it has no LoRA here.
        self.per_slot: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        start = 0
        for width in widths:
            end = start + width
            self.per_slot.append((self.a[:, start:end], self.b[start:end]) if width else None)
            start = end
        self._subset: tuple[tuple[int, ...], _Stacked] | None = None

    def subset(self, used: tuple[int, ...]) -> _Stacked:
        """(A, B, layout) of only the slots in ``used`` (0-based), in that order; the last one is kept."""
        if self._subset is not None and self._subset[0] == used:
            return self._subset[1]
        parts = [self.per_slot[slot] for slot in used]
        layout = tuple(0 if part is None else part[0].shape[1] for part in parts)
        present = [part for part in parts if part is not None]
        a = torch.cat([part[0] for part in present], dim=1).contiguous() if present else None
        b = torch.cat([part[1] for part in present], dim=0).contiguous() if present else None
        self._subset = (used, (a, b, layout))
        return self._subset[1]


_Stacked = tuple[torch.Tensor | None, torch.Tensor | None, tuple[int, ...]]


class BatchedLora:
    """Owns the stacked adapter weights and the per-step row masks; installed once per PeftModel."""

    def __init__(self, model: PeftModel) -> None:
        self._model = model
        self._layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
        self._stacks: dict[int, _LayerStack] = {}
        self._slots: list[str] = []
        self._masks: dict[tuple[int, ...], torch.Tensor] | None = None
        self._row_slots: torch.Tensor | None = None
        # Decode over a subset: the slots in use (0-based), and each row's 1-based position among them (0: base).
        self._used: tuple[int, ...] | None = None
        self._used_row_slots: torch.Tensor | None = None
        self._used_masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._groups: list[tuple[int, torch.Tensor]] | None = None  # (slot, rows using it), no base rows
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
        with torch.no_grad():
            for layer in self._layers:
                layer.enable_adapters(False)  # PEFT computes the base output; the hook adds LoRA
                self._stacks[id(layer)] = _LayerStack(layer, self._slots)
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
        try:
            yield
        finally:
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
        if 2 * len(used) <= len(self._slots):
            position = torch.zeros(len(self._slots) + 1, dtype=torch.long)
            position[list(used)] = torch.arange(1, len(used) + 1)
            self._used, self._used_row_slots = tuple(slot - 1 for slot in used), position[self._row_slots]
        else:
            self._used, self._used_row_slots = None, None
        self._used_masks = {}

    @staticmethod
    def _row_mask(masks: dict, row_slots: torch.Tensor, layout: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        mask = masks.get(layout)
        if mask is None:
            table = torch.zeros((len(layout) + 1, sum(layout)), dtype=dtype)
            start = 0
            for slot, width in enumerate(layout):
                table[slot + 1, start : start + width] = 1
                start += width
            mask = table[row_slots]
            masks[layout] = mask
        return mask

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
        if stack is None or stack.a is None:
            return output
        if x.dim() == 3 and x.shape[1] > 1:
            return self._per_adapter_delta(stack, x, output)
        if self._used is not None:
            a, b, layout = stack.subset(self._used)
            if a is None:
                return output
            mask = self._row_mask(self._used_masks, self._used_row_slots, layout, x.dtype)
        else:
            a, b, layout = stack.a, stack.b, stack.layout
            mask = self._row_mask(self._masks, self._row_slots, layout, x.dtype)
        hidden = torch.matmul(x, a).mul_(mask[:, None, :])
        # In place, fused with the matmul: no extra output-sized tensor per layer and decode step.
        output.view(-1, output.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]), b)
        return output

    def _per_adapter_delta(self, stack: _LayerStack, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Prefill: many tokens per row, so computing every adapter for every row (the decode path) would
        multiply the LoRA work by the number of adapters; each group of rows gets only its own adapter."""
        if self._groups is None:
            slots = sorted(set(self._row_slots.tolist()) - {0})
            self._groups = [(slot - 1, (self._row_slots == slot).nonzero().flatten()) for slot in slots]
        for slot, rows in self._groups:
            part = stack.per_slot[slot]
            if part is None:
                continue
            a, b = part
            output.index_add_(0, rows, torch.matmul(torch.matmul(x.index_select(0, rows), a), b))
        return output
