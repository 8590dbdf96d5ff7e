"""`openft chat MODEL`: talk to a model over /v1/chat/completions (streaming), or compare two side by side."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from openft.cli.client import ApiKeyOption, BaseUrlOption, JsonOption, api_errors, make_client, print_json, stdout

EXIT_WORDS = {"/exit", "/quit"}


@dataclass
class Answer:
    """One streamed reply and what it cost."""

    model: str
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    error: BaseException | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "content": self.text,
            "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "first_token_s": self.first_token_s,
            "latency_s": self.latency_s,
        }


def stream_answer(
    client: Any, model: str, messages: list[dict[str, str]], on_text: Callable[[str], None], **sampling: Any
) -> Answer:
    """Stream one chat completion, calling ``on_text`` with each piece of text as it arrives."""
    answer = Answer(model=model)
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **sampling
    )
    for chunk in stream:
        if chunk.usage is not None:
            answer.prompt_tokens = chunk.usage.prompt_tokens
            answer.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                if answer.first_token_s is None:
                    answer.first_token_s = time.perf_counter() - started
                answer.text += choice.delta.content
                on_text(choice.delta.content)
            if choice.finish_reason:
                answer.finish_reason = choice.finish_reason
    answer.latency_s = time.perf_counter() - started
    return answer


def _stats_line(answer: Answer) -> str:
    tokens = f"{answer.prompt_tokens} prompt + {answer.completion_tokens} completion tokens"
    first = f", first token {answer.first_token_s:.2f} s" if answer.first_token_s is not None else ""
    return f"{tokens}, {answer.latency_s:.2f} s{first}"


def _ask_one(
    client: Any, model: str, history: list[dict[str, str]], console: Console, quiet: bool, sampling: dict[str, Any]
) -> Answer:
    def show(text: str) -> None:
        if not quiet:
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    answer = stream_answer(client, model, history, show, **sampling)
    if not quiet:
        console.print()
        console.print(Text(_stats_line(answer), style="dim"))
    return answer


def _side_by_side(answers: list[Answer]) -> Table:
    table = Table(expand=True, show_lines=True)
    for answer in answers:
        table.add_column(answer.model, ratio=1, overflow="fold")
    table.add_row(*(Text(a.text or "…") for a in answers))
    if all(a.latency_s is not None for a in answers):
        table.add_row(*(Text(_stats_line(a), style="dim") for a in answers))
    return table


def _ask_both(
    client: Any, histories: dict[str, list[dict[str, str]]], console: Console, quiet: bool, sampling: dict[str, Any]
) -> list[Answer]:
    """Send the same conversation turn to both models at once and show the replies in two columns."""
    answers = {model: Answer(model=model) for model in histories}
    lock = threading.Lock()

    def run(model: str) -> None:
        def grow(text: str) -> None:
            with lock:
                answers[model].text += text

        try:
            done = stream_answer(client, model, histories[model], grow, **sampling)
            with lock:
                answers[model] = done
        except BaseException as error:  # re-raised in the main thread, where the CLI reports it
            answers[model].error = error

    threads = [threading.Thread(target=run, args=(model,), daemon=True) for model in histories]
    for thread in threads:
        thread.start()
    if quiet:
        for thread in threads:
            thread.join()
    else:
        with Live(_side_by_side(list(answers.values())), console=console, refresh_per_second=8) as live:
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.05)
                with lock:
                    live.update(_side_by_side(list(answers.values())))
            live.update(_side_by_side(list(answers.values())))
    for answer in answers.values():
        if answer.error is not None:
            raise answer.error
    return list(answers.values())


def chat(
    model: str = typer.Argument(..., help="Model to talk to (base or ft:... name, or a checkpoint)."),
    compare: str = typer.Option(None, "--compare", help="A second model: both answer, side by side."),
    system: str = typer.Option(None, "--system", help="System message for the conversation."),
    message: str = typer.Option(None, "--message", "-m", help="Send one message, print the answer and exit."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Longest answer in tokens."),
    temperature: float = typer.Option(None, "--temperature", min=0.0, max=2.0, help="Sampling temperature."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Chat with a model (streaming). Type /reset to start over, /exit or Ctrl-D to leave."""
    client = make_client(base_url, api_key)
    models = [model] + ([compare] if compare else [])
    start = [{"role": "system", "content": system}] if system else []
    histories = {name: list(start) for name in models}
    sampling = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature}.items() if v is not None}
    console = stdout()
    if message is None and as_json:
        raise typer.BadParameter("--json needs --message (one question, one JSON answer).")

    def turn(text: str) -> list[Answer]:
        for history in histories.values():
            history.append({"role": "user", "content": text})
        with api_errors(base_url):
            if compare:
                answers = _ask_both(client, histories, console, as_json, sampling)
            else:
                answers = [_ask_one(client, model, histories[model], console, as_json, sampling)]
        for answer in answers:
            histories[answer.model].append({"role": "assistant", "content": answer.text})
        return answers

    if message is not None:
        answers = turn(message)
        if as_json:
            print_json([answer.to_json() for answer in answers])
        return
    console.print(Panel(Text(f"Chatting with {' and '.join(models)}. /reset starts over, /exit leaves."), expand=False))
    while True:
        try:
            text = console.input("[bold cyan]you>[/bold cyan] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if text.strip() in EXIT_WORDS:
            return
        if text.strip() == "/reset":
            histories = {name: list(start) for name in models}
            console.print(Text("Conversation reset.", style="dim"))
            continue
        if text.strip():
            turn(text)
