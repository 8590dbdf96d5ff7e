"""Checking an evaluation request before it is queued: every mistake names the parameter at fault."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from openft.config import get_settings
from openft.evals.documents import MAX_DOCUMENTS, DocumentFileError, document_chunks
from openft.evals.examples import EvalDataError, load_examples
from openft.evals.runner import JUDGE_METRIC, known_metrics
from openft.evals.strategies import KINDS
from openft.models.registry import ModelNotFound, get_base_model
from openft.outbound import OutboundRefused, check_url
from openft.store import files as file_store
from openft.store import jobs as job_store
from openft.store.blobs import BlobStore
from openft.store.quotas import check_active_jobs
from openft.store.secrets import SecretError, seal, unseal

EVAL_FILE_PURPOSES = ("fine-tune", "evals")
MAX_K = 32
MAX_TOKENS = 4096
FIELDS = (
    "eval_file",
    "training_file",
    "model",
    "fine_tuned_models",
    "strategies",
    "k",
    "metrics",
    "labels",
    "max_tokens",
    "max_examples",
    "seed",
    "external",
    "judge",
    "metadata",
    "documents",
    "rag_k",
    "tool_choice",
    "rival_models",
    "forgetting_check",
    "forgetting_items",
)
TOOL_CHOICES = ("auto", "required")  # how the function-calling and fine-tuned strategies use tools


class EvalRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise EvalRequestError(f"'{name}' must be an integer {bound}, got {value!r}.", name)
    return value


def _str_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EvalRequestError(f"'{name}' must be a list of non-empty strings.", name)
    return value


# The server-side environment variables a caller may name instead of sending a key ("api_key_env"):
# only this prefix, so a request can never make openft send one of its own secrets to an endpoint.
KEY_ENV_PATTERN = re.compile(r"^OPENFT_OUTBOUND_KEY_[A-Z0-9_]{1,64}$")
ENDPOINTS = ("external", "judge")


def _endpoint(body: dict[str, Any], name: str, required: tuple[str, ...]) -> dict[str, Any] | None:
    """An external endpoint or judge: its URL checked against the outbound allow-list, its API key
    encrypted for storage, or named as a server environment variable so that it is not stored at all."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EvalRequestError(f"'{name}' must be an object.", name)
    key_env = value.get("api_key_env")
    for key in required:
        if key == "api_key" and key_env is not None:
            continue
        if not isinstance(value.get(key), str) or not value[key]:
            raise EvalRequestError(f"Missing required parameter: '{name}.{key}'.", f"{name}.{key}")
    value = dict(value)
    if value.get("base_url") is not None:
        if not isinstance(value["base_url"], str):
            raise EvalRequestError(f"'{name}.base_url' must be a URL.", f"{name}.base_url")
        try:
            check_url(value["base_url"])
        except OutboundRefused as exc:
            raise EvalRequestError(f"Invalid '{name}.base_url': {exc}", f"{name}.base_url", "url_not_allowed") from None
    if key_env is not None:
        if value.get("api_key") is not None:
            raise EvalRequestError(f"Send '{name}.api_key' or '{name}.api_key_env', not both.", f"{name}.api_key_env")
        if not isinstance(key_env, str) or not KEY_ENV_PATTERN.match(key_env):
            raise EvalRequestError(
                f"'{name}.api_key_env' must name a server environment variable starting with OPENFT_OUTBOUND_KEY_.",
                f"{name}.api_key_env",
            )
        if not os.environ.get(key_env):
            raise EvalRequestError(
                f"The environment variable {key_env} named by '{name}.api_key_env' is not set on the server.",
                f"{name}.api_key_env",
            )
    elif value.get("api_key") is not None:
        if not isinstance(value["api_key"], str):
            raise EvalRequestError(f"'{name}.api_key' must be a string.", f"{name}.api_key")
        value["api_key"] = seal(value["api_key"])  # stored encrypted with the server's secret
    return value


def endpoint_api_key(endpoint: dict[str, Any], name: str) -> str | None:
    """The plain API key of a stored endpoint, for the worker that calls it (never for an API answer)."""
    if endpoint.get("api_key_env"):
        key = os.environ.get(endpoint["api_key_env"])
        if not key:
            raise SecretError(f"'{name}.api_key_env' names {endpoint['api_key_env']}, which is not set on this worker.")
        return key
    stored = endpoint.get("api_key")
    return unseal(stored) if stored else None


def reveal_api_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A run's configuration with its endpoints' keys in plain text, for the worker only."""
    revealed = dict(config)
    for name in ENDPOINTS:
        endpoint = revealed.get(name)
        if endpoint:
            revealed[name] = {**endpoint, "api_key": endpoint_api_key(endpoint, name)}
    return revealed


def _check_judge_model(session: Session, organization_id: str, judge: dict[str, Any]) -> None:
    """A judge without a base_url runs on this server: its model must be a base model or one of the caller's."""
    if judge.get("base_url"):
        return
    name = judge["model"]
    try:
        get_base_model(name)
        return
    except ModelNotFound:
        pass
    if (
        job_store.get_fine_tuned_model(session, organization_id, name) is None
        and job_store.get_checkpoint_by_model(session, organization_id, name) is None
    ):
        raise EvalRequestError(
            f"The judge model `{name}` does not exist or you do not have access to it. Give a base model, one of "
            "your fine-tuned models, or a 'judge.base_url' for a hosted judge.",
            "judge.model",
            "model_not_found",
        )


@dataclass
class CheckedRequest:
    config: dict[str, Any]
    metadata: dict[str, str] | None


def _file(session: Session, organization_id: str, file_id: Any, param: str, purposes: tuple[str, ...]):
    if not isinstance(file_id, str) or not file_id:
        raise EvalRequestError(f"'{param}' must be a file id.", param)
    row = file_store.get_file(session, organization_id, file_id)
    if row is None:
        raise EvalRequestError(f"File {file_id} not found.", param, "file_not_found")
    if row.purpose not in purposes:
        raise EvalRequestError(
            f"File {file_id} has purpose '{row.purpose}'; upload it with purpose {' or '.join(purposes)}.", param
        )
    try:
        load_examples(BlobStore(get_settings().files_dir).path(row.storage_key))
    except EvalDataError as exc:
        raise EvalRequestError(f"File {file_id} cannot be evaluated: {exc}", param, "invalid_file") from None
    return row


def check_request(session: Session, organization_id: str, body: dict[str, Any]) -> CheckedRequest:
    """The accepted configuration, or EvalRequestError naming the parameter."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise EvalRequestError(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
    for required in ("eval_file", "model"):
        if body.get(required) in (None, ""):
            raise EvalRequestError(f"Missing required parameter: '{required}'.", required)
    _file(session, organization_id, body["eval_file"], "eval_file", EVAL_FILE_PURPOSES)
    model = body["model"]
    try:
        get_base_model(model)
    except (ModelNotFound, TypeError):
        raise EvalRequestError(
            f"The model `{model}` is not a base model. List them with GET /v1/models.", "model", "model_not_found"
        ) from None
    fine_tuned = _str_list(body, "fine_tuned_models") or []
    for index, name in enumerate(fine_tuned):
        if (
            job_store.get_fine_tuned_model(session, organization_id, name) is None
            and job_store.get_checkpoint_by_model(session, organization_id, name) is None
        ):
            raise EvalRequestError(
                f"The model `{name}` does not exist or you do not have access to it.",
                f"fine_tuned_models[{index}]",
                "model_not_found",
            )
    external = _endpoint(body, "external", ("base_url", "api_key", "model"))
    rivals = _rival_models(body)
    judge = _endpoint(body, "judge", ("model",))
    if judge is not None and judge.get("mode", "graded") not in ("graded", "pairwise"):
        raise EvalRequestError("'judge.mode' must be 'graded' or 'pairwise'.", "judge.mode")
    if judge is not None:
        _check_judge_model(session, organization_id, judge)

    documents = _documents(session, organization_id, body)
    tools_in_eval_file = _has_tools(session, organization_id, body["eval_file"])
    strategies = _str_list(body, "strategies")
    if strategies is None:
        strategies = ["zero-shot"]
        if body.get("training_file"):
            strategies += ["few-shot", "retrieval-few-shot"]
        if documents:
            strategies.append("rag")
        if tools_in_eval_file:
            strategies.append("function-calling")
        if fine_tuned:
            strategies.append("fine-tuned")
        if fine_tuned and documents:
            strategies.append("rag-fine-tuned")
        if rivals:
            strategies.append("rival")
        if external:
            strategies.append("external")
    for index, kind in enumerate(strategies):
        if kind not in KINDS:
            raise EvalRequestError(
                f"Unknown strategy '{kind}'; choose from {', '.join(KINDS)}.", f"strategies[{index}]"
            )
    if "fine-tuned" in strategies and not fine_tuned:
        raise EvalRequestError("The fine-tuned strategy needs 'fine_tuned_models'.", "fine_tuned_models")
    if "rival" in strategies and not rivals:
        raise EvalRequestError("The rival strategy needs 'rival_models': base models to compare with.", "rival_models")
    if "external" in strategies and not external:
        raise EvalRequestError("The external strategy needs 'external' {base_url, api_key, model}.", "external")
    if "rag-fine-tuned" in strategies and not fine_tuned:
        raise EvalRequestError("The rag-fine-tuned strategy needs 'fine_tuned_models'.", "fine_tuned_models")
    if any(k in strategies for k in ("rag", "rag-fine-tuned")) and not documents:
        raise EvalRequestError("The RAG strategies need 'documents': file ids of knowledge documents.", "documents")
    if "function-calling" in strategies and not tools_in_eval_file:
        raise EvalRequestError(
            "The function-calling strategy needs held-out examples that carry 'tools'; the eval_file has none.",
            f"strategies[{strategies.index('function-calling')}]",
        )
    tool_choice = body.get("tool_choice", "auto")
    if tool_choice not in TOOL_CHOICES:
        raise EvalRequestError(f"'tool_choice' must be one of {', '.join(TOOL_CHOICES)}.", "tool_choice")
    needs_training = any(k in strategies for k in ("few-shot", "retrieval-few-shot"))
    if needs_training and not body.get("training_file"):
        raise EvalRequestError("Few-shot strategies need a 'training_file' to draw examples from.", "training_file")
    if body.get("training_file"):
        _file(session, organization_id, body["training_file"], "training_file", EVAL_FILE_PURPOSES)

    metrics = _str_list(body, "metrics")
    for index, name in enumerate(metrics or []):
        if name not in known_metrics():
            raise EvalRequestError(
                f"Unknown metric '{name}'; choose from {', '.join(known_metrics())}.", f"metrics[{index}]"
            )
    if metrics and JUDGE_METRIC in metrics and judge is None:
        raise EvalRequestError(f"The {JUDGE_METRIC} metric needs 'judge' settings.", "judge")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise EvalRequestError("'metadata' must be an object of string values.", "metadata")
    check_active_jobs(session, organization_id)  # QuotaExceeded: answered 429 naming OPENFT_MAX_ACTIVE_JOBS

    config = {
        "eval_file": body["eval_file"],
        "training_file": body.get("training_file"),
        "model": model,
        "fine_tuned_models": fine_tuned,
        "strategies": strategies,
        "k": _int(body, "k", 3, 0, MAX_K),
        "metrics": metrics,
        "labels": _str_list(body, "labels"),
        "max_tokens": _int(body, "max_tokens", 256, 1, MAX_TOKENS),
        "max_examples": _int(body, "max_examples", None, 1, None),
        "seed": _int(body, "seed", 0, 0, None),
        "external": external,
        "judge": judge,
        "documents": documents,
        "rag_k": _int(body, "rag_k", 3, 1, MAX_K),
        "tool_choice": tool_choice,
        "rival_models": rivals,
        **_forgetting_fields(body),
    }
    return CheckedRequest(config, metadata)


def _rival_models(body: dict[str, Any]) -> list[str]:
    """Other base models of the registry to run as rivals ("does the fine-tuned model match a bigger one?")."""
    rivals = _str_list(body, "rival_models") or []
    for index, name in enumerate(rivals):
        try:
            get_base_model(name)
        except ModelNotFound:
            raise EvalRequestError(
                f"The rival model `{name}` is not a base model. List them with GET /v1/models; a hosted model is "
                "compared through 'external'.",
                f"rival_models[{index}]",
                "model_not_found",
            ) from None
        if name in rivals[:index]:
            raise EvalRequestError(f"The rival model `{name}` is named twice.", f"rival_models[{index}]")
    return rivals


def _forgetting_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The forgetting check's switch and size (evals.forgetting; it runs when fine-tuned models are evaluated)."""
    from openft.evals.forgetting import DEFAULT_ITEMS, MIN_ITEMS
    from openft.evals.general_set import full_size

    enabled = body.get("forgetting_check", True)
    if not isinstance(enabled, bool):
        raise EvalRequestError("'forgetting_check' must be true or false.", "forgetting_check")
    return {
        "forgetting_check": enabled,
        "forgetting_items": _int(body, "forgetting_items", DEFAULT_ITEMS, MIN_ITEMS, full_size()),
    }


def _documents(session: Session, organization_id: str, body: dict[str, Any]) -> list[str]:
    """The knowledge documents' file ids, each checked: found, purpose user_data/assistants, text that chunks."""
    value = body.get("documents")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EvalRequestError("'documents' must be a list of file ids.", "documents")
    if not value or len(value) > MAX_DOCUMENTS:
        raise EvalRequestError(f"'documents' must name between 1 and {MAX_DOCUMENTS} files.", "documents")
    try:
        document_chunks(session, organization_id, value)
    except DocumentFileError as error:
        raise EvalRequestError(error.message, f"documents[{error.index}]", error.code) from None
    return value


def _has_tools(session: Session, organization_id: str, file_id: str) -> bool:
    """Whether any held-out example carries tool definitions (the file was checked by _file already)."""
    row = file_store.get_file(session, organization_id, file_id)
    return any(e.tools for e in load_examples(BlobStore(get_settings().files_dir).path(row.storage_key)))


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as shown to users: API keys are never sent back."""
    shown = dict(config)
    for name in ENDPOINTS:
        if shown.get(name) and shown[name].get("api_key"):
            shown[name] = {**shown[name], "api_key": "***"}
    return shown


def _number(params: dict[str, Any], name: str, default: float | None, *, positive: bool = True) -> float | None:
    value = params.get(name, default)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
        raise EvalRequestError(f"'{name}' must be a number, got {str(value)[:40]!r}.", name) from None
    if not math.isfinite(number):  # "inf", 1e400: the advice would hold Infinity, which JSON cannot carry
        raise EvalRequestError(f"'{name}' must be a finite number, got {str(value)[:40]!r}.", name)
    if number < 0 or (positive and number == 0):
        raise EvalRequestError(f"'{name}' must be {'positive' if positive else 'non-negative'}, got {value!r}.", name)
    return number


def advice_settings(params: dict[str, Any]):
    """AdviceSettings from API/CLI parameters (query strings or JSON), or EvalRequestError naming the parameter."""
    from decimal import Decimal

    from openft.evals.advisor import AdviceSettings
    from openft.pricing import UnknownModelPrice, training_price

    device = params.get("device", "cpu")
    if device not in ("cpu", "gpu"):
        raise EvalRequestError("'device' must be 'cpu' or 'gpu'.", "device")
    hosted = params.get("hosted_models") or {}
    if not isinstance(hosted, dict) or not all(isinstance(v, str | None) for v in hosted.values()):
        raise EvalRequestError("'hosted_models' must map strategy names or kinds to model names.", "hosted_models")
    training_model = params.get("hosted_training_model") or "gpt-4o-mini"
    try:
        training_price(str(training_model))
    except UnknownModelPrice as exc:
        raise EvalRequestError(str(exc), "hosted_training_model") from None
    price = _number(params, "price_per_device_hour", None, positive=False)
    n_devices = _number(params, "n_devices", 1)
    if n_devices is None or n_devices != int(n_devices):
        raise EvalRequestError("'n_devices' must be a whole number.", "n_devices")
    return AdviceSettings(
        requests_per_day=_number(params, "requests_per_day", 1000.0),
        horizon_months=_number(params, "horizon_months", 12.0),
        days_per_month=_number(params, "days_per_month", 30.0),
        hosted_models=hosted,
        hosted_training_model=str(training_model),
        device=device,
        n_devices=int(n_devices),
        concurrency=_number(params, "concurrency", 1.0),
        price_per_device_hour=None if price is None else Decimal(str(price)),
    )
