"""Item text templates: an item's feature row rendered as one line of text.

The rendering is versioned: :attr:`ItemTextTemplate.version` and every rendering choice are
part of the embedding-cache key (:meth:`ItemTextTemplate.key`), so a change in how text is
built never reuses vectors computed from the old text.

Which fields: :attr:`ItemTextTemplate.fields`, or by default (``fields: null``) the
conventional ones the table has values in (title, brand, categories, genres, year, price), or,
when it has none of title / brand / categories / genres, every text column that is not an id
(``s3rec_attributes``, ``description``, ...). :func:`text_coverage` says which fields were
used and how many items each covers.

Rendering rules, per field in order (fields the table lacks are skipped): strings are
stripped; lists keep their first ``max_list_values`` distinct
non-empty values joined by ``", "``; floats are written with at most two decimals
(``12.5``), integers as they are. Empty and null values, and NaN or infinite floats, are
dropped, and each remaining value
is written ``"Title: Kolya"`` (or just ``"Kolya"`` without labels), joined by ``". "``. An item
without a feature row, or with no usable field, gets the empty string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_FIELDS", "TEMPLATE_VERSION", "ItemTextTemplate", "TextCoverage",
           "render_item_texts", "resolve_fields", "text_coverage"]

TEMPLATE_VERSION = 1
"""Current version of the rendering rules in this module."""

DEFAULT_FIELDS = ["title", "brand", "categories", "genres", "year", "price"]
"""The conventional fields the default template renders, in this order, when present."""
_DESCRIPTIVE = ("title", "brand", "categories", "genres")


class ItemTextTemplate(BaseModel):
    """Which item features become text, and how."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = TEMPLATE_VERSION
    """Version of the rendering rules (see the module docstring); part of the cache key."""
    fields: list[str] | None = None
    """Item feature columns to render, in this order; any column works, and columns the
    table lacks are skipped. None (the default) adapts to the table: the conventional fields
    it has (title, brand, categories, genres, year, price), else every text column that is not
    an id (see the module docstring)."""
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
        el = pl.element()
        if dtype.inner is not None and dtype.inner.is_float():
            el = pl.when(el.is_finite()).then(el)  # NaN / inf -> null, dropped below
        # two steps: the filter must see the strings (a numeric list is not one)
        text = (col.list.eval(el.cast(pl.String).str.strip_chars())
                .list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
                .list.unique(maintain_order=True).list.head(template.max_list_values)
                .list.join(", "))
    elif dtype.is_float():  # NaN and inf are missing values, not text
        text = pl.when(col.is_finite()).then(col.round(2).cast(pl.String).str.replace(r"\.0$", ""))
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
    exprs = [e for f in resolve_fields(items, template)
             if (e := _field_expr(f, items.schema[f], template)) is not None]
    if not exprs:
        return [""] * n_items
    text = items.select(pl.col("item").cast(pl.Int64),
                        pl.concat_str(exprs, separator=". ", ignore_nulls=True).alias("text"))
    # One text per item (the first row of an item listed twice), so the result keeps
    # n_items entries.
    text = text.unique(subset="item", keep="first", maintain_order=True)
    out = base.join(text, on="item", how="left", maintain_order="left")
    return out["text"].fill_null("").to_list()


def _is_id(name: str) -> bool:
    low = name.lower()
    return low in ("item", "id", "asin", "user", "itemid", "userid") or low.endswith("_id")


def _non_empty(items: pl.DataFrame, name: str, template: ItemTextTemplate) -> int:
    """Rows of ``items`` whose ``name`` renders to non-empty text."""
    expr = _field_expr(name, items.schema[name], template.model_copy(update={"labels": False}))
    if expr is None:
        return 0
    return int(items.select(expr.is_not_null().sum()).item())


def resolve_fields(items: pl.DataFrame, template: ItemTextTemplate) -> list[str]:
    """The columns ``template`` renders on ``items`` (see the module docstring)."""
    usable = [c for c in items.columns if c != "item"
              and _field_expr(c, items.schema[c], template) is not None]
    if template.fields is not None:
        return [f for f in template.fields if f in usable]
    filled = {c for c in usable if _non_empty(items, c, template)}
    chosen = [f for f in DEFAULT_FIELDS if f in filled]
    if any(f in filled for f in _DESCRIPTIVE):
        return chosen
    text_like = [c for c in usable if c in filled and not _is_id(c) and c not in chosen
                 and (items.schema[c] == pl.String or isinstance(items.schema[c], pl.List))]
    return text_like + chosen


@dataclass(frozen=True)
class TextCoverage:
    """How much text a template gets out of an item table.

    Attributes:
        fields: The fields rendered (after adapting a default template).
        auto: The template had no explicit fields and adapted to the table.
        requested: The template's explicit fields (None when ``auto``).
        columns: The item feature columns available.
        per_field: Field -> items with a non-empty value, for every available column.
        with_text: Items whose rendered text is non-empty.
        n_items: Catalogue size.
    """

    fields: list[str]
    auto: bool
    requested: list[str] | None
    columns: list[str]
    per_field: dict[str, int]
    with_text: int
    n_items: int

    @property
    def share(self) -> float:
        """Share of the catalogue with non-empty text."""
        return self.with_text / self.n_items if self.n_items else 0.0

    def describe(self) -> str:
        """One line: fields used and coverage, e.g. ``fields title, genres (default
        template): 1,682 of 1,682 items (100.0%) have text``."""
        how = "default template" if self.auto else "template"
        used = ", ".join(f"{f} ({self.per_field.get(f, 0):,})" for f in self.fields) or "none"
        return (f"fields {used} ({how}): {self.with_text:,} of {self.n_items:,} items "
                f"({self.share:.1%}) have text")


def text_coverage(items: pl.DataFrame, n_items: int,
                  template: ItemTextTemplate | None = None) -> TextCoverage:
    """Which fields ``template`` renders on ``items`` and how many items get text.

    Args:
        items: Item features with a dense ``item`` column (``Dataset.items``); may be empty.
        n_items: Catalogue size.
        template: Rendering settings; defaults to :class:`ItemTextTemplate`.
    """
    template = template or ItemTextTemplate()
    columns = [c for c in items.columns if c != "item"] if "item" in items.columns else []
    per_field = {c: _non_empty(items, c, template) for c in columns
                 if _field_expr(c, items.schema[c], template) is not None}
    fields = resolve_fields(items, template) if columns else []
    texts = render_item_texts(items, n_items, template)
    return TextCoverage(fields, template.fields is None, template.fields, columns, per_field,
                        sum(1 for t in texts if t), n_items)
