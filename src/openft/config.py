"""Settings read from the environment (and overridden by CLI flags).

Everything openft stores lives under ``OPENFT_HOME`` (default ``~/.openft``) unless
``OPENFT_DATABASE_URL`` names another database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    host: str = "127.0.0.1"
    port: int = 8000
    # Base model whose tokenizer and context length the upload-time validation report uses.
    validation_model: str = "smollm2-135m-instruct"
    # Upload validation runs in worker processes: at most this many at once, each stopped after this many
    # seconds (0 = no limit); see openft.data.validation_pool and docs/request_limits.md.
    validation_timeout_seconds: float = 120.0
    validation_workers: int = 2
    # A running job whose worker has not heart-beaten for this long is re-queued (worker died).
    worker_stale_seconds: float = 30.0
    # `openft serve` runs one worker in-process unless this is off (then run `openft worker`).
    embedded_worker: bool = True
    # "auto": bf16 autocast where the GPU or CPU runs bf16 natively, else fp32; "bf16" / "fp32" force one.
    training_precision: str = "auto"
    # GPU deployments: serve chat/completions from a vLLM server (see docs/serving.md).
    vllm_url: str | None = None
    vllm_model: str | None = None
    vllm_api_key: str | None = None
    # Per-organization quotas (0 = unlimited): bytes of uploaded files, and unfinished jobs + evaluations.
    storage_quota_bytes: int = 0
    max_active_jobs: int = 0
    # Hosts, addresses or CIDR ranges that evaluation endpoints may reach although they are loopback or
    # private ("*" allows every address); see openft.outbound.
    outbound_allow: tuple[str, ...] = ()
    # Fernet key(s) that encrypt third-party API keys at rest; unset: $OPENFT_HOME/secret.key is used.
    secret_key: str | None = field(default=None, repr=False)
    # Orphaned blobs and partial uploads younger than this are left alone (another process may own them).
    reaper_grace_seconds: float = 3600.0
    # How often `openft serve` settles storage (expired files, orphans) after the start-up pass; 0: only at start.
    reaper_interval_seconds: float = 600.0

    @property
    def secret_key_path(self) -> Path:
        return self.home / "secret.key"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def artifacts_dir(self) -> Path:
        """Per-job training outputs: checkpoints, adapters, logs, TensorBoard events."""
        return self.home / "artifacts"

    @property
    def model_cache_dir(self) -> Path:
        """Base models materialised as safetensors folders (GGUF dequantised once)."""
        return self.home / "models"

    @property
    def models_config_path(self) -> Path:
        """User-registered base models (TOML); see docs/models.md."""
        return self.home / "models.toml"


TRAINING_PRECISIONS = ("auto", "bf16", "fp32")


class SettingsError(ValueError):
    """An environment variable holds a value openft cannot use; the message names the variable."""


def _choice_env(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (os.environ.get(name) or default).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _int_env(name: str, default: int) -> int:
    return _number_env(name, default, int, "an integer")


def _number_env(name: str, default, kind: type, described: str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {described}, got {raw!r}") from exc


def _limit_env(name: str, default: float, kind: type = int):
    value = _number_env(name, default, kind, "a non-negative number (0 = no limit)")
    if value < 0 or value != value:
        raise SettingsError(f"{name} must be a non-negative number (0 = no limit), got {value!r}")
    return value


def _list_env(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (os.environ.get(name) or "").split(",") if item.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(os.environ.get("OPENFT_HOME") or Path.home() / ".openft").expanduser()
    database_url = os.environ.get("OPENFT_DATABASE_URL") or f"sqlite:///{home / 'openft.db'}"
    return Settings(
        home=home,
        database_url=database_url,
        max_upload_bytes=_int_env("OPENFT_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES),
        host=os.environ.get("OPENFT_HOST", "127.0.0.1"),
        port=_int_env("OPENFT_PORT", 8000),
        validation_model=os.environ.get("OPENFT_VALIDATION_MODEL") or "smollm2-135m-instruct",
        validation_timeout_seconds=_limit_env("OPENFT_VALIDATION_TIMEOUT_SECONDS", 120.0, float),
        validation_workers=max(1, _limit_env("OPENFT_VALIDATION_WORKERS", 2)),
        worker_stale_seconds=_number_env("OPENFT_WORKER_STALE_SECONDS", 30.0, float, "a number of seconds"),
        vllm_url=os.environ.get("OPENFT_VLLM_URL") or None,
        vllm_model=os.environ.get("OPENFT_VLLM_MODEL") or None,
        vllm_api_key=os.environ.get("OPENFT_VLLM_API_KEY") or None,
        embedded_worker=os.environ.get("OPENFT_EMBEDDED_WORKER", "1").lower() not in ("0", "false", "no"),
        training_precision=_choice_env("OPENFT_TRAINING_PRECISION", TRAINING_PRECISIONS, "auto"),
        storage_quota_bytes=_limit_env("OPENFT_STORAGE_QUOTA_BYTES", 0),
        max_active_jobs=_limit_env("OPENFT_MAX_ACTIVE_JOBS", 0),
        outbound_allow=_list_env("OPENFT_OUTBOUND_ALLOW"),
        secret_key=os.environ.get("OPENFT_SECRET_KEY") or None,
        reaper_grace_seconds=_limit_env("OPENFT_REAPER_GRACE_SECONDS", 3600.0, float),
        reaper_interval_seconds=_limit_env("OPENFT_REAPER_INTERVAL_SECONDS", 600.0, float),
    )


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
