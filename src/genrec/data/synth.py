"""A seeded synthetic dataset at any scale: Zipf-like popularity, sessions with sequential
structure, and item text, written in the formats :class:`~genrec.data.sources.DataConfig`
already reads.

The model behind the rows:

* **Items** are grouped into categories; each category is named ``<department> <noun>``, and
  neighbouring categories share a department (so "related" means something in the text too).
  Item popularity is Zipf-like: the item of popularity rank ``r`` has weight ``r^-item_alpha``
  (ranks are shuffled, so ids say nothing about popularity).
* **Users** have Zipf-like activity: user ``u`` of activity rank ``r`` gets ``min_user_len``
  rows plus a share ``r^-user_alpha`` of the rest.
* **Sequences** are split into sessions. A session starts from a globally popular item; each
  next step stays in the current category (``p_stay``), moves to a neighbouring category
  (``p_related``), or jumps to a globally popular item again (the rest). Within a category
  items are drawn by popularity, so a sequential model has real signal to find.
* **Timestamps** grow within each user: seconds between clicks in a session, days between
  sessions.

Everything is vectorised numpy over chunks of whole users (``chunk_rows`` rows at a time), so
memory stays bounded at any size; chunk ``k`` draws from its own stream derived from ``seed``,
so the same config writes byte-identical files.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec._io import atomic_write, atomic_write_text

__all__ = ["SynthConfig", "SynthResult", "dataset_config", "generate", "zipf_slope"]

_log = logging.getLogger(__name__)

_DEPARTMENTS = (
    "Kitchen", "Garden", "Beauty", "Sports", "Toys", "Office", "Automotive", "Pet", "Baby",
    "Outdoor", "Music", "Books", "Tools", "Home", "Health", "Grocery", "Fashion", "Shoes",
    "Jewelry", "Camera", "Phone", "Computer", "Audio", "Gaming",
)
_NOUNS = (
    "Blender", "Kettle", "Lamp", "Chair", "Desk", "Mug", "Brush", "Cream", "Serum", "Shampoo",
    "Racket", "Ball", "Helmet", "Glove", "Puzzle", "Doll", "Notebook", "Pen", "Stapler",
    "Charger", "Cable", "Speaker", "Headphones", "Keyboard", "Mouse", "Monitor", "Tent",
    "Backpack", "Bottle", "Jacket", "Sneaker", "Boot", "Watch", "Ring", "Necklace", "Lens",
    "Tripod", "Case", "Stand", "Drill", "Saw", "Hammer", "Wrench", "Pillow", "Blanket",
    "Towel", "Candle", "Vase", "Planter", "Hose", "Shovel", "Collar", "Leash", "Bowl", "Toy",
    "Stroller", "Bib", "Guitar", "Drum", "Novel", "Cookbook", "Vitamin", "Tea", "Coffee",
    "Snack", "Sauce", "Scarf", "Hat", "Belt", "Wallet", "Sunglasses", "Controller", "Router",
    "Printer", "Tablet", "Battery", "Filter", "Mat", "Rack", "Clock",
)
_ADJECTIVES = (
    "Classic", "Deluxe", "Compact", "Portable", "Premium", "Eco", "Ultra", "Mini", "Pro",
    "Smart", "Vintage", "Modern", "Soft", "Heavy-Duty", "Lightweight", "Organic", "Wireless",
    "Foldable", "Waterproof", "Ergonomic", "Essential", "Travel", "Family", "Studio",
)
_BRAND_HEADS = ("Acme", "Nova", "Zen", "Blue", "Iron", "Sun", "Pixel", "Maple", "Terra", "Luna",
                "Apex", "Echo", "Vita", "Orbit", "Cedar", "Polar")
_BRAND_TAILS = ("works", "craft", "line", "labs", "home", "gear", "co", "ware", "ly", "io",
                "max", "tek")
_BRANDS_PER_CATEGORY = 8
#: 2020-01-01 00:00:00 UTC: the earliest user start.
_EPOCH = 1_577_836_800
_DAY = 86_400
#: Item ids start here, user ids at 1: the two never look alike in a printed table.
_ITEM_ID_BASE = 100_000_000


class SynthConfig(BaseModel):
    """What :func:`generate` makes: sizes, the shape of the distributions, and the seed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_interactions: int = Field(1_000_000, ge=1)
    """Rows of the interaction file (exactly)."""
    n_items: int = Field(10_000, ge=2)
    """Items in the catalogue (the metadata file has exactly this many rows; the rarest may
    never be interacted with, as in real data)."""
    n_users: int | None = Field(None, ge=1)
    """Users (exactly); default: ``n_interactions // 25`` (at least 1)."""
    n_categories: int | None = Field(None, ge=1)
    """Item categories; default: ``n_items // 100`` clamped to 10..1,000 (and to n_items)."""
    item_alpha: float = Field(1.0, ge=0.0)
    """Zipf exponent of item popularity (weight of rank r is r^-item_alpha; 0 = uniform)."""
    user_alpha: float = Field(0.7, ge=0.0)
    """Zipf exponent of user activity beyond ``min_user_len``."""
    min_user_len: int = Field(5, ge=1)
    """Rows every user has at least (so a 5-core filter keeps every user)."""
    p_stay: float = Field(0.6, ge=0.0, le=1.0)
    """Within a session, probability that the next item is from the current category."""
    p_related: float = Field(0.25, ge=0.0, le=1.0)
    """Within a session, probability of moving to a neighbouring category (the rest:
    ``1 - p_stay - p_related``, a jump to a globally popular item)."""
    session_len: float = Field(8.0, ge=1.0)
    """Mean session length in rows (geometric)."""
    click_gap_s: float = Field(90.0, gt=0.0)
    """Mean seconds between two rows of a session (exponential)."""
    session_gap_days: float = Field(3.0, gt=0.0)
    """Mean days between two sessions of a user (exponential)."""
    seed: int = Field(0, ge=0)
    """Same seed and config, identical files."""
    chunk_rows: int = Field(2_000_000, ge=1_000)
    """Rows generated at a time (whole users per chunk): bounds memory. Part of the seed:
    another ``chunk_rows`` draws other (equally distributed) rows."""
    items_format: Literal["parquet", "jsonl"] = "parquet"
    """Format of the item metadata file."""

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.p_stay + self.p_related > 1.0:
            raise ValueError("p_stay + p_related must be at most 1")
        if self.users * self.min_user_len > self.n_interactions:
            raise ValueError(f"{self.users} users x min_user_len {self.min_user_len} rows is "
                             f"more than n_interactions={self.n_interactions}")
        return self

    @property
    def users(self) -> int:
        """The number of users, the default resolved."""
        return self.n_users or max(1, self.n_interactions // 25)

    @property
    def categories(self) -> int:
        """The number of categories, the default resolved."""
        c = self.n_categories or min(1_000, max(10, self.n_items // 100))
        return min(c, self.n_items, len(_DEPARTMENTS) * len(_NOUNS))


class SynthResult(BaseModel):
    """What :func:`generate` wrote and how long it took."""

    interactions: str
    items: str
    config: str
    n_interactions: int
    n_users: int
    n_items: int
    n_categories: int
    seconds: float


class _Catalogue:
    """Items sorted by category: position ``p`` holds category ``cat[p]``; ``cum`` is the
    cumulative popularity, so a draw within category ``c`` is a searchsorted in its range."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        n, c = cfg.n_items, cfg.categories
        # Every category gets one item, the rest fall by a skewed draw (some categories big).
        sizes = 1 + rng.multinomial(n - c, rng.dirichlet(np.full(c, 2.0)))
        self.cat = np.repeat(np.arange(c), sizes)                              # (n,)
        rank = rng.permutation(n) + 1
        weight = rank.astype(np.float64) ** -cfg.item_alpha
        self.cum = np.cumsum(weight)
        self.total = self.cum[-1]
        ends = np.cumsum(sizes)
        self.cat_lo = np.concatenate([[0.0], self.cum[ends[:-1] - 1]])         # (c,)
        self.cat_mass = self.cum[ends - 1] - self.cat_lo
        self.n_categories = c
        # Ids are a shuffle of positions: neither popularity nor category shows in an id.
        self.ids = _ITEM_ID_BASE + rng.permutation(n).astype(np.int64)

    def popular(self, u: np.ndarray) -> np.ndarray:
        """Positions drawn by global popularity, one per uniform in ``u``."""
        return np.minimum(np.searchsorted(self.cum, u * self.total, side="right"),
                          len(self.cum) - 1)

    def within(self, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Positions drawn by popularity inside categories ``cat``."""
        target = self.cat_lo[cat] + u * self.cat_mass[cat]
        return np.minimum(np.searchsorted(self.cum, target, side="right"), len(self.cum) - 1)


def _user_lengths(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Rows per user, Zipf-like, summing exactly to ``n_interactions``."""
    n_users = cfg.users
    extra = cfg.n_interactions - n_users * cfg.min_user_len
    w = (rng.permutation(n_users) + 1).astype(np.float64) ** -cfg.user_alpha
    share = w / w.sum() * extra
    lengths = np.floor(share).astype(np.int64)
    # The rows lost to flooring go to the largest remainders, so the total is exact.
    short = extra - int(lengths.sum())
    if short:
        lengths[np.argsort(lengths - share, kind="stable")[:short]] += 1
    return lengths + cfg.min_user_len


def _chunk(cfg: SynthConfig, cat: _Catalogue, user_ids: np.ndarray, lengths: np.ndarray,
           rng: np.random.Generator) -> pa.Table:
    """The rows of users ``user_ids`` (``lengths`` rows each), all drawn at once."""
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    user_start = np.zeros(n, dtype=bool)
    user_start[starts] = True
    session_start = user_start | (rng.random(n) < 1.0 / cfg.session_len)
    mode = rng.random(n)
    jump = session_start | (mode >= cfg.p_stay + cfg.p_related)
    related = ~jump & (mode >= cfg.p_stay)
    # Category walk: absolute at a jump, then +-1 steps at each "related" row until the next.
    step = np.where(related, np.where(rng.random(n) < 0.5, -1, 1), 0).astype(np.int64)
    walk = np.cumsum(step)
    jump_at = np.flatnonzero(jump)
    seg = np.cumsum(jump) - 1                                                   # (n,)
    jump_pos = cat.popular(rng.random(jump_at.size))
    category = (cat.cat[jump_pos][seg] + walk - walk[jump_at][seg]) % cat.n_categories
    pos = cat.within(category, rng.random(n))
    pos[jump_at] = jump_pos
    # Time: a user's first row at a uniform start in two years, then gaps that add up.
    gap = np.where(session_start,
                   rng.exponential(cfg.session_gap_days * _DAY, n),
                   rng.exponential(cfg.click_gap_s, n)).astype(np.int64) + 1
    gap[starts] = rng.integers(0, 2 * 365 * _DAY, starts.size)
    ts = np.cumsum(gap)
    ts -= np.repeat(ts[starts] - gap[starts], lengths)
    return pa.table({"user": np.repeat(user_ids, lengths),
                     "item": cat.ids[pos],
                     "timestamp": ts + _EPOCH})


def _item_table(cfg: SynthConfig, cat: _Catalogue, rng: np.random.Generator) -> pl.DataFrame:
    """Item metadata: title, brand, categories and price, built from word lists by index."""
    n = cfg.n_items
    c = cat.cat
    n_nouns = len(_NOUNS)
    # Departments in contiguous blocks of categories: neighbours (the "related" moves) share
    # one; within a block of at most len(_NOUNS) categories the nouns differ, so names are unique.
    dept = pl.Series(_DEPARTMENTS)[c * len(_DEPARTMENTS) // cat.n_categories]
    noun = pl.Series(_NOUNS)[c % n_nouns]
    brand_no = c * _BRANDS_PER_CATEGORY + rng.integers(0, _BRANDS_PER_CATEGORY, n)
    head = pl.Series(_BRAND_HEADS)[brand_no % len(_BRAND_HEADS)]
    tail = pl.Series(_BRAND_TAILS)[brand_no // len(_BRAND_HEADS) % len(_BRAND_TAILS)]
    adj = pl.Series(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), n)]
    model_no = pl.Series(rng.integers(100, 1000, n))
    # Price: lognormal around a per-category level, so price says something about category.
    level = rng.normal(3.0, 0.8, cat.n_categories)
    price = np.round(np.exp(level[c] + rng.normal(0.0, 0.4, n)), 2)
    frame = pl.DataFrame({"item": cat.ids, "dept": dept, "noun": noun, "head": head,
                          "tail": tail, "adj": adj, "model_no": model_no, "price": price})
    return frame.select(
        "item",
        pl.concat_str([pl.col("head") + pl.col("tail"), pl.col("adj"), pl.col("noun"),
                       pl.col("model_no").cast(pl.String)], separator=" ").alias("title"),
        (pl.col("head") + pl.col("tail")).alias("brand"),
        pl.concat_list([pl.col("dept"), pl.col("dept") + " " + pl.col("noun")])
        .alias("categories"),
        "price",
    ).sort("item")


def dataset_config(out: Path, cfg: SynthConfig) -> dict[str, object]:
    """The ``dataset:`` section that reads what :func:`generate` wrote to ``out`` (absolute
    paths: config paths are read relative to the working directory, not the config file)."""
    out = out.resolve()
    return {"name": f"synth-{cfg.n_interactions}",
            "path": str(out / "interactions.parquet"), "format": "parquet",
            "columns": {"user": "user", "item": "item", "timestamp": "timestamp"},
            "items": {"path": str(out / f"items.{cfg.items_format}"), "id": "item"}}


def generate(cfg: SynthConfig, out: Path) -> SynthResult:
    """Write ``interactions.parquet`` (user, item, timestamp), ``items.parquet`` (or
    ``.jsonl``: item, title, brand, categories, price) and ``dataset.yaml`` (the ``dataset:``
    section that reads them) to ``out``.

    Args:
        cfg: Sizes, distributions and seed.
        out: Folder to write to (created).

    Returns:
        The paths written, the resolved counts and the seconds taken.
    """
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(cfg.seed)
    base_seed, chunk_seed = seeds.spawn(2)
    rng = np.random.default_rng(base_seed)
    cat = _Catalogue(cfg, rng)
    lengths = _user_lengths(cfg, rng)
    user_ids = np.arange(1, lengths.size + 1, dtype=np.int64)
    # Whole users per chunk: cut where the running row count passes a multiple of chunk_rows.
    ends = np.cumsum(lengths)
    cuts = np.unique(np.searchsorted(ends, np.arange(cfg.chunk_rows, ends[-1], cfg.chunk_rows),
                                     side="left") + 1)
    bounds = np.concatenate([[0], cuts[cuts < lengths.size], [lengths.size]])
    n_chunks = bounds.size - 1
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64())])

    def write_interactions(path: Path) -> None:
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for k, chunk_rng in enumerate(np.random.default_rng(s)
                                          for s in chunk_seed.spawn(n_chunks)):
                lo, hi = bounds[k], bounds[k + 1]
                writer.write_table(_chunk(cfg, cat, user_ids[lo:hi], lengths[lo:hi],
                                          chunk_rng))
                _log.info("synth: chunk %d/%d (%d rows)", k + 1, n_chunks,
                          int(lengths[lo:hi].sum()))

    inter_path = out / "interactions.parquet"
    atomic_write(inter_path, write_interactions)
    items = _item_table(cfg, cat, rng)
    items_path = out / f"items.{cfg.items_format}"
    if cfg.items_format == "parquet":
        atomic_write(items_path, lambda p: items.write_parquet(p, compression="zstd"))
    else:
        atomic_write(items_path, lambda p: items.write_ndjson(p))
    config_path = out / "dataset.yaml"
    atomic_write_text(config_path, yaml.safe_dump({"dataset": dataset_config(out, cfg)},
                                                  sort_keys=False))
    seconds = time.perf_counter() - t0
    _log.info("synth: %d rows, %d users, %d items in %.1f s", cfg.n_interactions,
              lengths.size, cfg.n_items, seconds)
    return SynthResult(interactions=str(inter_path), items=str(items_path),
                       config=str(config_path), n_interactions=int(ends[-1]),
                       n_users=int(lengths.size), n_items=cfg.n_items,
                       n_categories=cat.n_categories, seconds=round(seconds, 3))


def zipf_slope(counts: np.ndarray) -> float:
    """The least-squares slope of log(count) against log(rank) over the nonzero counts: about
    ``-item_alpha`` for a Zipf-like popularity (used by the tests and the benchmark)."""
    c = np.sort(counts[counts > 0])[::-1].astype(np.float64)
    if c.size < 2:
        return math.nan
    rank = np.arange(1, c.size + 1, dtype=np.float64)
    return float(np.polyfit(np.log(rank), np.log(c), 1)[0])
