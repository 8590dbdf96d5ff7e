"""Streaming multipart parsing for uploads.

Starlette's form parser spools the whole upload before the endpoint runs, so it can neither stop
at the size cap nor decide where the bytes go. Here the file part streams straight into the blob
store, the cap is enforced while reading, and small text fields are collected in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from openft.api.errors import bad_request
from openft.store.blobs import open_private

MAX_FIELD_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    pass


@dataclass
class ParsedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_field: str | None = None
    size: int = 0
    file_parts: int = 0


async def parse_upload(
    request: Request, destination: Path, limit: int, file_field: str = "file"
) -> ParsedUpload:
    """Stream the multipart body; the part named ``file_field`` is written to ``destination``.

    Raises UploadTooLarge as soon as the file part passes ``limit`` bytes (the rest is not read).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise bad_request("Uploads must be sent as multipart/form-data with a 'file' and a 'purpose' field.")
    result = ParsedUpload()
    state: dict = {"name": None, "filename": None, "buffer": bytearray(), "headers": {}, "header": b""}
    out = os.fdopen(open_private(destination), "wb")  # 0600, and never an existing name

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = state["header"].decode("latin-1").lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["header"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        state["filename"] = filename.decode("utf-8", "replace") if filename is not None else None
        if state["name"] == file_field:
            result.file_parts += 1
            result.filename = state["filename"]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == file_field:
            result.size += len(chunk)
            if result.size > limit:
                raise UploadTooLarge()
            out.write(chunk)
        else:
            state["buffer"] += chunk
            if len(state["buffer"]) > MAX_FIELD_BYTES:
                raise bad_request(f"Form field '{state['name']}' is too long.", param=state["name"])

    def on_part_end() -> None:
        if state["name"] != file_field and state["name"]:
            result.fields[state["name"]] = bytes(state["buffer"]).decode("utf-8", "replace")
        state.update(name=None, filename=None, buffer=bytearray(), headers={}, header=b"")

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        out.flush()
        os.fsync(out.fileno())
    except Exception:
        out.close()
        destination.unlink(missing_ok=True)
        raise
    out.close()
    return result
