"""Where a dataset comes from: a named recipe, or one's own files, declared by config alone.

:class:`DataConfig` is the ``dataset:`` section of every experiment config. Without ``path``
it names a recipe (``ml-100k``, ``amazon-beauty``, ...). With ``path`` it reads one's own
interactions (CSV, TSV, Parquet, JSON lines, ``user item item ...`` sequence files, RecBole,
P5, GroupLens layouts) through a column mapping, and ``items`` / ``users`` attach metadata
files (CSV, TSV, Parquet, JSON lines) keyed by a declared id column (``asin``,
``p5_item_id``, ...). Both kinds of dataset accept ``items``/``users`` (they replace the
recipe's own tables).

:func:`load_data` reads, attaches and preprocesses; every step's counts (rows kept, dropped by
reason, items with metadata, duplicate ids, time-order problems) go to ``Dataset.log``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec.data import readers
from genrec.data._parsing import (
    _KNOWN_TYPES,
    _RENAMES,
    ITEM_KEYS,
    DataError,
    ReadReport,
    read_jsonl_items,
    read_text,
    require_file,
)
from genrec.data.distributed import load_distributed
from genrec.data.interactions import Dataset
from genrec.data.preprocess import PreprocessConfig, preprocess
from genrec.data.recipes import RECIPES, load_dataset
from genrec.data.sharded import is_pattern, read_sharded

__all__ = ["DataConfig", "FeatureSource", "attach_features", "infer_format", "load_data",
           "load_raw", "read_features"]

_log = logging.getLogger(__name__)

TableFormat = Literal["csv", "tsv", "parquet", "jsonl"]
InteractionFormat = Literal["csv", "tsv", "parquet", "jsonl", "sequences", "recbole", "p5",
                            "ml-100k", "ml-1m"]

_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
                             ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
                             ".json": "jsonl", ".txt": "sequences", ".inter": "recbole"}
#: Id columns looked for in a user feature file that declares none.
USER_KEYS = ("user", "user_id", "reviewerID", "id")


def infer_format(path: str | Path) -> str:
    """The format of ``path`` from its extension (``.gz`` is looked through).

    Raises:
        ValueError: If the extension says nothing.
    """
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix == ".gz" else p.suffix
    fmt = _SUFFIXES.get(suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the format from the name; set its format "
                         f"(one of {sorted(set(_SUFFIXES.values()))}, or recbole, p5, ml-100k, "
                         "ml-1m for those layouts)")
    return fmt


def _stem(path: str) -> str:
    if is_pattern(path):  # parts/*.parquet: the folder names the table
        return Path(path).parent.name or "data"
    p = Path(path)
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    return Path(name).stem if "." in name else name


class FeatureSource(BaseModel):
    """A metadata file for items (``dataset.items``) or users (``dataset.users``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str
    """The file: CSV, TSV, Parquet or JSON lines (one object per item)."""
    id: str | None = None
    """The column holding the ids that the interactions use (``asin``, ``item_id``,
    ``p5_item_id``, ...); default: the first of item, asin, business_id, item_id (users: user,
    user_id, reviewerID, id) that the file has."""
    format: TableFormat | None = None
    """File format; default: from the extension."""
    sep: str | None = None
    """csv/tsv: field separator (default ``,`` / tab)."""
    columns: dict[str, str] | None = None
    """Renames, genrec feature name -> file column (``{title: product_name}``), so that text
    templates find the conventional names (title, brand, categories, genres, year, price)."""
    list_sep: str = "|"
    """csv/tsv: separator inside list fields (``categories``, ``genres``): ``Drama|Comedy``."""

    @model_validator(mode="after")
    def _format(self) -> FeatureSource:
        if self.format is None:
            fmt = infer_format(self.path)
            if fmt not in ("csv", "tsv", "parquet", "jsonl"):
                raise ValueError(f"{self.path}: metadata must be csv, tsv, parquet or jsonl; "
                                 "set its format")
            self.format = fmt  # type: ignore[assignment]
        return self


class DataConfig(BaseModel):
    """Which data to load (a recipe, or one's own files) and how to preprocess it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None
    """A recipe name (ml-100k, ml-1m, amazon-beauty, amazon-sports, yelp, lastfm); with
    ``path``, the name results are labelled with (default: the file name without extension).
    Without both, ``ml-100k``."""
    path: str | None = None
    """One's own interactions: a file (or a folder for recbole / p5 / ml-100k / ml-1m), or a
    glob pattern of csv/tsv/parquet files read as one table in name order
    (``parts/*.parquet``)."""
    format: InteractionFormat | None = None
    """Format of ``path``; default: from the extension (.csv, .tsv, .parquet, .jsonl,
    .txt = ``user item item ...`` sequences, .inter = RecBole)."""
    columns: dict[str, str] | None = None
    """csv/tsv/parquet/jsonl: genrec column (user, item, timestamp, rating, event) -> file
    column. Every column named is required; by default user and item are, and timestamp and
    rating are used when the file has them. Without a timestamp, file order is time order."""
    sep: str | None = None
    """csv/tsv: field separator (default ``,`` / tab)."""
    keep_events: list[str] | None = None
    """With an ``event`` column: keep only these event types (the others are counted as
    dropped), e.g. ``[purchase, add_to_cart]``."""
    items: FeatureSource | None = None
    """Item metadata to attach (also on a recipe: it replaces the recipe's item table)."""
    users: FeatureSource | None = None
    """User metadata to attach."""
    data_dir: str | None = None
    """Where recipes look for files; defaults to $GENREC_DATA_DIR, then the cache folder."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """Preprocessing steps applied after loading."""
    engine: Literal["local", "ray"] = "local"
    """Where reading and preprocessing run. local: this process; ray: the shards of ``path``
    (its files and Parquet row groups) on a Ray cluster (csv, tsv, parquet; ``pip install
    'genrec[scale]'``), with the same result."""
    workers: int | None = Field(None, ge=1)
    """engine ray: Ray workers (None: the cluster's CPUs; a local cluster of that many CPUs is
    started unless this process already joined one)."""

    @model_validator(mode="after")
    def _resolve(self) -> DataConfig:
        if self.path is None:
            misplaced = [k for k in ("format", "columns", "sep", "keep_events")
                         if getattr(self, k) is not None]
            if misplaced:
                raise ValueError(f"dataset.{misplaced[0]} applies to one's own file: set "
                                 "dataset.path too")
            if self.engine != "local":
                raise ValueError("dataset.engine ray reads one's own files: set dataset.path")
            self.name = self.name or "ml-100k"
            return self
        if self.format is None:
            self.format = infer_format(self.path)  # type: ignore[assignment]
        sharded = self.engine == "ray" or is_pattern(self.path)
        if sharded and self.format not in ("csv", "tsv", "parquet"):
            raise ValueError(f"dataset.engine ray and path patterns take csv, tsv or parquet "
                             f"files, not {self.format}")
        if self.columns is not None and self.format not in ("csv", "tsv", "parquet", "jsonl"):
            raise ValueError(f"dataset.columns applies to csv, tsv, parquet and jsonl files, "
                             f"not {self.format}")
        # A custom file is labelled after itself, never after a recipe it is not.
        if self.name in RECIPES and self.format != self.name:
            raise ValueError(f"dataset.name {self.name!r} is a built-in recipe, and "
                             f"dataset.path {self.path!r} is a {self.format} file of one's own: "
                             "give it another name, or leave the name out (the file's stem)")
        self.name = self.name or _stem(self.path)
        return self


# ---------------------------------------------------------------------------------------------
# Feature tables


def _to_json_text(series: pl.Series) -> pl.Series:
    return pl.Series(series.name, [None if v is None else json.dumps(v, default=str,
                                                                      ensure_ascii=False)
                                   for v in series.to_list()], dtype=pl.String)


def _normalize(frame: pl.DataFrame, key: str, id_name: str, list_sep: str) -> pl.DataFrame:
    """Conventional names and types (see :mod:`genrec.data.readers`) for a table's columns;
    nested values other than lists of names become JSON text."""
    frame = frame.rename({k: v for k, v in _RENAMES.items()
                          if k in frame.columns and v not in frame.columns and k != key})
    cols = [pl.col(key).cast(pl.String).str.strip_chars().alias(id_name)]
    for name, dtype in frame.schema.items():
        if name in (key, id_name, "lineno"):
            continue
        kind, c = _KNOWN_TYPES.get(name), pl.col(name)
        if isinstance(kind, pl.List):
            if dtype == pl.String:
                c = c.str.split(list_sep)
            elif not (isinstance(dtype, pl.List) and dtype.inner == pl.String):
                frame = frame.with_columns(_to_json_text(frame[name]))
                c = pl.concat_list(pl.col(name))
            c = c.list.eval(pl.element().str.strip_chars().filter(
                pl.element().str.len_bytes() > 0)).fill_null([])
        elif kind == pl.Float64():
            c = (c.cast(pl.String).str.strip_chars().str.strip_chars_start("$")
                 .str.replace_all(",", "").cast(pl.Float64, strict=False)
                 if dtype == pl.String else c.cast(pl.Float64, strict=False))
        elif kind == pl.Int64():
            c = c.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
        elif kind == pl.String():
            c = c.cast(pl.String) if not dtype.is_nested() else c
        if dtype.is_nested() and not isinstance(kind, pl.List) and not (
                isinstance(dtype, pl.List) and dtype.inner == pl.String):
            frame = frame.with_columns(_to_json_text(frame[name]))
            c = pl.col(name)
        cols.append(c.alias(name))
    return frame.select(cols)


def read_features(source: FeatureSource, kind: Literal["item", "user"] = "item"
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read an item or user metadata file keyed by its declared id column.

    Rows with a missing or blank id (or, in JSON lines, invalid or too deeply nested JSON)
    are dropped and counted; repeated ids keep their first row and are counted.

    Returns:
        The table (id column ``kind`` first, raw ids) and its ``dataset.log`` entry.

    Raises:
        DataError: If the file is missing or unreadable, or lacks the id column.
    """
    path = require_file(source.path, f"{kind} metadata file")
    keys = (source.id,) if source.id else (ITEM_KEYS + ("p5_item_id", "id")
                                           if kind == "item" else USER_KEYS)
    report = ReadReport(path)
    if source.format == "jsonl":
        frame, entry = read_jsonl_items(path, keys=keys, id_name=kind)
        if frame.height == 0:
            raise DataError(path, f"no record has the id field {' or '.join(keys)}")
        frame = frame.rename({v: k for k, v in (source.columns or {}).items()
                              if v in frame.columns and k not in frame.columns})
    else:
        if source.format == "parquet":
            try:
                raw = pl.read_parquet(path)
            except (pl.exceptions.PolarsError, OSError) as e:
                raise DataError(path, f"not a readable Parquet file ({e})") from e
        else:
            sep = source.sep or ("\t" if source.format == "tsv" else ",")
            try:
                raw = pl.read_csv(read_text(path).encode("utf-8"), separator=sep,
                                  infer_schema=False)
            except pl.exceptions.PolarsError as e:
                raise DataError(path, f"not a readable {source.format} table ({e})") from e
        raw = raw.rename({v: k for k, v in (source.columns or {}).items()
                          if v in raw.columns and k not in raw.columns})
        key = next((k for k in keys if k in raw.columns), None)
        if key is None:
            raise DataError(path, f"no id column {' or '.join(keys)}; the file has "
                                  f"{raw.columns} (declare it with id: <column>)")
        if raw[key].dtype.is_nested():
            raise DataError(path, f"id column {key!r} holds {raw[key].dtype} values, not ids")
        frame = _normalize(raw.with_row_index("lineno", offset=2), key, kind, source.list_sep)
        frame = report.drop(frame, pl.col(kind).is_null(), f"missing {kind} id")
        frame = report.drop(frame, pl.col(kind).str.len_bytes() == 0, f"blank {kind} id")
        entry = report.finish(frame.height, "records")
    dups = frame.height - frame[kind].n_unique()
    if dups:
        _log.warning("%s: %d rows repeat an earlier %s id; the first row of each is kept",
                     path, dups, kind)
        frame = frame.unique(kind, keep="first", maintain_order=True)
    entry.update({"table": f"{kind}s", "id_column": keys[0] if source.id else "auto",
                  "duplicate_ids": dups})
    return frame, entry


def attach_features(ds: Dataset, table: pl.DataFrame, kind: Literal["item", "user"],
                    source: str) -> Dataset:
    """``ds`` with ``table`` (raw ids in column ``kind``) as its item or user features; the
    log says how many rows matched and how many ids have none."""
    id_map = ds.item_map if kind == "item" else ds.user_map
    n_ids = ds.n_items if kind == "item" else ds.n_users
    idx = id_map.to_index(table[kind].cast(pl.String))
    attached = (table.with_columns(pl.Series(kind, idx)).filter(pl.col(kind) >= 0)
                .unique(kind, keep="first", maintain_order=True).sort(kind))
    attached = attached.select([kind, *[c for c in attached.columns if c != kind]])
    entry = {"step": "attach", "table": f"{kind}s", "file": source, "rows": table.height,
             "attached": attached.height, "rows_unused": table.height - attached.height,
             f"{kind}s_without_features": n_ids - attached.height}
    if attached.height == 0:
        sample = ", ".join(repr(x) for x in table[kind].head(3).to_list())
        ids = ", ".join(repr(x) for x in id_map.raw.head(3).to_list())
        raise DataError(source, f"no {kind} id of this file occurs in the interactions (file "
                                f"ids look like {sample}; interaction ids like {ids}): is the "
                                f"id column right?")
    _log.info("%s: %d of %d %ss have features from %s", ds.name, attached.height, n_ids, kind,
              source)
    changes = {"items" if kind == "item" else "users": attached, "log": [*ds.log, entry]}
    return dataclasses.replace(ds, **changes)


# ---------------------------------------------------------------------------------------------
# Loading


def _read_interactions(cfg: DataConfig) -> Dataset:
    path, fmt = Path(cfg.path or ""), cfg.format
    kw: dict[str, Any] = {"name": cfg.name}
    if is_pattern(path):
        sep = cfg.sep or ("\t" if fmt == "tsv" else ",")
        return read_sharded(path, str(fmt), cfg.columns, sep=sep, keep_events=cfg.keep_events,
                            **kw)
    match fmt:
        case "csv" | "tsv":
            sep = cfg.sep or ("\t" if fmt == "tsv" else ",")
            return readers.read_csv(path, columns=cfg.columns, sep=sep,
                                    keep_events=cfg.keep_events, **kw)
        case "parquet":
            return readers.read_parquet(path, columns=cfg.columns,
                                        keep_events=cfg.keep_events, **kw)
        case "jsonl":
            return readers.read_jsonl(path, columns=cfg.columns, keep_events=cfg.keep_events,
                                      **kw)
        case "sequences":
            return readers.read_sequences(path, **kw)
        case "recbole":
            return readers.read_recbole_atomic(path, **kw)
        case "p5":
            return readers.read_p5(path, **kw)
        case "ml-100k":
            return readers.read_ml100k(path, **kw)
        case "ml-1m":
            return readers.read_ml1m(path, **kw)
    raise ValueError(f"unknown dataset.format {fmt!r}")


def _attach_all(cfg: DataConfig, ds: Dataset) -> Dataset:
    for kind, source in (("item", cfg.items), ("user", cfg.users)):
        if source is not None:
            table, entry = read_features(source, kind)  # type: ignore[arg-type]
            ds.log.append(entry)
            ds = attach_features(ds, table, kind, source.path)  # type: ignore[arg-type]
    return ds


def _load_entry(cfg: DataConfig) -> dict[str, Any]:
    return {"step": "load", "path": str(cfg.path), "format": cfg.format}


def load_raw(cfg: DataConfig) -> Dataset:
    """Read the recipe or one's own files and attach ``items`` / ``users``; no preprocessing
    (always in this process, whatever ``cfg.engine``)."""
    if cfg.path is None:
        ds = load_dataset(cfg.name or "ml-100k", data_dir=cfg.data_dir)
    else:
        ds = _read_interactions(cfg)
        ds.name = cfg.name or _stem(cfg.path)
        ds.log.insert(0, _load_entry(cfg))
    return _attach_all(cfg, ds)


def load_data(cfg: DataConfig) -> Dataset:
    """Load a recipe or one's own files, attach metadata, then preprocess as configured.

    Raises:
        DataError: If a file is missing, unusable, or its metadata matches no id.
        ValueError: For an inconsistent configuration.
    """
    if cfg.engine == "ray":
        assert cfg.path is not None and cfg.name is not None  # checked by DataConfig
        sep = cfg.sep or ("\t" if cfg.format == "tsv" else ",")
        return load_distributed(cfg.path, str(cfg.format), columns=cfg.columns, sep=sep,
                                keep_events=cfg.keep_events, name=cfg.name,
                                preprocess=cfg.preprocess, workers=cfg.workers,
                                log=[_load_entry(cfg)], attach=lambda ds: _attach_all(cfg, ds))
    return preprocess(load_raw(cfg), cfg.preprocess)
