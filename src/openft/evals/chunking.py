"""Knowledge documents for RAG: read an uploaded text, Markdown or JSONL file, and cut it into passages.

Chunks follow paragraphs (blank-line separated; a Markdown heading stays with the paragraph after it and
starts a new chunk) and are packed up to MAX_WORDS words, so a passage is a whole thought rather than an
arbitrary window. A paragraph longer than that is cut into overlapping windows of MAX_WORDS words
(OVERLAP_WORDS shared with the previous window), so a fact that straddles a cut is whole in one of the two.
Words are the unit because they do not depend on any model: all-MiniLM-L6-v2 reads at most 256 word pieces,
about 180 English words, so a 120-word passage is embedded whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath

MAX_WORDS = 120
OVERLAP_WORDS = 20
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown")
JSONL_SUFFIXES = (".jsonl",)
JSONL_TEXT_KEYS = ("text", "content", "body")  # the first string field found is the document's text
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_HEADING = re.compile(r"^#{1,6}\s")


class DocumentError(ValueError):
    """An uploaded document cannot be used for RAG; the message says why (and the line, for JSONL)."""


@dataclass(frozen=True)
class Document:
    name: str  # the uploaded file's name, with "#<line>" for a JSONL record
    text: str


@dataclass(frozen=True)
class Chunk:
    text: str
    source: str  # Document.name
    index: int  # position within its document, from 0


def _decode(raw: bytes, filename: str) -> str:
    if b"\x00" in raw:
        raise DocumentError(f"'{filename}' is not a text document (it holds binary data)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"'{filename}' is not UTF-8 text (byte {exc.start} cannot be decoded)") from None


def _jsonl_documents(text: str, filename: str) -> list[Document]:
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"'{filename}' line {number}: not valid JSON ({exc.msg})") from None
        if isinstance(record, str):
            body = record
        elif isinstance(record, dict):
            body = next((record[k] for k in JSONL_TEXT_KEYS if isinstance(record.get(k), str)), None)
            if body is None:
                keys = ", ".join(f"'{k}'" for k in JSONL_TEXT_KEYS)
                raise DocumentError(f"'{filename}' line {number}: expected a string or an object with one of {keys}")
            title = record.get("title")
            if isinstance(title, str) and title.strip():
                body = f"{title.strip()}\n\n{body}"
        else:
            raise DocumentError(f"'{filename}' line {number}: expected a string or an object with a 'text' field")
        if body.strip():
            documents.append(Document(f"{filename}#{number}", body))
    return documents


def read_documents(raw: bytes, filename: str) -> list[Document]:
    """The documents in an uploaded file: one for .txt/.md, one per non-blank line for .jsonl.

    Raises DocumentError for another kind of file, binary or non-UTF-8 content, a bad JSONL line, or no text.
    """
    suffix = PurePath(filename).suffix.lower()
    if suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES:
        allowed = ", ".join(TEXT_SUFFIXES + JSONL_SUFFIXES)
        raise DocumentError(f"'{filename}' is not a text document; upload one of {allowed}")
    text = _decode(raw, filename)
    documents = _jsonl_documents(text, filename) if suffix in JSONL_SUFFIXES else [Document(filename, text)]
    documents = [d for d in documents if d.text.strip()]
    if not documents:
        raise DocumentError(f"'{filename}' holds no text")
    return documents


def _normalize(block: str) -> str:
    """Whitespace collapsed, except that a heading on the block's first line keeps its own line."""
    first, _, rest = block.strip().partition("\n")
    if _HEADING.match(first) and rest.strip():
        return f"{' '.join(first.split())}\n{' '.join(rest.split())}"
    return " ".join(block.split())


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace-normalised; a heading is joined to the paragraph after it."""
    parts = [_normalize(p) for p in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n"))]
    merged: list[str] = []
    pending_heading = ""
    for part in filter(None, parts):
        if _HEADING.match(part) and "\n" not in part:  # a heading alone: it joins the next paragraph
            pending_heading = f"{pending_heading} {part}".strip()
            continue
        merged.append(f"{pending_heading}\n{part}" if pending_heading else part)
        pending_heading = ""
    if pending_heading:
        merged.append(pending_heading)
    return merged


def _windows(words: list[str], max_words: int, overlap: int) -> list[str]:
    step = max(1, max_words - overlap)
    starts = range(0, max(1, len(words) - overlap), step)
    return [" ".join(words[s : s + max_words]) for s in starts]


def chunk_text(text: str, source: str, max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS) -> list[Chunk]:
    """Passages of at most `max_words` words: whole paragraphs packed together, long ones cut with overlap."""
    if overlap_words >= max_words:
        raise ValueError("overlap_words must be smaller than max_words")
    pieces: list[str] = []
    current: list[str] = []
    used = 0  # words in `current`
    for paragraph in paragraphs(text):
        words = paragraph.split()
        new_section = bool(_HEADING.match(paragraph))
        if current and (new_section or len(words) > max_words or used + len(words) > max_words):
            pieces.append("\n".join(current))
            current, used = [], 0
        if len(words) > max_words:
            pieces.extend(_windows(words, max_words, overlap_words))
            continue
        current.append(paragraph)
        used += len(words)
    if current:
        pieces.append("\n".join(current))
    return [Chunk(piece, source, i) for i, piece in enumerate(pieces)]


def chunk_documents(
    documents: list[Document], max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS
) -> list[Chunk]:
    return [c for d in documents for c in chunk_text(d.text, d.name, max_words, overlap_words)]
