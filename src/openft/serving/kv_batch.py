"""The running batch's KV cache: left-padded rows in one DynamicCache, with rows joining and leaving.

Rows are left-aligned by padding so every row's newest token sits in the last column; the attention mask
hides the padding and position ids count only real tokens, which makes each row's computation the same as
if it ran alone. Joining concatenates along the batch dimension after padding the shorter side on the left;
leaving selects the remaining rows and drops padding columns no row needs any more.

Decode steps append into spare room (``GrowingLayer``) instead of DynamicLayer's ``torch.cat``, which copies
every layer's whole cache at every step: at 16 rows that copying was a fifth of a decode step's time.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Spare positions a layer's buffer gets when it grows: at least this many, or a quarter of its length.
MIN_SPARE_TOKENS = 64


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views into buffers with spare room along the sequence.

    ``update`` writes the new positions in place and re-slices. The batch functions below replace
    ``keys``/``values`` with new tensors (rows joining or leaving); the next ``update`` notices that the views
    no longer belong to the buffers and copies them into new ones, which is what every step cost before.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._key_view: torch.Tensor | None = None  # what update returned last, to recognise it cheaply
        self._value_view: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys = self.keys
        if keys is not None and keys is self._key_view and self.values is self._value_view:
            # The views handed out last time, unchanged: write after them if the buffers have room.
            length = keys.shape[-2]
            needed = length + key_states.shape[-2]
            if needed <= self._key_buffer.shape[-2]:
                return self._append(length, needed, key_states, value_states)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.numel() else 0
        needed = length + key_states.shape[-2]
        if not self._views_own_buffers() or self._key_buffer.shape[-2] < needed:
            self._regrow(length, needed, key_states, value_states)
        return self._append(length, needed, key_states, value_states)

    def make_room(self, tokens: int) -> int:
        """Make the buffers hold the cache with room for ``tokens`` more positions, for a writer that fills them
        itself (serving/native_decode.py) and then calls ``grow_views``; returns the length held now."""
        keys = self.keys
        if keys is not None and keys is self._key_view and self.values is self._value_view:
            length = keys.shape[-2]
            if length + tokens <= self._key_buffer.shape[-2]:
                return length
        length = keys.shape[-2]
        if not self._views_own_buffers() or self._key_buffer.shape[-2] < length + tokens:
            self._regrow(length, length + tokens, keys, self.values)
            self._key_view = self._value_view = None
        return length

    def grow_views(self, length: int) -> None:
        """The cache is now the buffers' first ``length`` positions (written by the caller of ``make_room``)."""
        self.keys = self._key_view = self._key_buffer[:, :, :length]
        self.values = self._value_view = self._value_buffer[:, :, :length]

    def _append(self, length: int, needed: int, key_states: torch.Tensor, value_states: torch.Tensor):
        self._key_buffer[:, :, length:needed].copy_(key_states)
        self._value_buffer[:, :, length:needed].copy_(value_states)
        self.keys = self._key_view = self._key_buffer[:, :, :needed]
        self.values = self._value_view = self._value_buffer[:, :, :needed]
        return self.keys, self.values

    def _views_own_buffers(self) -> bool:
        buffer = self._key_buffer
        if buffer is None or self.keys.numel() == 0:
            return False
        return (
            self.keys.data_ptr() == buffer.data_ptr()
            and self.values.data_ptr() == self._value_buffer.data_ptr()
            and self.keys.shape[:2] == buffer.shape[:2]
            and self.keys.stride() == buffer.stride()
        )

    def _regrow(self, length: int, needed: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        capacity = needed + max(MIN_SPARE_TOKENS, needed // 4)
        batch, heads, _, _ = key_states.shape
        self._key_buffer = key_states.new_empty((batch, heads, capacity, key_states.shape[-1]))
        self._value_buffer = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))
        if length:
            self._key_buffer[:, :, :length].copy_(self.keys)
            self._value_buffer[:, :, :length].copy_(self.values)

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = self._key_view = self._value_view = None
        super().reset()


def new_cache(config) -> DynamicCache:
    """A DynamicCache for ``config`` whose full-attention layers are GrowingLayers (others stay as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _layers(cache: DynamicCache) -> list:
    return list(cache.layers)


def zero_padding(cache: DynamicCache, attention_mask: torch.Tensor) -> None:
    """Padding positions can hold NaN from fully masked queries; zero them so 0-weight * value stays 0."""
    if bool(attention_mask.all()):  # no padding: nothing to zero, and the layers keep their spare room
        return
    keep = attention_mask.bool()[:, None, :, None]
    for layer in _layers(cache):
        length = layer.keys.shape[-2]
        layer.keys = torch.where(keep[..., -length:, :], layer.keys, 0.0)
        layer.values = torch.where(keep[..., -length:, :], layer.values, 0.0)


def _left_pad(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(
    running: DynamicCache | None,
    running_mask: torch.Tensor | None,
    joining: DynamicCache,
    joining_mask: torch.Tensor,
) -> tuple[DynamicCache, torch.Tensor]:
    """Append the ``joining`` rows after the ``running`` rows; returns the merged cache and mask."""
    if running is None or running_mask is None or running_mask.shape[0] == 0:
        return joining, joining_mask
    length = max(running_mask.shape[1], joining_mask.shape[1])
    pad_running = length - running_mask.shape[1]
    pad_joining = length - joining_mask.shape[1]
    for old, new in zip(_layers(running), _layers(joining), strict=True):
        old.keys = torch.cat([_left_pad(old.keys, pad_running, 2), _left_pad(new.keys, pad_joining, 2)], 0)
        old.values = torch.cat([_left_pad(old.values, pad_running, 2), _left_pad(new.values, pad_joining, 2)], 0)
    mask = torch.cat([_left_pad(running_mask, pad_running, 1), _left_pad(joining_mask, pad_joining, 1)], 0)
    return running, mask


def select_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """Keep only ``rows`` and trim padding columns that every remaining row has."""
    index = torch.tensor(rows, dtype=torch.long)
    mask = mask.index_select(0, index)
    if rows:
        first_real = int(mask.long().argmax(dim=1).min())  # leading zeros shared by all rows
    else:
        first_real = mask.shape[1]
    mask = mask[:, first_real:]
    for layer in _layers(cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, first_real:, :]
        layer.values = layer.values.index_select(0, index)[:, :, first_real:, :]
    return cache, mask
