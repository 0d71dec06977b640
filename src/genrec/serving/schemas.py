"""Request and response bodies of the serving API (pydantic; the OpenAPI schema comes from here).

Every request body forbids unknown fields and caps its sizes, so a bad body is a 422 with a
message, never a 500. Raw ids are strings; JSON integers are accepted and turned into strings.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

__all__ = [
    "MAX_EVENTS",
    "MAX_FILTER",
    "MAX_HISTORY",
    "MAX_K",
    "ErrorResponse",
    "FeedbackEvent",
    "FeedbackRequest",
    "FeedbackResponse",
    "Filters",
    "HealthResponse",
    "ItemOut",
    "ModelInfo",
    "ModelStatus",
    "ModelsResponse",
    "RawId",
    "RecommendRequest",
    "RecommendResponse",
    "ReloadRequest",
    "ReloadResponse",
    "ScoredItem",
    "SimilarRequest",
    "SimilarResponse",
]

MAX_K = 1000
"""Largest ``k`` a request may ask for."""
MAX_HISTORY = 2000
"""Longest explicit history a request may send."""
MAX_EVENTS = 1000
"""Most feedback events per request."""
MAX_FILTER = 1000
"""Most entries of one filter list."""



def _id_from_int(value: Any) -> Any:
    """JSON integers are accepted as ids (MovieLens ids are numbers); booleans are not."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _utf8(value: str) -> str:
    """Reject lone surrogates (valid in JSON escapes, not encodable in UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("must be valid Unicode (no lone surrogates)") from e
    return value


def _strict_count(value: Any) -> Any:
    """Numbers only (``2.0`` counts as an integer, as in JSON Schema): no booleans or strings."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")  # noqa: TRY004 - pydantic wants ValueError
    return value


RawId = Annotated[
    str, BeforeValidator(_id_from_int), StringConstraints(min_length=1, max_length=256),
    AfterValidator(_utf8),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 256},
                              {"type": "integer"}]}),
]
"""A raw user or item id: a string, or a JSON integer taken as its decimal string."""

Count = Annotated[int, BeforeValidator(_strict_count)]
Real = Annotated[float, BeforeValidator(_strict_count)]

Name = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_utf8)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Body):
    """Which items may be returned."""

    blocked_categories: list[Name] = Field(default_factory=list, max_length=MAX_FILTER)
    """Never return items in any of these categories (genres)."""
    blocked_items: list[RawId] = Field(default_factory=list, max_length=MAX_FILTER)
    """Never return these items (unknown ids are ignored)."""
    categories: list[Name] | None = Field(default=None, max_length=MAX_FILTER)
    """Only return items in at least one of these categories (all items when absent)."""


class RecommendRequest(_Body):
    """Recommendations for a known user, an explicit history of raw item ids, or both."""

    model: Name | None = None
    """Served model name; the default (first) model when absent."""
    user: RawId | None = None
    """Raw user id; an unknown user gets the cold-start answer."""
    history: list[RawId] | None = Field(default=None, max_length=MAX_HISTORY)
    """Raw item ids, oldest first; appended to the known user's stored history."""
    k: Count = Field(default=10, ge=1, le=MAX_K)
    """Number of items to return."""
    exclude_seen: bool = True
    """Never return items of the history."""
    filters: Filters = Field(default_factory=Filters)
    """Blocked categories and items."""
    include_history: bool = False
    """Also return the history used, with titles (for the playground)."""


class SimilarRequest(_Body):
    """Items related to one item."""

    model: Name | None = None
    """Served model name; the default model when absent."""
    item: RawId
    """Raw item id."""
    k: Count = Field(default=10, ge=1, le=MAX_K)
    """Number of items to return."""
    filters: Filters = Field(default_factory=Filters)
    """Blocked categories and items."""


class ItemOut(BaseModel):
    """An item with its display fields."""

    item: str
    title: str
    categories: list[str]


class ScoredItem(ItemOut):
    """A recommended item."""

    score: float


class RecommendResponse(BaseModel):
    """Ranked items, best first."""

    model: str
    user: str | None
    cold_start: bool
    """True when the answer is the popularity fallback (unknown user or empty history)."""
    reason: str | None = None
    """Why the fallback was used."""
    items: list[ScoredItem]
    history_length: int
    history: list[ItemOut] | None = None


class SimilarResponse(BaseModel):
    """Items related to ``item``, most related first."""

    model: str
    item: ItemOut
    items: list[ScoredItem]


class FeedbackEvent(_Body):
    """One interaction reported back by a client."""

    user: RawId
    item: RawId
    event: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "click"
    """Event type, e.g. click, view, purchase, rating."""
    value: Annotated[Real, Field(allow_inf_nan=False)] | None = None
    """Optional value, e.g. a rating."""
    timestamp: Annotated[Real, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = None
    """Unix seconds; the server's clock when absent."""
    model: Name | None = None
    """Model whose recommendation led to the event."""
    event_id: RawId | None = None
    """Client-side id: an event sent twice with the same id is stored once (safe retries)."""


class FeedbackRequest(_Body):
    """A batch of feedback events."""

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class FeedbackResponse(BaseModel):
    """Acknowledgement: the events are durably stored when this is sent."""

    accepted: int
    """Events received."""
    stored: int
    """Events newly stored (the others repeated an ``event_id`` already stored)."""


class ModelInfo(BaseModel):
    """A served model."""

    name: str
    kind: str
    dataset: str | None
    n_users: int
    n_items: int
    config: dict[str, object]
    created_at: str | None
    loaded_at: str
    path: str | None
    categories: list[str]
    sample_users: list[str]
    default: bool


class ModelsResponse(BaseModel):
    """All served models; the first is the default."""

    models: list[ModelInfo]


class ModelStatus(BaseModel):
    """Readiness of one served model."""

    name: str
    ready: bool
    """Passed its smoke test when loaded and its latest ranking call did not fail."""
    loaded_at: str
    error: str | None = None
    """Why the latest ranking call failed (None when it succeeded)."""
    reload_error: str | None = None
    """Why the latest reload was refused (the model loaded before is still served)."""


class HealthResponse(BaseModel):
    """Liveness and readiness."""

    status: str
    """``ok`` when every model is ready and the feedback store answers, else ``degraded``."""
    models: list[str]
    feedback_store: str
    uptime_seconds: float
    model_status: list[ModelStatus] = []
    auth: bool = False
    """Whether requests need an API key."""


class ReloadRequest(_Body):
    """Which model to reload from disk."""

    model: Name | None = None
    """A served model name; every model when absent."""


class ReloadResponse(BaseModel):
    """Models reloaded."""

    reloaded: list[str]


class ErrorResponse(BaseModel):
    """An error."""

    detail: str
