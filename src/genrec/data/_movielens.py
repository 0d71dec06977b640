"""Readers of the GroupLens MovieLens files (ML-100K and ML-1M)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import polars as pl

from genrec.data._parsing import (
    ITEM,
    USER,
    DataError,
    FeatureTable,
    PathLike,
    ReadReport,
    build_dataset,
    clean_interactions,
    int_ids,
    lines_frame,
    read_delimited,
    read_text,
    read_token_sequences,
    split_fields,
)
from genrec.data.interactions import Dataset

__all__ = ["read_ml100k", "read_ml1m"]

#: The 19 ML-100K genres in flag order, used when ``u.genre`` is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
#: ML-1M occupation codes (README of ml-1m).
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_GROUPLENS = "iso-8859-1"
_log = logging.getLogger("genrec.data.readers")
_TITLE_YEAR = r"\((\d{4})\)\s*$"


def _title_and_year(col: str = "title") -> list[pl.Expr]:
    """``Toy Story (1995)`` -> title ``Toy Story``, year ``1995`` (null when absent)."""
    raw = pl.col(col)
    return [
        raw.str.replace(r"\s*" + _TITLE_YEAR, "").str.strip_chars().alias("title"),
        raw.str.extract(_TITLE_YEAR, 1).cast(pl.Int64, strict=False).alias("year"),
    ]


def _optional(path: Path, log: list[dict[str, Any]]) -> Path | None:
    """``path`` if it exists; otherwise note in the log that the features are absent."""
    if path.is_file():
        return path
    log.append({"step": "read", "file": str(path), "skipped": "file not found"})
    _log.warning("%s not found: the dataset has no features from it", path)
    return None


def _finish_features(frame: pl.DataFrame, report: ReadReport, log: list[dict[str, Any]],
                     key: str) -> FeatureTable:
    frame = int_ids(frame, key, report)
    log.append(report.finish(frame.height))
    return frame.drop("lineno"), str(report.path)


# ---------------------------------------------------------------------------------------------
# ML-100K


def _ml100k_genres(folder: Path, encoding: str) -> list[str]:
    path = folder / "u.genre"
    if not path.is_file():
        return list(ML100K_GENRES)
    report = ReadReport(path)
    frame = split_fields(lines_frame(read_text(path, encoding)), "|", ["name", "idx"], report)
    frame = frame.with_columns(pl.col("idx").cast(pl.Int64, strict=False)).drop_nulls()
    names = frame.sort("idx")["name"].to_list()
    if len(names) != len(ML100K_GENRES):
        raise DataError(path, f"expected {len(ML100K_GENRES)} genres, found {len(names)}")
    return names


def _ml100k_items(folder: Path, encoding: str, log: list[dict[str, Any]]) -> FeatureTable:
    path = _optional(folder / "u.item", log)
    if path is None:
        return None
    genres = _ml100k_genres(folder, encoding)
    flags = [f"g{i}" for i in range(len(genres))]
    names = ["item", "raw_title", "release_date", "video_release_date", "imdb_url", *flags]
    frame, report = read_delimited(path, "|", names, encoding=encoding)
    genre_list = pl.concat_list(
        [pl.when(pl.col(f) == "1").then(pl.lit(g)) for f, g in zip(flags, genres, strict=True)]
    ).list.drop_nulls()
    frame = frame.select(
        "lineno", "item", *_title_and_year("raw_title"), genre_list.alias("genres"),
        "release_date", "imdb_url",
    )
    # Titles without "(yyyy)" take the year of the release date ("01-Jan-1995").
    date_year = pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int64, strict=False)
    frame = frame.with_columns(pl.coalesce("year", date_year).alias("year"))
    return _finish_features(frame, report, log, "item")


def _ml100k_users(folder: Path, encoding: str, log: list[dict[str, Any]]) -> FeatureTable:
    path = _optional(folder / "u.user", log)
    if path is None:
        return None
    frame, report = read_delimited(path, "|", ["user", "age", "gender", "occupation", "zip"],
                                   encoding=encoding)
    frame = frame.with_columns(pl.col("age").cast(pl.Int64, strict=False))
    return _finish_features(frame, report, log, "user")


def read_ml100k(folder: PathLike, *, name: str = "ml-100k",
                encoding: str = _GROUPLENS) -> Dataset:
    r"""Read the GroupLens ML-100K files.

    ``u.data`` (``user \t item \t rating \t timestamp``) is required. ``u.item`` gives item
    features ``title`` (without the year), ``year``, ``genres`` (names from ``u.genre``),
    ``release_date``, ``imdb_url``; ``u.user`` gives ``age``, ``gender``, ``occupation``,
    ``zip``. Either may be absent (noted in the log).

    Args:
        folder: The folder holding ``u.data`` (e.g. the unpacked ``ml-100k.zip``).
        name: Dataset name.
        encoding: Text encoding of the files (GroupLens uses ISO-8859-1).

    Returns:
        The dataset: rating Float32, unix timestamps, ``order="timestamp"``.

    Raises:
        DataError: If ``u.data`` is missing, empty or holds no valid row.
    """
    folder = Path(folder)
    frame, report = read_delimited(folder / "u.data", "\t", [USER, ITEM, "rating", "timestamp"],
                                   encoding=encoding)
    frame = clean_interactions(frame, report, int_ids=True)
    log = [report.finish(frame.height)]
    items = _ml100k_items(folder, encoding, log)
    users = _ml100k_users(folder, encoding, log)
    return build_dataset(name, frame, log, items=items, users=users, order="timestamp")


# ---------------------------------------------------------------------------------------------
# ML-1M

ML1M_SEQUENCES = "sequences_min5_chronological.txt"


def _ml1m_items(folder: Path, encoding: str, log: list[dict[str, Any]]) -> FeatureTable:
    path = _optional(folder / "movies.dat", log)
    if path is None:
        return None
    frame, report = read_delimited(path, "::", ["item", "raw_title", "raw_genres"],
                                   encoding=encoding)
    frame = frame.select(
        "lineno", "item", *_title_and_year("raw_title"),
        pl.col("raw_genres").fill_null("").str.split("|").list.eval(
            pl.element().filter(pl.element().str.len_bytes() > 0)).alias("genres"),
    )
    return _finish_features(frame, report, log, "item")


def _ml1m_users(folder: Path, encoding: str, log: list[dict[str, Any]]) -> FeatureTable:
    path = _optional(folder / "users.dat", log)
    if path is None:
        return None
    frame, report = read_delimited(path, "::", ["user", "gender", "age", "occupation", "zip"],
                                   encoding=encoding)
    codes = {str(i): occupation for i, occupation in enumerate(ML1M_OCCUPATIONS)}
    frame = frame.with_columns(pl.col("age").cast(pl.Int64, strict=False),
                               pl.col("occupation").replace(codes))
    return _finish_features(frame, report, log, "user")


def read_ml1m(folder: PathLike, *, source: Literal["auto", "ratings", "sequences"] = "auto",
              name: str = "ml-1m", encoding: str = _GROUPLENS) -> Dataset:
    """Read the GroupLens ML-1M files.

    Interactions come from ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) when it is
    present, otherwise from ``sequences_min5_chronological.txt`` (``UserID MovieID_1 ...``,
    chronological, no ratings or times: ``order="position"``). ``movies.dat`` gives ``title``,
    ``year``, ``genres``; ``users.dat`` gives ``gender``, ``age`` (the GroupLens age-group
    code: 1 = under 18, 18 = 18-24, ...), ``occupation`` (name) and ``zip``.

    Args:
        folder: The folder holding the files.
        source: ``"auto"`` (ratings when present), ``"ratings"`` or ``"sequences"``.
        name: Dataset name.
        encoding: Text encoding of the files (GroupLens uses ISO-8859-1).

    Returns:
        The dataset (all ratings; no core filtering).

    Raises:
        DataError: If no interaction file is found or it holds no valid row.
    """
    folder = Path(folder)
    ratings, sequences = folder / "ratings.dat", folder / ML1M_SEQUENCES
    if source == "auto":
        if not ratings.is_file() and not sequences.is_file():
            raise DataError(folder, f"neither ratings.dat nor {ML1M_SEQUENCES} found")
        source = "ratings" if ratings.is_file() else "sequences"
    if source == "ratings":
        frame, report = read_delimited(ratings, "::", [USER, ITEM, "rating", "timestamp"],
                                       encoding=encoding)
        frame = clean_interactions(frame, report, int_ids=True)
        order = "timestamp"
    else:
        frame, report = read_token_sequences(sequences, encoding=encoding, integer_ids=True)
        order = "position"
    log = [report.finish(frame.height)]
    items = _ml1m_items(folder, encoding, log)
    users = _ml1m_users(folder, encoding, log)
    return build_dataset(name, frame, log, items=items, users=users, order=order)
