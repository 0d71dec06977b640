"""Named dataset recipes: where the files lie, where to download them, which reader to use.

``load_dataset(name)`` looks for the files under ``data_dir``, else ``$GENREC_DATA_DIR``,
then in the cache (``$GENREC_CACHE_DIR`` or ``~/.cache/genrec``), in the folder layout of the
shared datasets folder (``ml-100k/raw/u.data``, ``amazon2014_beauty/user_sequence_asin.txt``,
...). Missing files are downloaded from their canonical public URL into the cache, checked
against a pinned checksum and written atomically. Offline (``download=False`` or
``GENREC_OFFLINE=1``), a missing file gives a :class:`DataError` that says which files to put
in which folder and where to get them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from genrec._io import atomic_write, atomic_write_bytes
from genrec.data._parsing import DataError, PathLike
from genrec.data.interactions import Dataset
from genrec.data.preprocess import k_core
from genrec.data.readers import (
    read_amazon2014,
    read_ml1m,
    read_ml100k,
    read_p5,
    read_recbole_atomic,
    read_sequences,
    read_yelp,
)

__all__ = ["Download", "Layout", "Recipe", "RECIPES", "load_dataset", "fetch", "cache_dir"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Download:
    """One file to download, with the checksum it must have.

    Attributes:
        url: Canonical public URL.
        path: Where the file goes, relative to the dataset folder.
        sha256: Expected SHA-256 (hex).
        md5: Expected MD5 (hex), for sources that publish only MD5 (GroupLens).
        unzip_to: For a zip archive: the folder (relative to the dataset folder) to unpack
            its files into, without the archive's top-level folder.
    """

    url: str
    path: str
    sha256: str | None = None
    md5: str | None = None
    unzip_to: str | None = None


@dataclass(frozen=True)
class Layout:
    """One way the files of a dataset can lie in its folder.

    Attributes:
        files: Required files, relative to the dataset folder.
        read: ``read(folder, name) -> Dataset``.
        optional: Files read when present (item or user features).
    """

    files: tuple[str, ...]
    read: Callable[[Path, str], Dataset]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A named public dataset.

    Attributes:
        folder: Folder name under the data directory.
        layouts: Accepted file sets, tried in order.
        downloads: What a download fetches (it yields one of the layouts).
        expected: ``(users, items, interactions)`` of the standard version (a mismatch is
            logged as a warning, not an error: users may hold another version on purpose).
        aliases: Other accepted folder names.
        note: Extra advice for the missing-files message.
    """

    folder: str
    layouts: tuple[Layout, ...]
    downloads: tuple[Download, ...] = ()
    expected: tuple[int, int, int] | None = None
    aliases: tuple[str, ...] = ()
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Layout readers


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _with_meta(folder: Path, metas: tuple[str, ...]) -> Path | None:
    meta = _first(folder, metas)
    if meta is None:
        _log.warning("%s: no item metadata (%s): items have no features", folder,
                     " or ".join(metas))
    return meta


def _ml100k(folder: Path, name: str, sub: str) -> Dataset:
    return read_ml100k(folder / sub, name=name)


def _ml100k_recbole(folder: Path, name: str) -> Dataset:
    return read_recbole_atomic(folder / "recbole_atomic" / "ml-100k", name=name)


def _ml1m_sequences(folder: Path, name: str) -> Dataset:
    return read_ml1m(folder, source="sequences", name=name)


def _ml1m_ratings(folder: Path, name: str) -> Dataset:
    # The standard ML-1M sequence benchmark keeps users and items with >= 5 ratings
    # (290 movies / 598 ratings go): 6,040 / 3,416 / 999,611, as the sequence file.
    return k_core(read_ml1m(folder, source="ratings", name=name), 5, 5)


def _amazon_sequences(folder: Path, name: str, metas: tuple[str, ...]) -> Dataset:
    return read_sequences(folder / "user_sequence_asin.txt", item_meta=_with_meta(folder, metas),
                          name=name)


def _amazon_p5(folder: Path, name: str, metas: tuple[str, ...]) -> Dataset:
    return read_p5(folder / "p5_format", item_meta=_with_meta(folder, metas), name=name)


def _amazon_raw(folder: Path, name: str, category: str) -> Dataset:
    meta = _with_meta(folder, (f"meta_{category}.json.gz",))
    return read_amazon2014(folder / f"reviews_{category}_5.json.gz", meta, name=name)


def _yelp(folder: Path, name: str) -> Dataset:
    return read_yelp(folder, name=name)


def _lastfm(folder: Path, name: str) -> Dataset:
    return read_sequences(folder / "LastFM.txt", integer_ids=True, name=name)


def _amazon_layouts(category: str, metas: tuple[str, ...]) -> tuple[Layout, ...]:
    return (
        Layout(("user_sequence_asin.txt",), partial(_amazon_sequences, metas=metas), metas),
        Layout(("p5_format/sequential_data.txt", "p5_format/datamaps.json"),
               partial(_amazon_p5, metas=metas), metas),
        Layout((f"reviews_{category}_5.json.gz",), partial(_amazon_raw, category=category),
               (f"meta_{category}.json.gz",)),
    )


# ---------------------------------------------------------------------------------------------
# The recipes

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_GITHUB = "https://raw.githubusercontent.com"
# Repositories at the commits the shared copies were taken from (see their SOURCE.txt); the
# sha256 values are those of the byte-identical local copies.
_GRAM = f"{_GITHUB}/skleee/GRAM/7ac4d9272a57beed9df35c27ea34221f6e4a8fb1/rec_datasets"
_P5 = f"{_GITHUB}/Wenyueh/LLM-RecSys-ID/2200ad9fef647ef755c01d6d7e5c5de3082606c5/data"
_S3REC = f"{_GITHUB}/aHuiWang/CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data"
# The raw McAuley-lab files are named in the message but never fetched automatically: no
# checksum for them is published and no local copy exists to pin one.
_SNAP = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_AMAZON_NOTE = (
    "Item metadata ({meta}) has no pinned public download (it was built from the McAuley-lab "
    "metadata); without it the items have no features. Instead of all the above, the raw "
    "files {snap}/reviews_{cat}_5.json.gz and {snap}/meta_{cat}.json.gz "
    "(http://jmcauley.ucsd.edu/data/amazon/index_2014.html) work too, with metadata."
)

RECIPES: dict[str, Recipe] = {
    "ml-100k": Recipe(
        folder="ml-100k",
        layouts=(
            Layout(("raw/u.data",), partial(_ml100k, sub="raw"),
                   ("raw/u.item", "raw/u.user", "raw/u.genre")),
            Layout(("u.data",), partial(_ml100k, sub="."), ("u.item", "u.user", "u.genre")),
            Layout(("recbole_atomic/ml-100k.inter",), _ml100k_recbole,
                   ("recbole_atomic/ml-100k.item", "recbole_atomic/ml-100k.user")),
        ),
        # MD5 published by GroupLens next to the archive (ml-100k.zip.md5).
        downloads=(Download(f"{_GROUPLENS}/ml-100k.zip", "ml-100k.zip",
                            md5="0e33842e24a9c977be4e0107933c0723", unzip_to="raw"),),
        expected=(943, 1682, 100_000),
    ),
    "ml-1m": Recipe(
        folder="ml-1m",
        layouts=(
            Layout(("sequences_min5_chronological.txt",), _ml1m_sequences,
                   ("movies.dat", "users.dat")),
            Layout(("ratings.dat",), _ml1m_ratings, ("movies.dat", "users.dat")),
        ),
        # MD5 published by GroupLens next to the archive (ml-1m.zip.md5).
        downloads=(Download(f"{_GROUPLENS}/ml-1m.zip", "ml-1m.zip",
                            md5="c4d9eecfca2ab87c1945afe126590906", unzip_to="."),),
        expected=(6040, 3416, 999_611),
    ),
    "amazon-beauty": Recipe(
        folder="amazon2014_beauty",
        layouts=_amazon_layouts("Beauty", ("item_meta.jsonl",)),
        downloads=(Download(
            f"{_GRAM}/Beauty/user_sequence.txt", "user_sequence_asin.txt",
            sha256="47197cbee7bdc1896926e10d96b807dce0aecb9a1f0c2ccc887c21090237c9b7"),),
        expected=(22_363, 12_101, 198_502),
        note=_AMAZON_NOTE.format(meta="item_meta.jsonl", cat="Beauty", snap=_SNAP),
    ),
    "amazon-sports": Recipe(
        folder="amazon2014_sports",
        layouts=_amazon_layouts("Sports_and_Outdoors",
                                ("item_meta_partial.jsonl", "item_meta.jsonl")),
        downloads=(Download(
            f"{_GRAM}/Sports/user_sequence.txt", "user_sequence_asin.txt",
            sha256="240fd0484501ca53769c016cb1bc674ac7e420aef562b88cea1439b94a3ba044"),),
        expected=(35_598, 18_357, 296_337),
        note=_AMAZON_NOTE.format(meta="item_meta_partial.jsonl", cat="Sports_and_Outdoors",
                                 snap=_SNAP),
    ),
    "yelp": Recipe(
        folder="yelp",
        aliases=("yelp_p5",),
        layouts=(Layout(("sequential_data.txt", "datamaps.json"), _yelp,
                        ("item_categories.jsonl",)),),
        downloads=(
            Download(f"{_P5}/yelp/sequential_data.txt", "sequential_data.txt",
                     sha256="724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed"),
            Download(f"{_P5}/yelp/datamaps.json", "datamaps.json",
                     sha256="52d07e709fc00e5e75fcf993af92db68a44b10f62a9c6b06b61732ae141367d1"),
        ),
        expected=(30_431, 20_033, 316_354),
        note="item_categories.jsonl (business categories) has no public download: it is "
             "derived from the Yelp Open Dataset; without it the items have no features.",
    ),
    "lastfm": Recipe(
        folder="lastfm",
        aliases=("lastfm_s3rec",),
        layouts=(Layout(("LastFM.txt",), _lastfm),),
        downloads=(Download(
            f"{_S3REC}/LastFM.txt", "LastFM.txt",
            sha256="9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802"),),
        expected=(1090, 3646, 52_551),
    ),
}


# ---------------------------------------------------------------------------------------------
# Downloading


def cache_dir() -> Path:
    """``$GENREC_CACHE_DIR``, else ``~/.cache/genrec``."""
    env = os.environ.get("GENREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genrec"


def fetch(url: str, dest: PathLike, *, sha256: str | None = None, md5: str | None = None,
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, keeping it only if its checksum matches.

    Args:
        url: The URL.
        dest: Target file.
        sha256: Expected SHA-256 (hex).
        md5: Expected MD5 (hex).
        timeout: Socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        ValueError: If no checksum is given (unverified downloads are not allowed).
        DataError: If the download fails or the checksum differs (nothing is left behind).
    """
    if not sha256 and not md5:
        raise ValueError(f"fetch({url!r}): a sha256 or md5 checksum is required")
    dest = Path(dest)

    def write(tmp: Path) -> None:
        h_sha, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h_sha.update(chunk)
                h_md5.update(chunk)
        for kind, want, got in (("sha256", sha256, h_sha), ("md5", md5, h_md5)):
            if want and got.hexdigest() != want.lower():
                raise DataError(dest, f"checksum mismatch for {url}: {kind} is "
                                      f"{got.hexdigest()}, expected {want}; the file was not kept")

    _log.info("downloading %s -> %s", url, dest)
    try:
        atomic_write(dest, write)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        reason = getattr(e, "reason", None) or e
        raise DataError(dest, f"download of {url} failed ({reason})") from e
    return dest


def _unzip(archive: Path, dest: Path) -> None:
    """Unpack the files of ``archive`` into ``dest`` without its folders (each file atomic)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or not parts or parts[0] == "__MACOSX":
                    continue
                # Only the base name is used, so no member can escape ``dest``.
                atomic_write_bytes(dest / parts[-1], zf.read(info))
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(archive, f"not a valid zip archive ({e})") from e


def _download(recipe: Recipe, folder: Path, base_url: str | None) -> None:
    for d in recipe.downloads:
        url = d.url if base_url is None else f"{base_url.rstrip('/')}/{d.url.rsplit('/', 1)[-1]}"
        target = fetch(url, folder / d.path, sha256=d.sha256, md5=d.md5)
        if d.unzip_to is not None:
            _unzip(target, folder / d.unzip_to)


# ---------------------------------------------------------------------------------------------
# Loading


def _roots(data_dir: PathLike | None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    elif os.environ.get("GENREC_DATA_DIR"):
        roots.append(Path(os.environ["GENREC_DATA_DIR"]).expanduser())
    roots.append(cache_dir())
    return roots


def _find(recipe: Recipe, roots: list[Path], *,
          direct: Path | None = None) -> tuple[Path, Layout] | None:
    folders = [root / f for root in roots for f in (recipe.folder, *recipe.aliases)]
    if direct is not None:  # data_dir may be the dataset folder itself
        folders.append(direct)
    for folder in folders:
        for layout in recipe.layouts:
            if all((folder / f).is_file() for f in layout.files):
                return folder, layout
    return None


def _missing_message(name: str, recipe: Recipe, roots: list[Path], why: str) -> str:
    target = roots[0] / recipe.folder
    looked = ", ".join(str(r / recipe.folder) for r in roots)
    lines = [f"dataset {name!r}: files not found ({why}).", f"Looked in: {looked}.",
             f"Put one of these file sets into {target}/ (or point data_dir / GENREC_DATA_DIR "
             f"at the folder that holds {recipe.folder}/):"]
    for layout in recipe.layouts:
        opt = f"  (optional: {', '.join(layout.optional)})" if layout.optional else ""
        lines.append(f"  - {', '.join(layout.files)}{opt}")
    if recipe.downloads:
        lines.append("Get them from:")
        for d in recipe.downloads:
            into = "" if d.unzip_to is None else (
                f", unzipped into {target}/" if d.unzip_to == "." else
                f", unzipped into {target / d.unzip_to}/")
            lines.append(f"  - {d.path} <- {d.url}{into}")
    if recipe.note:
        lines.append(recipe.note)
    return "\n".join(lines)


def load_dataset(name: str, data_dir: PathLike | None = None, *, download: bool = True,
                 base_url: str | None = None) -> Dataset:
    """Load a named dataset (see ``RECIPES``), downloading it into the cache if needed.

    Args:
        name: A key of ``RECIPES``: ``ml-100k``, ``ml-1m``, ``amazon-beauty``,
            ``amazon-sports``, ``yelp``, ``lastfm``.
        data_dir: Folder holding the dataset folders (e.g. ``ml-100k/``), or the dataset
            folder itself. Default: ``$GENREC_DATA_DIR``; the cache is always searched too.
        download: Allow downloading missing files (also off when ``GENREC_OFFLINE=1``).
        base_url: Fetch every file from ``<base_url>/<file name>`` instead of its canonical
            URL (a mirror; also ``$GENREC_DOWNLOAD_URL``). Checksums still apply.

    Returns:
        The dataset, named ``name``, with item features where the files have them.

    Raises:
        KeyError: If ``name`` is not a recipe.
        DataError: If the files are missing and cannot be downloaded (the message lists the
            files, the folder and the URLs), or a file is unusable.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(RECIPES)}")
    recipe = RECIPES[name]
    roots = _roots(data_dir)
    direct = Path(data_dir).expanduser() if data_dir is not None else None
    found = _find(recipe, roots, direct=direct)
    if found is None:
        offline = os.environ.get("GENREC_OFFLINE", "").strip().lower() not in ("", "0", "false")
        why = ("no public download exists" if not recipe.downloads else
               "download=False" if not download else
               "GENREC_OFFLINE is set" if offline else "")
        if why:
            raise DataError(None, _missing_message(name, recipe, roots, why))
        cache = cache_dir() / recipe.folder
        try:
            _download(recipe, cache, base_url or os.environ.get("GENREC_DOWNLOAD_URL"))
        except DataError as e:
            raise DataError(None, _missing_message(name, recipe, roots,
                                                   f"the download failed: {e}")) from e
        found = _find(recipe, [cache_dir()])
        if found is None:
            raise DataError(cache, "the downloaded files do not form a complete file set:\n"
                            + _missing_message(name, recipe, roots, "after download"))
    folder, layout = found
    _log.info("loading %s from %s (%s)", name, folder, ", ".join(layout.files))
    ds = layout.read(folder, name)
    ds.log.insert(0, {"step": "load", "recipe": name, "folder": str(folder),
                      "files": list(layout.files)})
    counts = (ds.n_users, ds.n_items, len(ds.interactions))
    if recipe.expected is not None and counts != recipe.expected:
        _log.warning("%s: got users/items/interactions %s, the standard version has %s",
                     name, counts, recipe.expected)
    return ds
