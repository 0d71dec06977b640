"""Text coverage: the default template adapts to the fields that exist, and text-based models
refuse to start on items without enough text, naming the fix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from genrec.data import load_dataset
from genrec.models.sasrec import SASRec
from genrec.models.base import FitContext
from genrec.testing.fixtures import random_dataset
from genrec.text import (
    ItemTextConfig,
    ItemTextTemplate,
    TextCoverageError,
    check_text_coverage,
    render_item_texts,
    text_coverage,
)

ITEMS = pl.DataFrame({"item": [0, 1, 2], "title": ["Red shoe", None, "Tea"],
                      "brand": ["Acme", "Acme", None], "p5_item_id": [1, 2, 3]})


def test_default_template_uses_the_fields_that_exist() -> None:
    cov = text_coverage(ITEMS, 4)
    assert cov.auto and cov.fields == ["title", "brand"]
    assert cov.per_field == {"title": 2, "brand": 2, "p5_item_id": 3}
    assert (cov.with_text, cov.n_items) == (3, 4)
    assert "fields title (2), brand (2) (default template): 3 of 4 items" in cov.describe()


def test_attribute_only_metadata_gets_text_by_default(data_dir: Path) -> None:
    # Amazon Sports holds brand + category names only, as S3-Rec attributes.
    ds = load_dataset("amazon-sports", data_dir, download=False)
    cov = text_coverage(ds.items, ds.n_items)
    assert cov.fields == ["s3rec_attributes"]  # not asin / p5_item_id
    assert cov.share > 0.99
    first = render_item_texts(ds.items.head(1), 1)[0]
    assert first.startswith("S3rec attributes: ") and len(first) > 20


def test_missing_fields_and_missing_metadata_are_refused_with_the_fix() -> None:
    cfg = ItemTextConfig(template=ItemTextTemplate(fields=["colour"]), encoder="hashing:8")
    with pytest.raises(TextCoverageError, match=r"fields \['colour'\] are not among.*title \(2\)"):
        check_text_coverage(ITEMS, 3, cfg, who="sasrec (item_text=init)")
    with pytest.raises(TextCoverageError, match="no metadata.*dataset.items.path"):
        check_text_coverage(pl.DataFrame(), 3, cfg)
    low = ItemTextConfig(encoder="hashing:8", min_coverage=0.9)
    with pytest.raises(TextCoverageError, match="only fields .* below text.min_coverage=0.9"):
        check_text_coverage(ITEMS, 4, low)
    enough = low.model_copy(update={"min_coverage": 0.7})
    assert check_text_coverage(ITEMS, 4, enough).with_text == 3


def test_text_model_refuses_to_start_on_empty_metadata() -> None:
    ds = random_dataset(n_users=20, n_items=10, min_len=3, max_len=5, seed=0)
    model = SASRec(item_text="init", text={"encoder": "hashing:8"})
    with pytest.raises(TextCoverageError, match=r"sasrec \(item_text=init\) needs item text"):
        model.fit(ds.interactions, FitContext(items=pl.DataFrame()))
