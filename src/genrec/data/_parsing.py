"""Machinery shared by the readers: file checks, decoding, row validation and read reports.

Every reader follows the same path: :func:`read_text` turns a file into text (or raises one
clear :class:`DataError`), a vectorised polars step splits it into string columns, and
:class:`ReadReport` drops malformed rows while counting them by reason. Nothing is dropped
silently: the counts end up in ``Dataset.log`` and in the ``logging`` output.
"""

from __future__ import annotations

import ast
import gzip
import html
import io
import json
import logging
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from genrec.data.interactions import Columns, Dataset

__all__ = ["DataError", "ITEM_KEYS", "ReadReport", "PathLike"]

# The private reader modules log under the public module name, so that one logger
# (``genrec.data.readers``) shows or silences every read report.
_log = logging.getLogger("genrec.data.readers")

PathLike = str | Path
USER, ITEM, TIME, RATING = Columns.user, Columns.item, Columns.timestamp, Columns.rating


class DataError(ValueError):
    """A data file is missing, unreadable, or holds no usable rows.

    Attributes:
        path: The file or folder concerned (``None`` if not about one file).
        problem: What is wrong, in words.
    """

    # Public home: tracebacks and pickles name genrec.data.readers.DataError.
    __module__ = "genrec.data.readers"

    def __init__(self, path: PathLike | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[Path | None, str]]:
        return type(self), (self.path, self.problem)


@dataclass
class ReadReport:
    """Counts of the rows of one file that were kept and dropped, by reason."""

    path: Path
    dropped: dict[str, int] = field(default_factory=dict)
    first_line: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int, line: int | None = None) -> None:
        """Record ``n`` dropped rows for ``reason``."""
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)
            if line is not None and reason not in self.first_line:
                self.first_line[reason] = int(line)

    def drop(self, frame: pl.DataFrame, bad: pl.Expr, reason: str) -> pl.DataFrame:
        """Remove the rows where ``bad`` holds (null counts as bad) and count them.

        Args:
            frame: The rows.
            bad: Boolean expression, true on a malformed row.
            reason: The reason recorded for those rows.
        """
        mask = frame.select(bad.fill_null(True).alias("_bad"))["_bad"]
        if not mask.any():
            return frame
        bad_rows = frame.filter(mask)
        line = int(bad_rows["lineno"][0]) if "lineno" in frame.columns else None
        self.add(reason, bad_rows.height, line)
        return frame.filter(~mask)

    def describe(self) -> str:
        """The drop counts in words, e.g. ``wrong field count: 3 (first at line 7)``."""
        parts = []
        for reason, n in self.dropped.items():
            at = f" (first at line {self.first_line[reason]})" if reason in self.first_line else ""
            parts.append(f"{reason}: {n}{at}")
        return "; ".join(parts)

    def finish(self, kept: int, what: str = "rows", *, allow_empty: bool = False) -> dict[str, Any]:
        """Check that something is left, log the counts and return the ``dataset.log`` entry.

        Raises:
            DataError: If every row was malformed (or nothing was kept, unless
                ``allow_empty``).
        """
        n_dropped = sum(self.dropped.values())
        if kept == 0 and (n_dropped or not allow_empty):
            detail = self.describe() or "no data rows"
            raise DataError(self.path, f"no valid {what}: every row is malformed ({detail})")
        if n_dropped:
            _log.warning("%s: kept %d %s, dropped %d malformed (%s)", self.path, kept, what,
                         n_dropped, self.describe())
        else:
            _log.info("%s: read %d %s", self.path, kept, what)
        return {"step": "read", "file": str(self.path), "kept": int(kept),
                "dropped": int(n_dropped), "reason": dict(self.dropped)}


# ---------------------------------------------------------------------------------------------
# Files and text


def require_file(path: PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is an existing file.

    Raises:
        DataError: If it does not exist or is not a file.
    """
    path = Path(path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()}: a relative path is " \
            "read from the working directory)"
        raise DataError(path, f"{what} not found{where}")
    if not path.is_file():
        raise DataError(path, f"{what} is not a regular file")
    return path


def read_bytes(path: PathLike) -> bytes:
    """The content of ``path``, gunzipped when the name ends in ``.gz``.

    Raises:
        DataError: If the file is missing, unreadable or a broken gzip file.
    """
    path = require_file(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror or e})") from e
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, f"not a valid gzip file ({e})") from e
    return data


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """Decode a whole file (gzip-aware) and check that it is not empty.

    Raises:
        DataError: If the file is missing or empty, or not valid text in ``encoding`` (the
            message gives the byte offset and line and suggests ``encoding=``).
    """
    path = Path(path)
    data = read_bytes(path)
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is not content
    try:
        text = data.decode(encoding)
    except LookupError as e:
        raise DataError(path, f"unknown encoding {encoding!r}") from e
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        where = " of the decompressed data" if path.suffix == ".gz" else ""
        raise DataError(
            path,
            f"not valid {encoding} text: byte 0x{data[e.start]:02x} at byte offset {e.start}"
            f"{where} (line {line}) cannot be decoded. If the file uses another encoding, pass "
            f"it, e.g. encoding='iso-8859-1' (GroupLens files) or encoding='cp1252'",
        ) from e
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def lines_frame(text: str) -> pl.DataFrame:
    r"""Non-blank lines of ``text`` with their 1-based line numbers (``lineno``, ``line``).

    Splits on ``\n`` only (``str.splitlines`` would also split on characters such as
    ``\x85`` that are ordinary letters in ISO-8859-1 files) and strips a trailing ``\r``.
    """
    frame = pl.DataFrame({"line": text.split("\n")}).with_row_index("lineno", offset=1)
    return frame.with_columns(pl.col("line").str.strip_chars_end("\r")).filter(
        pl.col("line").str.strip_chars().str.len_bytes() > 0
    )


def split_fields(lines: pl.DataFrame, sep: str, names: list[str],
                 report: ReadReport) -> pl.DataFrame:
    """Split each line on ``sep`` into the string columns ``names``.

    Lines with another number of fields are dropped as ``wrong field count``. Fields are
    stripped of surrounding whitespace; empty fields become null.
    """
    frame = lines.with_columns(pl.col("line").str.split(sep).alias("_f"))
    frame = report.drop(frame, pl.col("_f").list.len() != len(names), "wrong field count")
    cols = [pl.col("_f").list.get(i).str.strip_chars().alias(n) for i, n in enumerate(names)]
    frame = frame.select("lineno", *cols)
    return frame.with_columns(
        [pl.when(pl.col(n).str.len_bytes() > 0).then(pl.col(n)).alias(n) for n in names]
    )


def read_delimited(path: PathLike, sep: str, names: list[str], *,
                   encoding: str = "utf-8") -> tuple[pl.DataFrame, ReadReport]:
    """Read a header-less delimited file whose lines hold exactly ``len(names)`` fields."""
    path = Path(path)
    report = ReadReport(path)
    return split_fields(lines_frame(read_text(path, encoding)), sep, names, report), report


# ---------------------------------------------------------------------------------------------
# Values


def int_expr(col: str) -> pl.Expr:
    """A string or numeric column as Int64 (null where it is not an integer)."""
    return pl.col(col).cast(pl.Int64, strict=False)


#: Timestamps written as text must be ISO-8601: a date, optionally a time (``T`` or a space
#: between), optional fractional seconds (dropped) and an optional ``Z`` or UTC offset; a time
#: without an offset is read as UTC. Other date forms are refused, never guessed.
_ISO_8601 = (r"^(?<y>\d{4})-(?<mo>\d{2})-(?<d>\d{2})"
             r"(?:[T ](?<h>\d{2}):(?<mi>\d{2})(?::(?<s>\d{2})(?:[.,]\d+)?)?"
             r"(?:(?<z>Z)|(?<sg>[+-])(?<zh>\d{2})(?::?(?<zm>\d{2}))?)?)?$")
#: Dates in a form that is not ISO-8601 (``01/02/2021``, ``2.1.2021``, ``2021/1/2``,
#: ``Jan 2 2021``): ambiguous or locale-bound, so they are one clear error rather than a
#: guess (``01/02/2021`` is 2 January in the US and 1 February in most other places).
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t|tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_OTHER_DATE = (r"^\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}(?:[ T,].*)?$"
               rf"|(?i:\b{_MONTH}\b.*\d{{4}}|\d{{4}}.*\b{_MONTH}\b)")
_TIME_REASONS = ("timestamp not an integer", "timestamp out of range", "unparseable timestamp")


def _iso_seconds(col: str) -> pl.Expr:
    """Unix seconds of ISO-8601 text (null where the text is not ISO-8601 or no real date)."""
    g = pl.col(col).str.extract_groups(_ISO_8601)
    part = g.struct.field
    text = pl.concat_str(part("y"), pl.lit("-"), part("mo"), pl.lit("-"), part("d"), pl.lit(" "),
                         part("h").fill_null("00"), pl.lit(":"), part("mi").fill_null("00"),
                         pl.lit(":"), part("s").fill_null("00"))
    local = text.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us").dt.epoch("s")
    offset = (part("zh").cast(pl.Int64) * 3600 + part("zm").cast(pl.Int64).fill_null(0) * 60)
    sign = pl.when(part("sg") == "-").then(-1).otherwise(1)
    return local - (sign * offset).fill_null(0)


def _time_value(col: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr | None]:
    """Unix-time (or position) Int64 of a column, and its Float64 reading when it is numeric.

    Integers (any width), integral floats and decimals, datetimes, dates and integer or
    integral-number text are read; anything else (ISO-8601 text is read later) is null. The
    second expression (None for datetimes) tells a non-integral number (``12.5``) from an
    integral one too large for Int64.
    """
    c = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        return c.dt.epoch("s"), None
    if isinstance(dtype, pl.Date):
        return c.cast(pl.Int64) * 86_400, None
    as_float = c.cast(pl.Float64, strict=False)
    integral = as_float.is_finite() & (as_float == as_float.floor())
    from_float = pl.when(integral).then(as_float.cast(pl.Int64, strict=False))
    if dtype.is_integer():
        return c.cast(pl.Int64, strict=False), as_float  # UInt64 above 2**63: out of range
    if dtype.is_float() or dtype.is_decimal():
        return from_float, as_float  # a decimal 2.5 is no more an integer than a float 2.5
    return pl.coalesce(c.cast(pl.Int64, strict=False), from_float), as_float


def _clean_time(frame: pl.DataFrame, report: ReadReport) -> pl.DataFrame:
    """Turn ``timestamp`` into Int64 and drop (and count) the rows where that fails.

    Reasons: ``timestamp not an integer`` (missing, or a number with a fraction, NaN or
    infinite), ``timestamp out of range`` (an integer outside Int64), ``unparseable
    timestamp`` (text that is neither a number nor ISO-8601).

    Raises:
        DataError: If a timestamp is a date written in another form than ISO-8601.
    """
    dtype = frame[TIME].dtype
    if dtype == pl.String:
        frame = frame.with_columns(pl.col(TIME).str.strip_chars())  # " 100" is 100
    value, number = _time_value(TIME, dtype)
    frame = frame.with_columns(value.alias("_t"))
    if dtype == pl.String and frame["_t"].null_count() > frame[TIME].null_count():
        # Only when some text is not a number: the regex costs time on big integer columns.
        frame = frame.with_columns(pl.coalesce("_t", _iso_seconds(TIME)).alias("_t"))
    if not frame["_t"].null_count():
        return frame.with_columns(pl.col("_t").alias(TIME)).drop("_t")
    why = pl.when(pl.col("_t").is_not_null()).then(None).when(pl.col(TIME).is_null()).then(
        pl.lit(_TIME_REASONS[0]))
    if number is not None:
        integral = number.is_finite() & (number == number.floor())
        why = why.when(integral).then(pl.lit(_TIME_REASONS[1])).when(
            number.is_not_null()).then(pl.lit(_TIME_REASONS[0]))
    frame = frame.with_columns(why.otherwise(pl.lit(_TIME_REASONS[2])).alias("_why"))
    if dtype == pl.String:
        _refuse_other_dates(frame, report)
    for reason in _TIME_REASONS:
        frame = report.drop(frame, pl.col("_why").eq_missing(reason), reason)
    return frame.with_columns(pl.col("_t").alias(TIME)).drop("_t", "_why")


def _refuse_other_dates(frame: pl.DataFrame, report: ReadReport) -> None:
    """Raise if an unparseable text timestamp is a date in a non-ISO form (see _OTHER_DATE)."""
    dates = frame.filter(pl.col("_why").eq_missing(_TIME_REASONS[2])
                         & pl.col(TIME).str.contains(_OTHER_DATE)
                         & ~pl.col(TIME).str.contains(_ISO_8601))  # not 2021-02-30
    if not dates.height:
        return
    example = dates[TIME][0]
    at = f" (line {dates['lineno'][0]})" if "lineno" in dates.columns else ""
    raise DataError(
        report.path,
        f"{dates.height} timestamp(s) are dates in another form than ISO-8601, e.g. "
        f"{example!r}{at}; genrec does not guess date formats (01/02/2021 is 2 January in one "
        "country and 1 February in another). Write timestamps as integers (e.g. unix seconds) "
        "or as ISO-8601 text: 2021-01-02, 2021-01-02 10:00:00, 2021-01-02T10:00:00Z or "
        "2021-01-02T10:00:00+02:00 (no offset: UTC). To convert a month-first column with "
        "polars: pl.col(name).str.to_datetime('%m/%d/%Y').dt.epoch('s')")


def clean_interactions(frame: pl.DataFrame, report: ReadReport, *,
                       int_ids: bool = False) -> pl.DataFrame:
    """Validate an interaction table of raw values and drop (and count) malformed rows.

    Args:
        frame: Columns ``user``, ``item`` and optionally ``rating``, ``timestamp`` (strings or
            already typed), plus optionally ``lineno``.
        report: Where drops are counted.
        int_ids: Ids must be integers (GroupLens, P5 files); they are written canonically
            (``"007"`` becomes ``"7"``) so that feature tables keyed by integers match.

    Returns:
        The valid rows: ``user``/``item`` String, ``rating`` Float32, ``timestamp`` Int64.
    """
    nested = {c: str(t) for c, t in frame.schema.items()
              if c in (USER, ITEM, RATING, TIME) and t.is_nested()}
    if nested:
        raise DataError(report.path, "interaction columns must hold one value per row, but "
                        + ", ".join(f"{c!r} is {t}" for c, t in nested.items())
                        + " (explode or flatten the file first, or map another column)")
    for col in (USER, ITEM):
        if frame[col].dtype != pl.String:
            frame = frame.with_columns(pl.col(col).cast(pl.String))
        frame = report.drop(frame, pl.col(col).is_null() | (pl.col(col).str.len_bytes() == 0),
                            f"missing {col} id")
        # An id of only spaces is no id: it would otherwise become one real user (or item)
        # that collects every such row. Other ids lose surrounding spaces ("u1 " == "u1").
        frame = frame.with_columns(pl.col(col).str.strip_chars())
        frame = report.drop(frame, pl.col(col).str.len_bytes() == 0, f"blank {col} id")
        if int_ids:
            frame = report.drop(frame, int_expr(col).is_null(), f"non-integer {col} id")
            frame = frame.with_columns(int_expr(col).cast(pl.String))
    if RATING in frame.columns:
        rating = pl.col(RATING)
        if frame[RATING].dtype == pl.String:
            rating = rating.str.strip_chars()  # " 4" is 4
        frame = frame.with_columns(rating.cast(pl.Float32, strict=False))
        frame = report.drop(frame, ~pl.col(RATING).is_finite(), "rating not a number")
    if TIME in frame.columns:
        frame = _clean_time(frame, report)
    return frame


def int_ids(frame: pl.DataFrame, col: str, report: ReadReport) -> pl.DataFrame:
    """Drop rows whose ``col`` is not an integer and write the rest canonically as strings."""
    frame = report.drop(frame, int_expr(col).is_null(), f"non-integer {col} id")
    return frame.with_columns(int_expr(col).cast(pl.String))


# ---------------------------------------------------------------------------------------------
# Sequence files: "user item item ..."


def read_token_sequences(path: PathLike, *, encoding: str = "utf-8",
                         integer_ids: bool = False) -> tuple[pl.DataFrame, ReadReport]:
    """Read a ``user item_1 ... item_n`` file into one row per (user, item), in file order.

    Tokens are separated by any run of whitespace. A line with a user but no items is
    dropped as ``line without items``; with ``integer_ids``, non-integer tokens are dropped
    (a bad user id drops every item of its line).

    Returns:
        Columns ``lineno``, ``user``, ``item`` (String) and the report; the report counts
        interactions (or lines, for lines that hold none).
    """
    path = Path(path)
    report = ReadReport(path)
    lines = lines_frame(read_text(path, encoding))
    tokens = pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    frame = lines.select("lineno", tokens.alias("_t"))
    frame = report.drop(frame, pl.col("_t").list.len() < 2, "line without items")
    frame = frame.select(
        "lineno", pl.col("_t").list.first().alias(USER), pl.col("_t").list.slice(1).alias(ITEM)
    ).explode(ITEM)
    if integer_ids:
        frame = int_ids(frame, USER, report)
        frame = int_ids(frame, ITEM, report)
    return frame, report


# ---------------------------------------------------------------------------------------------
# Item and user feature records (JSON lines, Python dict literals)

_KNOWN_TYPES: dict[str, pl.DataType] = {
    "title": pl.String(), "brand": pl.String(), "categories": pl.List(pl.String()),
    "price": pl.Float64(), "genres": pl.List(pl.String()), "year": pl.Int64(),
    "sales_rank": pl.Float64(), "sales_type": pl.String(), "description": pl.String(),
    "s3rec_attributes": pl.List(pl.String()), "p5_item_id": pl.Int64(),
}
#: Fields that are never item text: IDGenRec's textual ids are generated by a model.
_DROPPED_FIELDS = frozenset({"idgenrec_textual_id"})
_RENAMES = {"salesRank": "sales_rank", "category": "categories"}


def _flatten_str(value: Any) -> list[str]:
    """Flatten nested lists of names into one list of unique strings, in order."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif v is not None and str(v).strip():
            out.append(html.unescape(str(v).strip()))
    return list(dict.fromkeys(out))


def _to_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            f = float(value.strip().lstrip("$").replace(",", ""))
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _to_int(value: Any) -> int | None:
    f = _to_float(value)
    return int(f) if f is not None and f == int(f) else None


def normalize_record(rec: Mapping[str, Any], key: str,
                     id_name: str = "item") -> dict[str, Any]:
    """Bring one item/user record to the column conventions of genrec.

    ``title``/``brand`` strings (HTML entities decoded), ``categories``/``genres`` flat string lists, ``price`` and
    ``sales_rank`` floats (an Amazon ``salesRank`` dict gives ``sales_rank`` and
    ``sales_type``), ``year`` int. Other fields keep their name; dicts become JSON text.
    """
    out: dict[str, Any] = {id_name: str(rec[key]).strip()}
    for name, value in rec.items():
        if name == key or name in _DROPPED_FIELDS:
            continue
        name = _RENAMES.get(name, name)
        if name == "sales_rank" and isinstance(value, dict):
            first = next(iter(value.items()), (None, None))
            out["sales_type"], value = first
        kind = _KNOWN_TYPES.get(name)
        if kind is None:
            if isinstance(value, dict):
                value = json.dumps(value, ensure_ascii=False)
            elif isinstance(value, (list, tuple)):
                value = _flatten_str(value)
        elif isinstance(kind, pl.List):
            value = _flatten_str(value) if isinstance(value, (list, tuple)) else (
                [] if value is None else _flatten_str([value]))
        elif kind == pl.String():
            # Amazon metadata keeps HTML entities ("L&#39;Oreal Paris", "ELMA&amp;SANA").
            value = None if value is None else html.unescape(str(value))
        elif kind == pl.Float64():
            value = _to_float(value)
        else:
            value = _to_int(value)
        out[name] = value
    return out


def parse_record(line: str, allow_python: bool) -> Any:
    """Parse one JSON object, or a Python dict literal when ``allow_python`` (never ``eval``)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        if not allow_python:
            raise
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise json.JSONDecodeError(str(e), line, 0) from e


def _id_problem(rec: Mapping[str, Any], key: str | None) -> str | None:
    """Why ``rec[key]`` is not a usable id (``missing``, ``non-scalar``, ``blank``), or None."""
    if key is None:
        return "missing"
    if isinstance(rec[key], (dict, list, tuple)):
        return "non-scalar"
    return "blank" if not str(rec[key]).strip() else None


def records_frame(lines: Iterable[tuple[int, str]], report: ReadReport, *,
                  keys: tuple[str, ...] = ("item", "asin", "business_id", "item_id"),
                  allow_python: bool = False, id_name: str = "item") -> pl.DataFrame:
    """Parse JSON-object lines into a normalised feature frame keyed by ``id_name``.

    The key is the first of ``keys`` found in a record. Lines that do not parse, are nested
    too deeply, are not objects, or lack a usable key (missing, blank, a list or an object)
    are dropped and counted.
    """
    rows: list[dict[str, Any]] = []
    for lineno, line in lines:
        try:
            rec = parse_record(line, allow_python)
        except json.JSONDecodeError:
            report.add("invalid JSON", 1, lineno)
            continue
        except RecursionError:
            report.add("nested too deeply", 1, lineno)
            continue
        if not isinstance(rec, dict):
            report.add("not a JSON object", 1, lineno)
            continue
        key = next((k for k in keys if rec.get(k) not in (None, "")), None)
        if (problem := _id_problem(rec, key)) is not None:
            report.add(f"{problem} {id_name} id", 1, lineno)
            continue
        try:
            rows.append(normalize_record(rec, key, id_name))
        except RecursionError:
            report.add("nested too deeply", 1, lineno)
    if not rows:
        return pl.DataFrame()
    names = list(dict.fromkeys(n for r in rows for n in r))
    overrides = {n: _KNOWN_TYPES[n] for n in names if n in _KNOWN_TYPES}
    try:
        return pl.from_dicts(rows, schema_overrides=overrides, infer_schema_length=None)
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        # Unknown fields with mixed types across records: keep them as text.
        fixed = [{n: (v if n in overrides or v is None or isinstance(v, list) else str(v))
                  for n, v in r.items()} for r in rows]
        return pl.from_dicts(fixed, schema_overrides=overrides, infer_schema_length=None)


_STR_LIST = pl.List(pl.String())


def _unescape(expr: pl.Expr) -> pl.Expr:
    """Decode HTML entities in a string expression (only values containing '&' are touched)."""
    return pl.when(expr.str.contains("&", literal=True)).then(
        expr.map_elements(html.unescape, return_dtype=pl.String)).otherwise(expr)


def _clean_names(expr: pl.Expr) -> pl.Expr:
    """Strip the names of a list[str] column, drop empty ones and repeats (order kept)."""
    names = _unescape(pl.element().str.strip_chars())
    return expr.list.eval(names.filter(names.str.len_bytes() > 0)).list.unique(
        maintain_order=True)


def _fast_records(text: str, keys: tuple[str, ...], id_name: str = "item") -> pl.DataFrame | None:
    """Vectorised parse of well-formed JSON lines into the frame :func:`records_frame` builds.

    Returns None whenever a line or value needs the careful per-line path (a parse error, a
    missing key, nested objects, prices written as text, ...).
    """
    try:
        frame = pl.read_ndjson(io.BytesIO(text.encode("utf-8")), infer_schema_length=None)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    key = next((k for k in keys if k in frame.columns), None)
    if key is None or frame[key].null_count() or frame.height == 0:
        return None
    if not (frame[key].dtype == pl.String or frame[key].dtype.is_integer()) or (
            frame[key].cast(pl.String).str.strip_chars().str.len_bytes() == 0).any():
        return None  # ids that are lists, objects or blank: counted line by line
    frame = frame.drop([c for c in _DROPPED_FIELDS if c in frame.columns])
    frame = frame.rename({k: v for k, v in _RENAMES.items() if k in frame.columns})
    exprs = [pl.col(key).cast(pl.String).str.strip_chars().alias(id_name)]
    for name, dtype in frame.schema.items():
        if name == key:
            continue
        c, kind = pl.col(name), _KNOWN_TYPES.get(name)
        if isinstance(dtype, (pl.Struct, pl.Object)) or (
                isinstance(dtype, pl.List) and not isinstance(kind, pl.List)
                and dtype != _STR_LIST):
            return None
        if kind is None or dtype == pl.Null:
            expr = c if dtype != pl.Null or kind is None else pl.lit(None, kind)
        elif isinstance(kind, pl.List):
            if dtype == _STR_LIST:
                expr = _clean_names(c)
            elif dtype == pl.List(_STR_LIST):
                expr = _clean_names(c.list.eval(pl.element().explode()))
            elif dtype == pl.String:
                expr = _clean_names(pl.concat_list(c).list.drop_nulls())
            else:
                return None
        elif kind == pl.String():
            expr = _unescape(c.cast(pl.String))
        elif dtype.is_numeric():
            f = c.cast(pl.Float64)
            finite = pl.when(f.is_finite()).then(f)
            expr = finite if kind == pl.Float64() else pl.when(f == f.floor()).then(
                finite.cast(pl.Int64, strict=False))
        else:
            return None
        exprs.append(expr.alias(name))
    frame = frame.select(exprs)
    # Empty lists where a record had no value, as the per-line path gives.
    return frame.with_columns([pl.col(n).fill_null([]) for n, t in frame.schema.items()
                               if t == _STR_LIST and isinstance(_KNOWN_TYPES.get(n), pl.List)])


ITEM_KEYS = ("item", "asin", "business_id", "item_id")
"""Id fields looked for, in order, in an item feature file that declares none."""


def read_jsonl_items(path: PathLike, *, encoding: str = "utf-8", allow_python: bool = False,
                     keys: tuple[str, ...] = ITEM_KEYS,
                     id_name: str = "item") -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read an item (or user) feature file with one JSON object per line.

    Well-formed files are parsed in one vectorised pass; otherwise every line is parsed on
    its own so that bad lines (invalid or too deeply nested JSON, missing or blank ids) can be
    dropped and counted.

    Args:
        path: The file.
        encoding: Text encoding.
        allow_python: Accept Python dict literals too (old Amazon metadata).
        keys: Id fields, in order of preference (e.g. ``("asin",)`` or ``("p5_item_id",)``).
        id_name: Name of the id column of the result (``item`` or ``user``).

    Returns:
        The feature frame (``id_name`` first) and its ``dataset.log`` entry.
    """
    path = Path(path)
    report = ReadReport(path)
    text = read_text(path, encoding)
    frame = _fast_records(text, keys, id_name)
    if frame is None:
        lines = lines_frame(text)
        frame = records_frame(lines.select("lineno", "line").iter_rows(), report, keys=keys,
                              allow_python=allow_python, id_name=id_name)
    entry = report.finish(frame.height, "records")
    return frame, entry


# ---------------------------------------------------------------------------------------------
# Building the dataset


FeatureTable = tuple[pl.DataFrame, str] | None


def build_dataset(name: str, frame: pl.DataFrame, log: list[dict[str, Any]], *,
                  items: FeatureTable = None, users: FeatureTable = None,
                  order: str = "timestamp") -> Dataset:
    """``Dataset.from_raw`` plus a log entry per feature table saying how many rows matched.

    Args:
        name: Dataset name.
        frame: Clean interactions (raw ids).
        log: The read entries so far.
        items: ``(frame keyed by raw "item", source file)`` or None.
        users: ``(frame keyed by raw "user", source file)`` or None.
        order: ``"timestamp"`` or ``"position"``.
    """
    keep = [c for c in (USER, ITEM, TIME, RATING) if c in frame.columns]
    ds = Dataset.from_raw(name, frame.select(keep), items[0] if items else None,
                          users[0] if users else None, order=order, log=log)
    for table, attached, n_ids, col in ((items, ds.items, ds.n_items, ITEM),
                                        (users, ds.users, ds.n_users, USER)):
        if table is None:
            continue
        entry = {"step": "attach", "table": f"{col}s", "file": table[1],
                 "rows": table[0].height, "attached": attached.height,
                 "rows_unused": table[0].height - attached.height,
                 f"{col}s_without_features": n_ids - attached.height}
        _log.info("%s: %d of %d %ss have features from %s", name, attached.height, n_ids, col,
                  table[1])
        ds.log.append(entry)
    return ds
