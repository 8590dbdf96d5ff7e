"""Checks specific to the legacy ``POST /v1/completions`` (the parameters chat shares are checked in chat.py).

Every combination the engine cannot honour is a 400 naming the parameter, never a silent ignore.
"""

from __future__ import annotations

from typing import Any

from openft.api.errors import bad_request

MAX_BEST_OF = 16
MAX_PROMPTS = 32
MAX_GENERATIONS = 64  # prompts x best_of in one request; the engine's default queue holds 64
MAX_LOGPROBS = 5  # OpenAI's limit for the legacy endpoint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prompt_count(prompt: Any) -> int:
    """How many prompts ``prompt`` holds, or raise the 400: a string, a list of strings, a token-id list, or a
    list of token-id lists (OpenAI's four shapes)."""
    if isinstance(prompt, str):
        return 1
    message = ("'prompt' must be a string, a list of strings, a list of token ids, or a list of lists of token "
               "ids.")
    if not isinstance(prompt, list) or not prompt:
        raise bad_request(message, param="prompt")
    if all(_is_int(item) for item in prompt):
        return 1
    for index, item in enumerate(prompt):
        valid = isinstance(item, str) or (isinstance(item, list) and item and all(_is_int(t) for t in item))
        if not valid:
            raise bad_request(f"Invalid value for 'prompt[{index}]': {message}", param=f"prompt[{index}]")
    return len(prompt)


def check_completion_request(body: dict[str, Any]) -> None:
    prompts = prompt_count(body.get("prompt"))
    if prompts > MAX_PROMPTS:
        raise bad_request(f"'prompt' holds {prompts} prompts; openft takes at most {MAX_PROMPTS} per request.",
                          param="prompt")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= MAX_LOGPROBS):
        raise bad_request(f"Invalid value for 'logprobs': expected an integer between 0 and {MAX_LOGPROBS}.",
                          param="logprobs")
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise bad_request("'echo' must be a boolean.", param="echo")
    if echo and logprobs is not None:
        # The prompt tokens' logprobs need a scoring pass over the prompt that the engine does not offer.
        raise bad_request("'echo' together with 'logprobs' is not supported by openft's engine (it cannot return "
                          "the prompt tokens' logprobs); use one or the other.", param="echo")
    if body.get("suffix"):
        raise bad_request("'suffix' is not supported: openft's models do not do text insertion.", param="suffix")
    n = body.get("n") or 1
    best_of = body.get("best_of")
    if best_of is None:
        best_of = n
    elif not _is_int(best_of) or not 1 <= best_of <= MAX_BEST_OF:
        raise bad_request(f"Invalid value for 'best_of': expected an integer between 1 and {MAX_BEST_OF}.",
                          param="best_of")
    if best_of < n:
        raise bad_request(f"'best_of' ({best_of}) must be at least 'n' ({n}).", param="best_of")
    if best_of > n and body.get("stream"):
        raise bad_request("'best_of' greater than 'n' cannot be streamed: the best completions are known only at "
                          "the end.", param="best_of")
    if prompts * best_of > MAX_GENERATIONS:
        raise bad_request(f"{prompts} prompt(s) x {best_of} completions each is more than the {MAX_GENERATIONS} "
                          "generations openft runs for one request.", param="n" if body.get("best_of") is None
                          else "best_of")
