"""The running batch's KV cache: left-padded rows in one DynamicCache, with rows joining and leaving.

Rows are left-aligned by padding so every row's newest token sits in the last column; the attention mask
hides the padding and position ids count only real tokens, which makes each row's computation the same as
if it ran alone. Joining concatenates along the batch dimension after padding the shorter side on the left;
leaving selects the remaining rows and drops padding columns no row needs any more.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def _layers(cache: DynamicCache) -> list:
    return list(cache.layers)


def zero_padding(cache: DynamicCache, attention_mask: torch.Tensor) -> None:
    """Padding positions can hold NaN from fully masked queries; zero them so 0-weight * value stays 0."""
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
