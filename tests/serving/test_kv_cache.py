"""The engine's KV cache appends in place and stays right when rows join and leave."""

from __future__ import annotations

import torch
from transformers import LlamaConfig

from openft.serving import kv_batch


def _config() -> LlamaConfig:
    return LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32)


def _states(rows: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 2, tokens, 8), torch.randn(rows, 2, tokens, 8)


def test_decode_steps_append_in_place_and_return_what_concatenation_would():
    cache = kv_batch.new_cache(_config())
    layer = cache.layers[0]
    assert isinstance(layer, kv_batch.GrowingLayer)
    keys, values = _states(3, 5)
    expected_k, expected_v = keys, values
    layer.update(keys, values)
    pointers = set()
    for _ in range(150):  # past the first spare room, so the buffer grows once or twice
        keys, values = _states(3, 1)
        expected_k, expected_v = torch.cat([expected_k, keys], -2), torch.cat([expected_v, values], -2)
        got_k, got_v = layer.update(keys, values)
        assert torch.equal(got_k, expected_k) and torch.equal(got_v, expected_v)
        pointers.add(got_k.data_ptr())
    assert len(pointers) <= 3  # a new buffer only when the spare room ran out, not every step
    assert cache.get_seq_length() == 155


def test_rows_joining_and_leaving_then_decoding_keep_every_rows_keys():
    config = _config()
    running, joining = kv_batch.new_cache(config), kv_batch.new_cache(config)
    old_k, old_v = _states(2, 6)
    new_k, new_v = _states(1, 4)
    for layer in range(2):
        running.layers[layer].update(old_k, old_v)
        joining.layers[layer].update(new_k, new_v)
    cache, mask = kv_batch.merge(running, torch.ones(2, 6), joining, torch.ones(1, 4))
    assert mask.shape == (3, 6)
    step_k, step_v = _states(3, 1)
    for layer in range(2):
        got_k, got_v = cache.layers[layer].update(step_k, step_v)
        assert torch.equal(got_k[:2], torch.cat([old_k, step_k[:2]], -2))
        assert torch.equal(got_v[2, :, 2:], torch.cat([new_v[0], step_v[2]], -2))  # left-padded by two
    cache, mask = kv_batch.select_rows(cache, torch.cat([mask, torch.ones(3, 1)], 1), [2])
    assert mask.shape == (1, 5)  # the two padding columns only the leavers needed are gone
    last_k, last_v = _states(1, 1)
    for layer in range(2):
        got_k, got_v = cache.layers[layer].update(last_k, last_v)
        assert torch.equal(got_k[0], torch.cat([new_k[0], step_k[2], last_k[0]], -2))
        assert torch.equal(got_v[0], torch.cat([new_v[0], step_v[2], last_v[0]], -2))
