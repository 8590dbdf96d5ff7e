"""Checking a distillation request before it is queued: every mistake names the parameter at fault."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import regex
from sqlalchemy.orm import Session

from openft.config import get_settings
from openft.evals.distill.filters import FILTER_KEYS
from openft.evals.distill.prompts import PromptFileError, read_prompts
from openft.evals.requests import EvalRequestError, _endpoint
from openft.graders import GraderSpecError, check_grader
from openft.models.registry import ModelNotFound, get_base_model
from openft.store import files as file_store
from openft.store import jobs as job_store
from openft.store.blobs import BlobStore
from openft.store.quotas import check_active_jobs

INPUT_PURPOSES = ("user_data", "evals", "fine-tune", "batch")
FIELDS = ("input_file", "teacher", "model", "temperature", "top_p", "max_completion_tokens", "seed", "concurrency",
          "max_attempts", "request_timeout", "filter", "metadata")  # fmt: skip
TEACHER_FIELDS = ("model", "base_url", "api_key", "api_key_env", "price_model")
MAX_COMPLETION_TOKENS = 32_768
MAX_CONCURRENCY = 64


class DistillRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass
class CheckedRequest:
    config: dict[str, Any]
    metadata: dict[str, str] | None
    n_prompts: int


def _number(body: dict[str, Any], name: str, default: float | None, low: float, high: float, *,
            integer: bool = False, low_open: bool = False) -> float | int | None:  # fmt: skip
    value = body.get(name, default)
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise DistillRequestError(f"'{name}' must be {kind}, got {str(value)[:40]!r}.", name)
    if not low <= value <= high or (low_open and value == low):  # NaN and infinities fail the comparison
        bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
        top = f"{high:,}" if isinstance(high, int) else f"{high:g}"
        raise DistillRequestError(f"'{name}' must be {kind} {bound} and at most {top}, got {str(value)[:40]}.", name)
    return value


def _input_file(session: Session, organization_id: str, file_id: Any) -> int:
    if not isinstance(file_id, str) or not file_id:
        raise DistillRequestError("'input_file' must be a file id.", "input_file")
    row = file_store.get_file(session, organization_id, file_id)
    if row is None:
        raise DistillRequestError(f"File {file_id} not found.", "input_file", "file_not_found")
    if row.purpose not in INPUT_PURPOSES:
        raise DistillRequestError(f"File {file_id} has purpose '{row.purpose}'; upload prompts with purpose "
                                  f"{' or '.join(INPUT_PURPOSES)}.", "input_file")  # fmt: skip
    try:
        prompts = read_prompts(BlobStore(get_settings().files_dir).path(row.storage_key))
    except PromptFileError as exc:
        raise DistillRequestError(f"File {file_id} is not a prompt file: {exc}", "input_file",
                                  "invalid_prompt_file") from None  # fmt: skip
    return len(prompts)


def _teacher(session: Session, organization_id: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DistillRequestError("'teacher' must be an object {model, base_url?, api_key?}.", "teacher")
    unknown = sorted(set(value) - set(TEACHER_FIELDS))
    if unknown:
        raise DistillRequestError(f"Unrecognized parameter 'teacher.{unknown[0]}'.", f"teacher.{unknown[0]}")
    try:
        teacher = _endpoint({"teacher": value}, "teacher", ("model",))  # allow-list, key sealed or named
    except EvalRequestError as error:
        raise DistillRequestError(error.message, error.param, error.code) from None
    if not teacher.get("base_url"):
        if teacher.get("api_key") or teacher.get("api_key_env"):
            raise DistillRequestError("A teacher served by openft takes no API key; give 'teacher.base_url' for "
                                      "an external endpoint.", "teacher.base_url")  # fmt: skip
        _local_model(session, organization_id, teacher["model"])
    price_model = teacher.get("price_model")
    if price_model is not None:
        from openft.pricing import UnknownModelPrice, lookup_inference_price

        if not isinstance(price_model, str) or not price_model:
            raise DistillRequestError("'teacher.price_model' must be a model name.", "teacher.price_model")
        try:
            lookup_inference_price(price_model)
        except UnknownModelPrice as exc:
            raise DistillRequestError(str(exc), "teacher.price_model") from None
    return teacher


def _local_model(session: Session, organization_id: str, name: str) -> None:
    try:
        get_base_model(name)
        return
    except ModelNotFound:
        pass
    if (job_store.get_fine_tuned_model(session, organization_id, name) is None
            and job_store.get_checkpoint_by_model(session, organization_id, name) is None):
        raise DistillRequestError(
            f"The model `{name}` does not exist or you do not have access to it. Name a base model or one of your "
            "fine-tuned models, or give 'teacher.base_url' for a model on another endpoint.",
            "teacher.model", "model_not_found",
        )  # fmt: skip


def _filter(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DistillRequestError("'filter' must be an object.", "filter")
    unknown = sorted(set(value) - set(FILTER_KEYS))
    if unknown:
        raise DistillRequestError(f"Unrecognized parameter 'filter.{unknown[0]}'; the filter takes "
                                  f"{', '.join(FILTER_KEYS)}.", f"filter.{unknown[0]}")  # fmt: skip
    checked = dict(value)
    for key in ("min_length", "max_length"):
        number = value.get(key)
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise DistillRequestError(f"'filter.{key}' must be a non-negative integer (characters).", f"filter.{key}")
    if value.get("min_length") is not None and value.get("max_length") is not None \
            and value["min_length"] > value["max_length"]:
        raise DistillRequestError("'filter.min_length' is larger than 'filter.max_length'.", "filter.min_length")
    for key in ("must_match", "must_not_match"):
        pattern = value.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, str) or not pattern:
            raise DistillRequestError(f"'filter.{key}' must be a regular expression.", f"filter.{key}")
        try:
            regex.compile(pattern)
        except regex.error as exc:
            raise DistillRequestError(f"'filter.{key}' is not a valid regular expression: {exc}.",
                                      f"filter.{key}") from None  # fmt: skip
    if "drop_truncated" in value and not isinstance(value["drop_truncated"], bool):
        raise DistillRequestError("'filter.drop_truncated' must be true or false.", "filter.drop_truncated")
    if value.get("grader") is not None:
        from openft.evals.openai_requests import default_threshold

        try:
            check_grader(value["grader"], "filter.grader")
        except GraderSpecError as exc:
            raise DistillRequestError(exc.message, exc.param) from None
        threshold = value.get("pass_threshold", default_threshold(value["grader"]))
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1e9 <= threshold <= 1e9:
            raise DistillRequestError("'filter.pass_threshold' must be a finite number.", "filter.pass_threshold")
        checked["pass_threshold"] = float(threshold)
    elif "pass_threshold" in value:
        raise DistillRequestError("'filter.pass_threshold' needs 'filter.grader'.", "filter.pass_threshold")
    return checked


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
        isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()
    ):
        raise DistillRequestError("'metadata' must be an object of at most 16 string pairs (keys up to 64 "
                                  "characters, values up to 512).", "metadata")  # fmt: skip
    return value


def check_request(session: Session, organization_id: str, body: dict[str, Any]) -> CheckedRequest:
    """The accepted configuration, or DistillRequestError naming the parameter."""
    if not isinstance(body, dict):
        raise DistillRequestError("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise DistillRequestError(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
    for required in ("input_file", "teacher"):
        if body.get(required) in (None, ""):
            raise DistillRequestError(f"Missing required parameter: '{required}'.", required)
    teacher = _teacher(session, organization_id, body["teacher"])
    student = body.get("model") or get_settings().validation_model
    try:
        get_base_model(student)
    except (ModelNotFound, TypeError):
        raise DistillRequestError(f"The model `{student}` is not a base model; 'model' names the student whose "
                                  "tokenizer validates the training file.", "model", "model_not_found") from None
    config = {
        "input_file": body["input_file"],
        "teacher": teacher,
        "model": student,
        "temperature": _number(body, "temperature", None, 0, 2),
        "top_p": _number(body, "top_p", None, 0, 1, low_open=True),
        "max_completion_tokens": _number(body, "max_completion_tokens", 1024, 1, MAX_COMPLETION_TOKENS,
                                         integer=True),  # fmt: skip
        "seed": _number(body, "seed", None, 0, 2**63 - 1, integer=True),
        "concurrency": _number(body, "concurrency", 4, 1, MAX_CONCURRENCY, integer=True),
        "max_attempts": _number(body, "max_attempts", 6, 1, 20, integer=True),
        "request_timeout": _number(body, "request_timeout", 120, 0, 600, low_open=True),
        "filter": _filter(body.get("filter")),
    }
    metadata = _metadata(body.get("metadata"))
    n_prompts = _input_file(session, organization_id, body["input_file"])  # last: it reads the whole file
    check_active_jobs(session, organization_id)  # QuotaExceeded: answered 429 naming OPENFT_MAX_ACTIVE_JOBS
    return CheckedRequest(config, metadata, n_prompts)


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as shown to users: the teacher's API key is never sent back."""
    teacher = dict(config["teacher"])
    if teacher.get("api_key"):
        teacher["api_key"] = "***"
    return {**config, "teacher": teacher}
