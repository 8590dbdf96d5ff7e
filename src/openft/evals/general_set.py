"""The general-capability set of the forgetting check, built offline from data that ships in two PyPI wheels.

- conversations: the first exchange (a user line and the reply) of each dialogue in chatterbot-corpus's English
  categories (BSD licence, `chatterbot_corpus/data/english/*.yml`); measured by the loss of the reply;
- simple questions: "What is the capital of X?" and "In which region of the world is X?" for the countries in
  countryinfo (MIT licence, `countryinfo/data/*.json`), each with four options (the right one and three drawn
  from other countries); measured by whether the model finds the right option the most likely.

Nothing downloads: both wheels are openft dependencies and are read from the installed packages. The order is
fixed by a SHA-256 of each item's text, so the set is the same on every machine, and a smaller set is always a
prefix of a larger one (conversations and questions interleaved).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from typing import Literal

FULL_CONVERSATIONS = 200
FULL_QUESTIONS = 200  # half capitals, half regions
N_OPTIONS = 4
MAX_REPLY_CHARS = 300  # long replies would dominate the token count without telling more
# Everyday categories; the corpus's bot-persona ones (ai, botprofile, emotion) and the long technical ones
# (coding, tech_support) are left out.
CONVERSATION_CATEGORIES = (
    "computers", "conversations", "food", "gossip", "greetings", "health", "history", "humor", "literature",
    "money", "movies", "politics", "psychology", "science", "sports", "trivia",
)  # fmt: skip
REGIONS = ("Africa", "Americas", "Asia", "Europe", "Oceania")
SOURCES = (
    {"package": "chatterbot-corpus", "licence": "BSD", "part": "conversations"},
    {"package": "countryinfo", "licence": "MIT", "part": "simple questions"},
)


@dataclass(frozen=True)
class GeneralItem:
    kind: Literal["conversation", "question"]
    prompt: str  # the user's turn
    reference: str  # conversation: the reply whose loss is measured; question: the right option
    options: tuple[str, ...] = ()  # question: every option, the right one included
    topic: str = ""  # the corpus category, or "capital" / "region"

    @property
    def answer_index(self) -> int:
        return self.options.index(self.reference)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_yaml(category: str) -> list:
    import yaml

    path = resources.files("chatterbot_corpus") / "data" / "english" / f"{category}.yml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it: 10x faster
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader).get("conversations") or []


@cache
def _conversations() -> tuple[GeneralItem, ...]:
    items, seen = [], set()
    for category in CONVERSATION_CATEGORIES:
        for dialogue in _load_yaml(category):
            if not isinstance(dialogue, list) or len(dialogue) < 2:
                continue  # the corpus has a few malformed entries
            prompt, reply = (str(x).strip() if isinstance(x, str | int | float) else "" for x in dialogue[:2])
            if not prompt or not reply or len(reply) > MAX_REPLY_CHARS or prompt.lower() in seen:
                continue
            seen.add(prompt.lower())
            items.append(GeneralItem("conversation", prompt, reply, topic=category))
    items.sort(key=lambda i: _digest(i.prompt))
    return tuple(items[:FULL_CONVERSATIONS])


def _countries() -> list[dict]:
    folder = resources.files("countryinfo") / "data"
    countries = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            info = json.loads(entry.read_text(encoding="utf-8"))
        except ValueError:
            continue
        name, capital, region = info.get("name"), info.get("capital"), info.get("region")
        if isinstance(name, str) and isinstance(capital, str) and name.strip() and capital.strip():
            countries.append({"name": name.strip(), "capital": capital.strip(), "region": region})
    return countries


def _question(prompt: str, right: str, wrong: list[str], topic: str) -> GeneralItem:
    rng = random.Random(_digest(prompt))  # seeded by the question: the same options in the same order everywhere
    options = [right, *rng.sample(sorted(set(wrong) - {right}), N_OPTIONS - 1)]
    rng.shuffle(options)
    return GeneralItem("question", prompt, right, tuple(options), topic)


@cache
def _questions() -> tuple[GeneralItem, ...]:
    countries = _countries()
    capitals = [c["capital"] for c in countries]
    per_topic = FULL_QUESTIONS // 2
    by_capital = sorted(
        (_question(f"What is the capital of {c['name']}?", c["capital"], capitals, "capital") for c in countries),
        key=lambda i: _digest(i.prompt),
    )[:per_topic]
    by_region = sorted(
        (
            _question(f"In which region of the world is {c['name']}?", c["region"], list(REGIONS), "region")
            for c in countries
            if c["region"] in REGIONS
        ),
        key=lambda i: _digest(i.prompt),
    )[:per_topic]
    # Alternate the two kinds so that any prefix holds both.
    mixed = [item for pair in zip(by_capital, by_region, strict=False) for item in pair]
    return tuple(mixed)


def general_items(n_items: int | None = None) -> list[GeneralItem]:
    """The first `n_items` of the set (all of it when None), conversations and questions alternating."""
    conversations, questions = _conversations(), _questions()
    mixed = [item for pair in zip(conversations, questions, strict=False) for item in pair]
    longer = conversations if len(conversations) > len(questions) else questions
    mixed.extend(longer[min(len(conversations), len(questions)) :])
    return mixed if n_items is None else mixed[:n_items]


def full_size() -> int:
    return len(_conversations()) + len(_questions())


def describe(items: list[GeneralItem]) -> dict:
    """What was measured, for the report: sizes, sources with their licences and versions, a fingerprint."""
    sources = []
    for source in SOURCES:
        try:
            version = metadata.version(source["package"])
        except metadata.PackageNotFoundError:
            version = None
        sources.append({**source, "version": version})
    payload = json.dumps([[i.kind, i.prompt, i.reference, list(i.options)] for i in items], ensure_ascii=False)
    return {
        "name": "openft-general-v1",
        "n_items": len(items),
        "n_conversations": sum(i.kind == "conversation" for i in items),
        "n_questions": sum(i.kind == "question" for i in items),
        "sources": sources,
        "fingerprint": _digest(payload)[:16],
    }
