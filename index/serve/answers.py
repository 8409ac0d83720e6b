"""The JSON API's answers as pydantic models: FastAPI checks every answer against them and the
OpenAPI page (/docs) shows each one's fields. `Service` builds the answers as plain dicts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str = Field(description='"ok" while the server answers')
    items: int = Field(description="items in the index")
    model: str = Field(description="the editor: a shipped model's name or a model folder")
    compiled: bool = Field(description="whether the models run compiled (torch.compile)")
    device: str


class SchemaAnswer(BaseModel):
    attributes: dict[str, list[str]] = Field(
        description="each attribute's values, in the index's order")
    regions: list[str] = Field(description="named regions an edit can be confined to (only_region)")
    filters: dict[str, list[str]] = Field(
        description="metadata fields `where` takes, with their values")
    k_max: int = Field(description="the most results one query returns")


class Item(BaseModel):
    id: Any
    attributes: dict[str, Any]
    image_url: str


class Items(BaseModel):
    total: int = Field(description="items in the index")
    items: list[Item]


class Result(BaseModel):
    """One result: the item's metadata columns (split, category, gender: those the catalog has)
    come beside these fields."""
    model_config = ConfigDict(extra="allow")

    rank: int = Field(description="1 for the nearest item")
    id: Any
    score: float = Field(description="cosine similarity of the item to the edit")
    attributes: dict[str, Any]
    image_url: str = Field(description="the item's image (PNG), by id")


class EditAnswer(BaseModel):
    targets: dict[str, str] = Field(description="the targets applied, by attribute")
    edited: str | None = Field(description="the edit as a PNG data URL (long side at most 512 px)")
    mask: str | None = Field(description="the combined attention mask as a PNG data URL")


class QueryAnswer(BaseModel):
    targets: dict[str, str] = Field(description="the targets applied ({} when unedited)")
    start: dict[str, Any] = Field(description='{"item_id": the catalog item started from, or null}')
    image: str | None = Field(description="the photo searched from, as a PNG data URL")
    edited: str | None = Field(description="its edit as a PNG data URL (null when unedited)")
    mask: str | None = Field(description="the combined attention mask as a PNG data URL")
    results: list[Result]
    timing_ms: dict[str, float] = Field(description="edit, embed and search of the batch; total")


class ErrorAnswer(BaseModel):
    error: str = Field(description="what went wrong, on one line")
