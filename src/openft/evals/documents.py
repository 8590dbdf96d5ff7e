"""The knowledge documents of an evaluation, read from the Files API's store and cut into passages."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from openft.config import get_settings
from openft.evals.chunking import Chunk, DocumentError, chunk_documents, read_documents
from openft.store import files as file_store
from openft.store.blobs import BlobStore

DOCUMENT_PURPOSES = ("user_data", "assistants")
MAX_DOCUMENTS = 100
MAX_PASSAGES = 20_000  # each is embedded once per run: ~20 minutes of MiniLM on two CPU cores at most


class DocumentFileError(ValueError):
    """A document file cannot be used; `index` is its position in the request's `documents` list."""

    def __init__(self, message: str, index: int, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.index, self.code = message, index, code


def document_chunks(session: Session, organization_id: str, file_ids: Sequence[str]) -> list[Chunk]:
    """The passages of the organization's document files, in request order. Raises DocumentFileError."""
    blobs = BlobStore(get_settings().files_dir)
    chunks: list[Chunk] = []
    for index, file_id in enumerate(file_ids):
        row = file_store.get_file(session, organization_id, file_id)
        if row is None:
            raise DocumentFileError(f"File {file_id} not found.", index, "file_not_found")
        if row.purpose not in DOCUMENT_PURPOSES:
            raise DocumentFileError(
                f"File {file_id} has purpose '{row.purpose}'; upload knowledge documents with purpose "
                f"{' or '.join(DOCUMENT_PURPOSES)}.",
                index,
            )
        try:
            raw = blobs.path(row.storage_key).read_bytes()
            chunks.extend(chunk_documents(read_documents(raw, row.filename)))
        except DocumentError as exc:
            message = f"File {file_id} cannot be used as a document: {exc}."
            raise DocumentFileError(message, index, "invalid_file") from None
        if len(chunks) > MAX_PASSAGES:
            raise DocumentFileError(
                f"The documents hold more than {MAX_PASSAGES:,} passages; give fewer or smaller documents.", index
            )
    return chunks
