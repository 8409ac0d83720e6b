"""The JSON API's answers as pydantic models: FastAPI checks every answer against them and the
OpenAPI page (/docs) shows each one's fields. `Service` builds the answers as plain dicts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str = Field(description='"ok" while the server answers')
    items: int = Field(description="items in the index")
    methods: list[str] = Field(description="the methods offered (`method` of a query)")
    default_method: str = Field(description="the method a query that names none gets")
    compiled: bool = Field(description="whether the models run compiled (torch.compile)")
    device: str


class MethodInfo(BaseModel):
    name: str = Field(description="what a query's `method` field names")
    kind: str = Field(description="real, editor (a GAN), prototype, feature (an embedding "
                      "manipulated by its attribute memory) or hybrid (a GAN's edit shown, the "
                      "search in the feature space)")
    edits_pixels: bool = Field(description="whether its answers carry an edit and a mask; a "
                               "method that moves the query's vector makes no picture")
    attributes: list[str] = Field(description="the attributes it can change (`targets`)")
    regions: list[str] = Field(description="named regions an edit can be confined to "
                               "(only_region); none for a method that edits no pixels")


class SchemaAnswer(BaseModel):
    attributes: dict[str, list[str]] = Field(
        description="each attribute's values, in the index's order")
    methods: list[MethodInfo] = Field(description="the methods offered, in order")
    default_method: str = Field(description="the method a query that names none gets")
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
    score: float = Field(description="cosine similarity of the item to the query's vector in "
                         "the method's space")
    attributes: dict[str, Any]
    image_url: str = Field(description="the item's image (PNG), by id")


class EditAnswer(BaseModel):
    method: str = Field(description="the method that made the edit")
    targets: dict[str, str] = Field(description="the targets applied, by attribute")
    edited: str | None = Field(description="the edit as a PNG data URL (long side at most 512 px)")
    mask: str | None = Field(description="the combined attention mask as a PNG data URL")


class QueryAnswer(BaseModel):
    method: str = Field(description="the method that answered")
    targets: dict[str, str] = Field(description="the targets applied ({} when unedited)")
    start: dict[str, Any] = Field(description='{"item_id": the catalog item started from, or null}')
    image: str | None = Field(description="the photo searched from, as a PNG data URL")
    edited: str | None = Field(description="its edit as a PNG data URL (null when unedited, and "
                               "for a method that edits no pixels)")
    mask: str | None = Field(description="the combined attention mask as a PNG data URL")
    results: list[Result]
    timing_ms: dict[str, float] = Field(
        description="edit, embed (with the vector's manipulation) and search of the batch's "
        "queries of the same method; total")


class ErrorAnswer(BaseModel):
    error: str = Field(description="what went wrong, on one line")
