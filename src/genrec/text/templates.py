"""Item text templates: an item's feature row rendered as one line of text.

The rendering is versioned: :attr:`ItemTextTemplate.version` and every rendering choice are
part of the embedding-cache key (:meth:`ItemTextTemplate.key`), so a change in how text is
built never reuses vectors computed from the old text.

Rendering rules, per field in :attr:`ItemTextTemplate.fields` order (fields the table lacks
are skipped): strings are stripped; lists keep their first ``max_list_values`` distinct
non-empty values joined by ``", "``; floats are written with at most two decimals
(``12.5``), integers as they are. Empty and null values are dropped, and each remaining value
is written ``"Title: Kolya"`` (or just ``"Kolya"`` without labels), joined by ``". "``. An item
without a feature row, or with no usable field, gets the empty string.
"""

from __future__ import annotations

import json
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TEMPLATE_VERSION", "ItemTextTemplate", "render_item_texts"]

TEMPLATE_VERSION = 1
"""Current version of the rendering rules in this module."""

DEFAULT_FIELDS = ["title", "brand", "categories", "genres", "year", "price"]


class ItemTextTemplate(BaseModel):
    """Which item features become text, and how."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = TEMPLATE_VERSION
    """Version of the rendering rules (see the module docstring); part of the cache key."""
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    """Item feature columns to render, in this order; any column works, and columns the
    table lacks are skipped (so one template serves MovieLens and Amazon)."""
    labels: bool = True
    """Prefix each value with its field name (``"Brand: OPI"``), which tells the encoder what
    a bare value such as ``"1996"`` or ``"12"`` means."""
    max_list_values: int = Field(8, ge=1)
    """At most this many values of a list field (long Amazon category paths add noise)."""

    def key(self) -> str:
        """A stable string of every rendering choice (part of embedding-cache keys)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def render(self, items: pl.DataFrame, n_items: int) -> list[str]:
        """One text per dense item id ``0..n_items-1`` (see :func:`render_item_texts`)."""
        return render_item_texts(items, n_items, self)


def _field_expr(name: str, dtype: pl.DataType, template: ItemTextTemplate) -> pl.Expr | None:
    """A string expression for one column (null when empty), or None for unusable types."""
    col = pl.col(name)
    if isinstance(dtype, pl.List):
        text = (col.list.eval(pl.element().cast(pl.String).str.strip_chars()
                              .filter(pl.element().str.len_chars() > 0))
                .list.unique(maintain_order=True).list.head(template.max_list_values)
                .list.join(", "))
    elif dtype.is_float():
        text = col.round(2).cast(pl.String).str.replace(r"\.0$", "")
    elif dtype.is_integer() or dtype == pl.String or dtype == pl.Categorical:
        text = col.cast(pl.String).str.strip_chars()
    else:
        return None
    text = pl.when(text.str.len_chars() > 0).then(text)  # empty -> null, dropped below
    if template.labels:
        label = name.replace("_", " ").capitalize()
        text = pl.concat_str([pl.lit(f"{label}: "), text])  # null stays null
    return text


def render_item_texts(items: pl.DataFrame, n_items: int,
                      template: ItemTextTemplate | None = None) -> list[str]:
    """Render every item's feature row as text.

    Args:
        items: Item features with a dense ``item`` column (``Dataset.items``); may be empty.
        n_items: Catalogue size; items without a row get ``""``.
        template: Rendering settings; defaults to :class:`ItemTextTemplate`.

    Returns:
        ``n_items`` strings, item ``i`` at position ``i``.
    """
    template = template or ItemTextTemplate()
    base = pl.DataFrame({"item": pl.arange(0, n_items, eager=True).cast(pl.Int64)})
    if items.is_empty() or "item" not in items.columns:
        return [""] * n_items
    exprs = [e for f in template.fields if f in items.columns and f != "item"
             if (e := _field_expr(f, items.schema[f], template)) is not None]
    if not exprs:
        return [""] * n_items
    text = items.select(pl.col("item").cast(pl.Int64),
                        pl.concat_str(exprs, separator=". ", ignore_nulls=True).alias("text"))
    out = base.join(text, on="item", how="left", maintain_order="left")
    return out["text"].fill_null("").to_list()
