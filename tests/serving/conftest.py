"""Serving fixtures: an engine over the tiny random model, and random LoRA adapters that change its output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from openft.serving.engine import Engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ADAPTER_KEYS = ["ft:a", "ft:b", "ft:c", "ft:d"]


@pytest.fixture(scope="session")
def lora_adapter_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    dirs = {}
    for index, key in enumerate(ADAPTER_KEYS):
        torch.manual_seed(1000 + index)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        config = LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        folder = root / f"adapter{index}"
        get_peft_model(base, config).save_pretrained(folder)
        dirs[key] = folder
    return dirs


def make_loader(model_dir: Path):
    def load():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(model_dir)

    return load


@pytest.fixture
def make_engine(tiny_model_dir, lora_adapter_dirs):
    engines: list[Engine] = []

    def build(extra_adapters: dict[str, Path] | None = None, loader=None, **options) -> Engine:
        folders = {**lora_adapter_dirs, **(extra_adapters or {})}
        engine = Engine(loader or make_loader(tiny_model_dir), folders.__getitem__, **options)
        engine.wait_ready(timeout=120)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine) -> Engine:
    return make_engine(max_batch_size=32)
