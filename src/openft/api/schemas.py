"""Wire shapes shared by several routers (OpenAI field names and envelopes)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

T = TypeVar("T")


class ListEnvelope(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def of(cls, items: list[Any], has_more: bool) -> ListEnvelope:
        return cls(
            data=items,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
            has_more=has_more,
        )


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI's schema types these as string / integer, not nullable: absent means left out, never null.
        out = handler(self)
        for name in ("status_details", "expires_at"):
            if out.get(name) is None:
                out.pop(name, None)
        return out


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
