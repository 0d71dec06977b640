"""Readers: one function per file format, each returning a :class:`Dataset`.

Every reader validates what it reads. Malformed rows (wrong field count, non-integer id or
time, missing or non-numeric rating, ...) are dropped and counted by reason; the counts go to
``dataset.log`` as ``{"step": "read", "file": ..., "kept": n, "dropped": m, "reason": {...}}``
and to ``logging``. A file that cannot be used at all (missing, empty, wrong encoding, missing
column, every row malformed) raises one :class:`DataError` naming the file and the problem.

Item features follow fixed names so that text templates work on any dataset: ``title`` (str),
``brand`` (str), ``categories`` (list[str]), ``price`` (float), ``genres`` (list[str]),
``year`` (int); other fields keep their names.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from genrec.data._amazon import read_amazon2014, read_amazon_meta_jsonl
from genrec.data._movielens import read_ml1m, read_ml100k
from genrec.data._parsing import (
    ITEM,
    RATING,
    TIME,
    USER,
    DataError,
    FeatureTable,
    PathLike,
    ReadReport,
    build_dataset,
    clean_interactions,
    lines_frame,
    read_jsonl_items,
    read_text,
    read_token_sequences,
    require_file,
    split_fields,
)
from genrec.data.interactions import Dataset

__all__ = [
    "DataError",
    "read_ml100k",
    "read_ml1m",
    "read_recbole_atomic",
    "read_p5",
    "read_yelp",
    "read_sequences",
    "read_amazon_meta_jsonl",
    "read_amazon2014",
    "read_csv",
    "read_jsonl",
    "read_parquet",
    "time_order_report",
]

_log = logging.getLogger(__name__)


def _item_table(path: PathLike | None, log: list[dict[str, Any]]) -> FeatureTable:
    """Read an optional JSON-lines item feature file and log it."""
    if path is None:
        return None
    frame, entry = read_jsonl_items(path)
    log.append(entry)
    return frame, str(path)


# ---------------------------------------------------------------------------------------------
# RecBole atomic files

_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_RECBOLE_INTER = {"user_id": USER, "item_id": ITEM, "rating": RATING, "timestamp": TIME}
# RecBole field names that have a genrec convention name.
_RECBOLE_RENAMES = {"movie_title": "title", "release_year": "year", "class": "genres",
                    "zip_code": "zip"}


def _recbole_table(path: Path, sep: str,
                   encoding: str) -> tuple[pl.DataFrame, dict[str, str], ReadReport]:
    """Rows of one atomic file as string columns, and the declared type of each field."""
    lines = lines_frame(read_text(path, encoding))
    types: dict[str, str] = {}
    for spec in lines["line"][0].split(sep):
        name, colon, kind = spec.strip().partition(":")
        if not colon or kind not in _RECBOLE_TYPES:
            raise DataError(path, f"header field {spec.strip()!r} is not 'name:type' with type "
                                  f"in {list(_RECBOLE_TYPES)} (is this a RecBole atomic file?)")
        if name in types:
            raise DataError(path, f"header names field {name!r} twice")
        types[name] = kind
    report = ReadReport(path)
    return split_fields(lines.slice(1), sep, list(types), report), types, report


def _recbole_features(path: Path, key: str, out_key: str, sep: str, seq_sep: str,
                      encoding: str, log: list[dict[str, Any]]) -> FeatureTable:
    frame, types, report = _recbole_table(path, sep, encoding)
    if key not in types:
        raise DataError(path, f"missing required column {key!r} (header has {list(types)})")
    exprs = [pl.col(key).alias(out_key)]
    for col, kind in types.items():
        if col == key:
            continue
        name = _RECBOLE_RENAMES.get(col, col)
        c = pl.col(col)
        if name == "title":
            expr = c  # a title is text even when RecBole declares it a token sequence
        elif name == "year":
            expr = c.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
        elif kind == "token_seq":
            expr = c.str.split(seq_sep).list.eval(
                pl.element().filter(pl.element().str.len_bytes() > 0))
        elif kind == "float":
            expr = c.cast(pl.Float64, strict=False)
        elif kind == "float_seq":
            expr = c.str.split(seq_sep).list.eval(
                pl.element().filter(pl.element().str.len_bytes() > 0)
                .cast(pl.Float64, strict=False))
        elif name in ("categories", "genres"):
            expr = pl.concat_list(c).list.drop_nulls()
        else:
            expr = c
        exprs.append(expr.alias(name))
    frame = frame.select("lineno", *exprs)
    frame = report.drop(frame, pl.col(out_key).is_null(), f"missing {out_key} id")
    log.append(report.finish(frame.height))
    return frame.drop("lineno"), str(path)


def _recbole_prefix(folder_or_prefix: PathLike) -> Path:
    p = Path(folder_or_prefix)
    if p.suffix in (".inter", ".item", ".user"):
        return p.with_suffix("")
    if p.is_dir():
        named = p / p.name
        if Path(f"{named}.inter").is_file():
            return named
        inters = sorted(p.glob("*.inter"))
        if len(inters) == 1:
            return inters[0].with_suffix("")
        if not inters:
            raise DataError(p, "no RecBole .inter file in this folder")
        raise DataError(p, f"several .inter files {[f.name for f in inters]}: pass one prefix")
    return p


def read_recbole_atomic(folder_or_prefix: PathLike, *, name: str | None = None,
                        encoding: str = "utf-8", sep: str = "\t",
                        seq_sep: str = " ") -> Dataset:
    """Read RecBole atomic files ``<name>.inter`` (+ optional ``.item``, ``.user``).

    Files are tab-separated with a ``field:type`` header (types ``token``, ``token_seq``,
    ``float``, ``float_seq``). ``user_id``, ``item_id``, ``rating`` and ``timestamp`` of the
    ``.inter`` file become the interaction columns. Fields of ``.item``/``.user`` become
    feature columns: ``token_seq`` is split on spaces into lists, ``float`` is Float64, and
    ``movie_title``/``release_year``/``class``/``zip_code`` become
    ``title`` (str)/``year`` (int)/``genres``/``zip``.

    Args:
        folder_or_prefix: A folder with one ``.inter`` file, a path prefix such as
            ``.../ml-100k/ml-100k``, or the ``.inter`` file itself.
        name: Dataset name (default: the file stem).
        encoding: Text encoding.
        sep: Field separator.
        seq_sep: Separator inside ``token_seq``/``float_seq`` fields.

    Returns:
        The dataset; ``order="timestamp"`` if the ``.inter`` file has a timestamp field.

    Raises:
        DataError: If the ``.inter`` file is missing, malformed, or lacks user_id/item_id.
    """
    prefix = _recbole_prefix(folder_or_prefix)
    inter_path = Path(f"{prefix}.inter")
    require_file(inter_path, "RecBole .inter file")
    frame, types, report = _recbole_table(inter_path, sep, encoding)
    missing = [c for c in ("user_id", "item_id") if c not in types]
    if missing:
        raise DataError(inter_path, f"missing required column(s) {missing} "
                                    f"(header has {list(types)})")
    frame = frame.select("lineno", *[pl.col(c).alias(_RECBOLE_INTER[c])
                                     for c in _RECBOLE_INTER if c in types])
    frame = clean_interactions(frame, report)
    log = [report.finish(frame.height)]
    tables: dict[str, FeatureTable] = {}
    for ext, key, out_key in ((".item", "item_id", ITEM), (".user", "user_id", USER)):
        path = Path(f"{prefix}{ext}")
        tables[ext] = (_recbole_features(path, key, out_key, sep, seq_sep, encoding, log)
                       if path.is_file() else None)
    order = "timestamp" if TIME in frame.columns else "position"
    return build_dataset(name or prefix.name, frame, log, items=tables[".item"],
                         users=tables[".user"], order=order)


# ---------------------------------------------------------------------------------------------
# Sequence files (S3-Rec, P5, GRAM)


def read_sequences(path: PathLike, *, integer_ids: bool = False,
                   item_meta: PathLike | None = None, name: str | None = None,
                   encoding: str = "utf-8") -> Dataset:
    """Read a ``user item_1 ... item_n`` file (one user per line, items oldest first).

    This is the layout of S3-Rec's ``LastFM.txt``/``Beauty.txt`` and of
    ``user_sequence_asin.txt``. There are no times: ``order="position"``.

    Args:
        path: The sequence file.
        integer_ids: Ids must be integers (malformed tokens are dropped and counted).
        item_meta: Optional JSON-lines item feature file keyed by the same raw ids (e.g.
            ``item_meta.jsonl`` keyed by ASIN), read with :func:`read_amazon_meta_jsonl`.
        name: Dataset name (default: the file stem).
        encoding: Text encoding.

    Returns:
        The dataset.

    Raises:
        DataError: If a file is missing, empty, undecodable or without a valid line.
    """
    path = Path(path)
    frame, report = read_token_sequences(path, encoding=encoding, integer_ids=integer_ids)
    log = [report.finish(frame.height, "interactions")]
    items = _item_table(item_meta, log)
    return build_dataset(name or path.stem, frame, log, items=items, order="position")


def _datamaps(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``id2user`` and ``id2item`` of a P5 ``datamaps.json`` (inverting ``user2id`` if needed)."""
    try:
        maps = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(maps, dict):
        raise DataError(path, "expected a JSON object with id2user and id2item")
    out = []
    for kind in ("user", "item"):
        if isinstance(maps.get(f"id2{kind}"), dict):
            out.append({str(k): str(v) for k, v in maps[f"id2{kind}"].items()})
        elif isinstance(maps.get(f"{kind}2id"), dict):
            out.append({str(v): str(k) for k, v in maps[f"{kind}2id"].items()})
        else:
            raise DataError(path, f"missing required key 'id2{kind}' (or '{kind}2id')")
    return out[0], out[1]


def read_p5(folder: PathLike, *, item_meta: PathLike | None = None, name: str | None = None,
            encoding: str = "utf-8") -> Dataset:
    """Read the P5 / S3-Rec layout: ``sequential_data.txt`` plus ``datamaps.json``.

    ``sequential_data.txt`` holds ``user item_1 ... item_n`` with integer ids, in time order.
    When ``datamaps.json`` is present its ``id2user``/``id2item`` turn the integers back into
    the original ids (reviewerIDs and ASINs for Amazon, Yelp user and business ids), so that
    metadata keyed by those ids can be attached; ids missing from the maps are dropped and
    counted. Without it the integer ids are kept.

    Args:
        folder: The folder with ``sequential_data.txt`` (or its parent, if the files are in a
            ``p5_format/`` sub-folder).
        item_meta: Optional JSON-lines item feature file keyed by the original ids.
        name: Dataset name (default: the folder name).
        encoding: Text encoding.

    Returns:
        The dataset, ``order="position"``.

    Raises:
        DataError: If a file is missing, empty, undecodable or without a valid line.
    """
    folder = Path(folder)
    if not (folder / "sequential_data.txt").is_file() and (
            folder / "p5_format" / "sequential_data.txt").is_file():
        folder = folder / "p5_format"
    frame, report = read_token_sequences(folder / "sequential_data.txt", encoding=encoding,
                                         integer_ids=True)
    datamaps = folder / "datamaps.json"
    if datamaps.is_file():
        id2user, id2item = _datamaps(datamaps)
        frame = frame.with_columns(pl.col(USER).replace_strict(id2user, default=None),
                                   pl.col(ITEM).replace_strict(id2item, default=None))
        frame = report.drop(frame, pl.col(USER).is_null(), "user id not in datamaps.json")
        frame = report.drop(frame, pl.col(ITEM).is_null(), "item id not in datamaps.json")
    else:
        _log.info("%s not found: keeping the integer ids", datamaps)
    log = [report.finish(frame.height, "interactions")]
    items = _item_table(item_meta, log)
    default = folder.parent.name if folder.name == "p5_format" else folder.name
    return build_dataset(name or default, frame, log, items=items, order="position")


def read_yelp(folder: PathLike, *, name: str = "yelp", encoding: str = "utf-8") -> Dataset:
    """Read the P5 Yelp layout.

    The files are ``sequential_data.txt``, ``datamaps.json`` and, when present,
    ``item_categories.jsonl`` (``business_id`` -> ``categories``).

    Args:
        folder: The folder with the files.
        name: Dataset name.
        encoding: Text encoding.

    Returns:
        The dataset (business ids as raw item ids, ``categories`` features).

    Raises:
        DataError: As :func:`read_p5`.
    """
    folder = Path(folder)
    categories = folder / "item_categories.jsonl"
    if not categories.is_file():
        _log.warning("%s not found: items have no categories", categories)
    return read_p5(folder, item_meta=categories if categories.is_file() else None, name=name,
                   encoding=encoding)


# ---------------------------------------------------------------------------------------------
# Generic tables

EVENT = "event"
_DEFAULT_COLUMNS = {USER: USER, ITEM: ITEM, TIME: TIME, RATING: RATING}
_MAPPABLE = (USER, ITEM, TIME, RATING, EVENT)


def _mapping(columns: Mapping[str, str] | None, available: list[str],
             path: Path) -> dict[str, str]:
    """Our column name -> file column name, checked against the file's columns."""
    if columns is None:
        mapping = {k: v for k, v in _DEFAULT_COLUMNS.items() if k in (USER, ITEM) or v in available}
    else:
        unknown = set(columns) - set(_MAPPABLE)
        if unknown:
            raise ValueError(f"columns keys must be among {list(_MAPPABLE)}, "
                             f"got {sorted(unknown)}")
        mapping = {USER: USER, ITEM: ITEM} | dict(columns)
    missing = [v for v in mapping.values() if v not in available]
    if missing:
        raise DataError(path, f"missing required column(s) {missing}; the file has {available}")
    return mapping


_QUOTE = '"'
_UNIT = "\x1f"  # ASCII unit separator: joins parsed fields on their way to polars


def _split_quoted(line: str, sep: str) -> tuple[list[str] | None, str | None]:
    """The fields of one line that holds a quote, or None and the reason it has none.

    A quote opened and not closed on the line gives ``unterminated quote``; other quoting
    slips (``"u1"x``) are read leniently, as the csv module does.
    """
    try:
        return next(csv.reader((line,), delimiter=sep, strict=True)), None
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            return None, "unterminated quote"
    try:
        return next(csv.reader((line,), delimiter=sep)), None
    except csv.Error:
        return None, "malformed quoting"


def _split_quoted_lines(lines: list[str], sep: str) -> list[tuple[list[str] | None, str | None]]:
    """:func:`_split_quoted` of each line; one csv pass when every line is one clean record."""
    reader = csv.reader(lines, delimiter=sep, strict=True)
    records: list[list[str]] = []
    try:
        for record in reader:
            if reader.line_num != len(records) + 1:  # a quote ran on into the next line
                break
            records.append(record)
    except csv.Error:
        pass
    if len(records) == len(lines):
        return [(record, None) for record in records]
    return [_split_quoted(line, sep) for line in lines]


def _csv_header(text: str, sep: str, path: Path) -> list[str]:
    """The column names of the first non-blank line, stripped of surrounding spaces.

    Raises:
        DataError: If the line cannot be parsed or names a column twice.
    """
    start = 0
    while True:  # read_text made sure that some line is not blank
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.strip() or end < 0:
            break
        start = end + 1
    line = line.rstrip("\r")
    fields, problem = _split_quoted(line, sep) if _QUOTE in line else (line.split(sep), None)
    if fields is None:
        raise DataError(path, f"cannot read the header line ({problem}): {line!r}")
    header = [f.strip() for f in fields]
    twice = list(dict.fromkeys(h for h in header if header.count(h) > 1))
    if twice:
        raise DataError(path, f"the header names column(s) {twice} more than once: {header}")
    return header


def _csv_lines(text: str, sep: str, header: list[str], report: ReadReport) -> pl.DataFrame:
    """Parse line by line: every physical line is one row, dropped and counted if malformed.

    Lines without quotes are split in one vectorised pass; lines with quotes go through the
    csv module, each on its own, so a stray quote costs its own line only (``unterminated
    quote``) instead of swallowing the lines after it. Lines with another number of fields
    than the header are dropped as ``wrong field count``.
    """
    lines = lines_frame(text).slice(1)
    quoted = pl.col("line").str.contains(_QUOTE, literal=True)
    frame = lines.filter(~quoted).select(
        "lineno", pl.col("line").str.split(sep).alias("_f"), pl.lit(None, pl.String).alias("_why"))
    with_quotes = lines.filter(quoted)
    if with_quotes.height:
        parsed = _split_quoted_lines(with_quotes["line"].to_list(), sep)
        if with_quotes["line"].str.contains(_UNIT, literal=True).any():
            fields = pl.Series("_f", [f for f, _ in parsed], pl.List(pl.String))
        else:  # polars builds a list column from Python lists 10x slower than this
            fields = pl.Series("_f", [None if f is None else _UNIT.join(f) for f, _ in parsed],
                               pl.String).str.split(_UNIT)
        frame = pl.concat([frame, pl.DataFrame(
            [with_quotes["lineno"], fields, pl.Series("_why", [w for _, w in parsed], pl.String)]
        )]).sort("lineno")
    for reason in ("unterminated quote", "malformed quoting"):
        frame = report.drop(frame, pl.col("_why").eq_missing(reason), reason)
    frame = report.drop(frame, pl.col("_f").list.len() != len(header), "wrong field count")
    lineno = ["lineno"] if "lineno" not in header else []
    fields = [pl.col("_f").list.get(i) for i in range(len(header))]
    return frame.select(*lineno, *[  # empty fields are null, as in the vectorised reader
        pl.when(f.str.len_bytes() > 0).then(f).alias(name) for f, name in zip(fields, header)])


def _drop_empty_rows(frame: pl.DataFrame, report: ReadReport) -> pl.DataFrame:
    """Drop (and count as ``empty row``) the rows whose fields are all empty or blank."""
    cols = [c for c in frame.columns if c != "lineno"]
    blank = [pl.col(c).is_null() | (pl.col(c).str.strip_chars().str.len_bytes() == 0)
             for c in cols]
    if not cols or not frame.select(blank[0].any()).item():  # cheap common case
        return frame
    return report.drop(frame, pl.all_horizontal(blank), "empty row")


def _csv_rows(text: str, sep: str, report: ReadReport) -> pl.DataFrame:
    """The rows of delimited text with a header line, as String columns (empty fields null).

    The header's names are stripped of spaces (``user, item`` names ``item``); a name given
    twice is an error. Every physical line is one row: a quoted field may hold the separator
    and doubled quotes, but not a line break. A line whose quote is not closed on it is
    dropped and counted as ``unterminated quote`` and reading goes on at the next line;
    lines with too few or too many fields are dropped as ``wrong field count``; lines whose
    fields are all empty (``,,``) as ``empty row``. Files without quotes whose lines all have
    the header's field count take polars' CSV reader (several times faster); the others are
    read line by line, with the same results.

    Raises:
        DataError: If the header cannot be read or names a column twice.
    """
    header = _csv_header(text, sep, report.path)
    if _QUOTE not in text:
        try:
            frame = pl.read_csv(io.BytesIO(text.encode("utf-8")), separator=sep,
                                infer_schema=False)
        except pl.exceptions.PolarsError:
            frame = None
        # polars refuses rows with too many fields but pads short rows with nulls: the
        # separator count proves there are none (no row above the count, so none below).
        if (frame is not None and frame.width == len(header)
                and text.count(sep) == (len(header) - 1) * (frame.height + 1)):
            frame.columns = header
            return _drop_empty_rows(frame, report)
    _log.info("%s: quotes or ragged rows, parsing line by line", report.path)
    return _drop_empty_rows(_csv_lines(text, sep, header, report), report)


def _keep_events(frame: pl.DataFrame, report: ReadReport,
                 keep: list[str] | None) -> pl.DataFrame:
    """Keep the rows whose ``event`` is one of ``keep`` (the others are counted by type)."""
    if EVENT not in frame.columns:
        if keep:
            raise ValueError("keep_events needs an event column: map one with "
                             "columns: {event: <file column>}")
        return frame
    frame = frame.with_columns(pl.col(EVENT).cast(pl.String).str.strip_chars())
    if not keep:
        return frame
    for kind in frame.filter(~pl.col(EVENT).is_in(keep).fill_null(False))[EVENT].unique(
            maintain_order=True).to_list():
        frame = report.drop(frame, pl.col(EVENT).eq_missing(kind), f"event {kind!r} not kept")
    return frame


def time_order_report(frame: pl.DataFrame) -> dict[str, Any] | None:
    """How the time column of raw rows (file order) behaves, before sorting.

    Returns:
        ``{"step": "time_order", "users_out_of_order": users whose rows are not in time
        order in the file (sorting fixes it), "tied_events": events sharing their user's
        timestamp with another event (their order is the file order), "negative_times": ...,
        "first": ..., "last": ...}``, or None without a time column.
    """
    if TIME not in frame.columns or frame.height == 0:
        return None
    # Sorts and shifted comparisons instead of windows over users: window expressions over
    # hundreds of thousands of users were 20x slower (8.5 s for 5M rows, superlinear).
    prev_same = pl.col(USER) == pl.col(USER).shift(1)
    by_user = frame.select(USER, TIME).sort(USER, maintain_order=True)  # file order per user
    out = by_user.filter(prev_same & (pl.col(TIME) < pl.col(TIME).shift(1)))[USER].n_unique()
    dup = (prev_same & pl.col(TIME).eq_missing(pl.col(TIME).shift(1))).fill_null(False)
    ties = frame.select(USER, TIME).sort(USER, TIME).select(
        (dup | dup.shift(-1).fill_null(False)).sum()).item()
    stats = frame.select(
        pl.lit(out).alias("out"), pl.lit(ties).alias("ties"),
        (pl.col(TIME) < 0).sum().alias("neg"), pl.col(TIME).min().alias("first"),
        pl.col(TIME).max().alias("last"))
    row = stats.row(0, named=True)
    return {"step": "time_order", "users_out_of_order": int(row["out"]),
            "tied_events": int(row["ties"]), "negative_times": int(row["neg"]),
            "first": int(row["first"]), "last": int(row["last"])}


def _finish_table(path: Path, frame: pl.DataFrame, mapping: dict[str, str],
                  report: ReadReport, name: str | None,
                  keep_events: list[str] | None = None) -> Dataset:
    lineno = ["lineno"] if "lineno" in frame.columns else []
    frame = frame.select(*lineno, *[pl.col(src).alias(dst) for dst, src in mapping.items()])
    frame = clean_interactions(frame, report)
    frame = _keep_events(frame, report, keep_events)
    log = [report.finish(frame.height)]
    if (order_entry := time_order_report(frame)) is not None:
        log.append(order_entry)
    order = "timestamp" if TIME in frame.columns else "position"
    return build_dataset(name or path.stem, frame, log, order=order)


def read_csv(path: PathLike, columns: Mapping[str, str] | None = None, *, sep: str = ",",
             encoding: str = "utf-8", name: str | None = None,
             keep_events: list[str] | None = None) -> Dataset:
    """Read a delimited file with a header row.

    Args:
        path: The file.
        columns: Our column -> the file's column, e.g. ``{"user": "uid", "item": "iid",
            "timestamp": "ts", "rating": "r"}``; every column named here is required. By
            default ``user`` and ``item`` are required and ``timestamp``/``rating`` are used
            when present. Without a timestamp the file order gives the order
            (``order="position"``). ``event`` names an event-type column (view, buy, ...)
            used by ``keep_events``. Timestamps may be integers or ISO-8601 text
            (``2021-01-02``, ``2021-01-02 10:00:00``, ``2021-01-02T10:00:00.5Z``,
            ``...+02:00``; no offset means UTC); other date forms such as ``01/02/2021`` are
            ambiguous and raise a DataError rather than being guessed. Values and header
            names are stripped of surrounding spaces.
        sep: Field separator (one character). Quoted fields may hold it; every physical
            line is one row (a quoted line break is not supported: a quote left open on its
            line drops that line as ``unterminated quote`` and reading goes on at the next).
        encoding: Text encoding.
        name: Dataset name (default: the file stem).
        keep_events: Keep only rows with these event types (others are counted as dropped).

    Returns:
        The dataset.

    Raises:
        DataError: If the file is missing, empty, undecodable, lacks a column, names a column
            twice, holds non-ISO dates, or every row is malformed.
    """
    path = Path(path)
    if len(sep) != 1:
        raise ValueError(f"sep must be one character, got {sep!r}")
    report = ReadReport(path)
    frame = _csv_rows(read_text(path, encoding), sep, report)
    return _finish_table(path, frame, _mapping(columns, frame.columns, path), report, name,
                         keep_events)


def read_parquet(path: PathLike, columns: Mapping[str, str] | None = None, *,
                 name: str | None = None, keep_events: list[str] | None = None) -> Dataset:
    """Read a Parquet interaction table (see :func:`read_csv` for ``columns``).

    Interaction columns holding lists or structs are refused with one clear error.

    Datetime timestamps become unix seconds.

    Raises:
        DataError: If the file is missing, not Parquet, empty, lacks a column, or every row
            is malformed.
    """
    path = require_file(path)
    try:
        available = list(pl.read_parquet_schema(path))
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(path, f"not a readable Parquet file ({e})") from e
    mapping = _mapping(columns, available, path)
    try:
        frame = pl.read_parquet(path, columns=list(dict.fromkeys(mapping.values())))
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(path, f"not a readable Parquet file ({e})") from e
    if frame.height == 0:
        raise DataError(path, "file is empty (no rows)")
    return _finish_table(path, frame, mapping, ReadReport(path), name, keep_events)


def read_jsonl(path: PathLike, columns: Mapping[str, str] | None = None, *,
               name: str | None = None, encoding: str = "utf-8",
               keep_events: list[str] | None = None) -> Dataset:
    """Read interactions written one JSON object per line (see :func:`read_csv` for
    ``columns``).

    Lines that are not valid JSON objects are dropped and counted; a field holding a list
    or an object where an id, time or rating belongs drops its row (``non-scalar <column>``).

    Raises:
        DataError: If the file is missing, empty, lacks a column, or every line is malformed
            (the message says so, with the reasons, and points out a JSON array ``[...]``,
            which is not JSON lines).
    """
    path = Path(path)
    report = ReadReport(path)
    rows: list[dict[str, Any]] = []
    text = read_text(path, encoding)
    for lineno, line in lines_frame(text).select("lineno", "line").iter_rows():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            report.add("invalid JSON", 1, lineno)
            continue
        if not isinstance(rec, dict):
            report.add("not a JSON object", 1, lineno)
            continue
        rows.append({"lineno": lineno, **rec})
    if not rows:
        array = (" The file is one JSON array ([...]), which is not JSON lines: write one "
                 "object per line (e.g. jq -c '.[]' in.json > out.jsonl)."
                 if text.lstrip().startswith("[") else "")
        raise DataError(path, f"no line parsed as a JSON object ({report.describe()}).{array}")
    available = list(dict.fromkeys(k for r in rows for k in r if k != "lineno"))
    mapping = _mapping(columns, available, path)
    wanted = ["lineno", *dict.fromkeys(mapping.values())]
    table: dict[str, list[Any]] = {c: [] for c in wanted}
    for r in rows:
        bad = next((c for c in wanted[1:] if isinstance(r.get(c), (list, dict))), None)
        if bad is not None:
            report.add(f"non-scalar {bad}", 1, r["lineno"])
            continue
        for c in wanted:
            v = r.get(c)
            table[c].append(v if v is None or c == "lineno" else str(v))
    frame = pl.DataFrame(table, schema={c: pl.Int64 if c == "lineno" else pl.String
                                        for c in wanted})
    return _finish_table(path, frame, mapping, report, name, keep_events)
