"""Named recipes: real counts, missing-file messages, and downloads from a local server."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import polars as pl
import pytest

from genrec.data import RECIPES, DataError, load_dataset
from genrec.data.readers import read_sequences
from genrec.data.recipes import Download, Layout, Recipe, fetch


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache, and ignore the caller's data settings."""
    monkeypatch.setenv("GENREC_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("GENREC_DATA_DIR", "GENREC_OFFLINE", "GENREC_DOWNLOAD_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 from a temporary thread."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=partial(server.serve_forever, poll_interval=0.05),
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def counts(ds) -> tuple[int, int, int]:
    return ds.n_users, ds.n_items, len(ds.interactions)


# ---------------------------------------------------------------------------------------------
# Real data


REAL = [
    pytest.param("ml-100k", {"title": pl.String, "year": pl.Int64,
                             "genres": pl.List(pl.String)}, id="ml-100k"),
    pytest.param("ml-1m", {"title": pl.String, "genres": pl.List(pl.String)}, id="ml-1m",
                 marks=pytest.mark.slow),
    pytest.param("amazon-beauty", {"title": pl.String, "brand": pl.String,
                                   "categories": pl.List(pl.String), "price": pl.Float64},
                 id="amazon-beauty", marks=pytest.mark.slow),
    pytest.param("amazon-sports", {"s3rec_attributes": pl.List(pl.String)},
                 id="amazon-sports", marks=pytest.mark.slow),
    pytest.param("yelp", {"categories": pl.List(pl.String)}, id="yelp",
                 marks=pytest.mark.slow),
    pytest.param("lastfm", {}, id="lastfm"),
]


@pytest.mark.parametrize(("name", "features"), REAL)
def test_recipe_counts_and_features(data_dir: Path, name: str, features: dict) -> None:
    ds = load_dataset(name, data_dir, download=False)
    assert ds.name == name
    assert counts(ds) == RECIPES[name].expected
    for col, dtype in features.items():
        assert ds.items.schema[col] == dtype
    if features:
        assert ds.items.height == ds.n_items  # every item has its feature row
    assert ds.log[0]["step"] == "load" and ds.log[0]["recipe"] == name


def test_readme_counts() -> None:
    assert {k: r.expected for k, r in RECIPES.items()} == {
        "ml-100k": (943, 1682, 100_000), "ml-1m": (6040, 3416, 999_611),
        "amazon-beauty": (22_363, 12_101, 198_502), "amazon-sports": (35_598, 18_357, 296_337),
        "yelp": (30_431, 20_033, 316_354), "lastfm": (1090, 3646, 52_551),
    }


def test_every_download_is_pinned() -> None:
    for name, recipe in RECIPES.items():
        assert recipe.downloads, name
        for d in recipe.downloads:
            assert d.sha256 or d.md5, (name, d.url)
            assert d.url.startswith("https://"), d.url


def test_pinned_sha256_match_the_shared_copies(data_dir: Path) -> None:
    checked = 0
    for recipe in RECIPES.values():
        for d in recipe.downloads:
            local = data_dir / recipe.folder / d.path
            if d.sha256 is None or not local.is_file():
                continue
            assert hashlib.sha256(local.read_bytes()).hexdigest() == d.sha256, local
            checked += 1
    assert checked == 5


def test_data_dir_from_env_and_direct_folder(data_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not (data_dir / "lastfm" / "LastFM.txt").is_file():
        pytest.skip("lastfm not available")
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    assert counts(load_dataset("lastfm", download=False)) == (1090, 3646, 52_551)
    monkeypatch.delenv("GENREC_DATA_DIR")
    direct = load_dataset("lastfm", data_dir / "lastfm", download=False)
    assert counts(direct) == (1090, 3646, 52_551)


# ---------------------------------------------------------------------------------------------
# Missing files


def test_offline_missing_files_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENREC_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset("amazon-beauty", tmp_path / "data")
    msg = str(err.value)
    assert "GENREC_OFFLINE" in msg
    assert f"Put one of these file sets into {tmp_path / 'data' / 'amazon2014_beauty'}/" in msg
    for name in ("user_sequence_asin.txt", "item_meta.jsonl", "p5_format/sequential_data.txt",
                 "p5_format/datamaps.json", "reviews_Beauty_5.json.gz"):
        assert name in msg
    assert RECIPES["amazon-beauty"].downloads[0].url in msg


def test_download_false_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("ml-100k", tmp_path, download=False)
    msg = str(err.value)
    assert "download=False" in msg
    assert str(tmp_path / "ml-100k") in msg and "raw/u.data" in msg
    assert (f"https://files.grouplens.org/datasets/movielens/ml-100k.zip, unzipped into "
            f"{tmp_path / 'ml-100k' / 'raw'}/") in msg


def test_failed_download_message(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        pass  # the server is gone: connections to its port are refused
    with pytest.raises(DataError) as err:
        load_dataset("lastfm", tmp_path / "data", base_url=url)
    msg = str(err.value)
    assert "the download failed" in msg and "LastFM.txt" in msg
    assert str(tmp_path / "data" / "lastfm") in msg


def test_unknown_name() -> None:
    with pytest.raises(KeyError, match="known: "):
        load_dataset("netflix")


# ---------------------------------------------------------------------------------------------
# Downloads from a local server


def _tiny_recipe(url: str, **checksum: str) -> Recipe:
    def read(folder: Path, name: str):
        return read_sequences(folder / "seq.txt", name=name)

    return Recipe(folder="tiny", layouts=(Layout(("seq.txt",), read),),
                  downloads=(Download(url, "seq.txt", **checksum),))


def test_download_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    body = b"u1 a b c\nu2 b c\n"
    (site / "seq.txt").write_bytes(body)
    good = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache" / "tiny"
    with serve(site) as url:
        monkeypatch.setitem(RECIPES, "tiny", _tiny_recipe(f"{url}/seq.txt", sha256="0" * 64))
        with pytest.raises(DataError, match="checksum mismatch.*sha256 is " + good):
            load_dataset("tiny", tmp_path / "data")
        assert not cache.exists() or list(cache.iterdir()) == []  # nothing partial is left

        monkeypatch.setitem(RECIPES, "tiny", _tiny_recipe(f"{url}/seq.txt", sha256=good))
        ds = load_dataset("tiny", tmp_path / "data")
    assert counts(ds) == (2, 3, 5)
    assert (cache / "seq.txt").read_bytes() == body
    # now cached: no server and no download needed
    assert counts(load_dataset("tiny", tmp_path / "data", download=False)) == (2, 3, 5)


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def test_grouplens_zip_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    archive = _zip({"ml-100k/u.data": "1\t10\t5\t100\n2\t10\t4\t50\n",
                    "ml-100k/README": "fake"})
    (site / "ml-100k.zip").write_bytes(archive)
    with serve(site) as url:
        # the real recipe pins GroupLens' md5: a different archive is refused
        with pytest.raises(DataError, match="checksum mismatch.*md5"):
            load_dataset("ml-100k", tmp_path / "data", base_url=url)
        assert not (tmp_path / "cache" / "ml-100k" / "raw" / "u.data").exists()
        # the same download path with the right md5 unpacks into raw/ and reads it
        real = RECIPES["ml-100k"]
        md5 = hashlib.md5(archive).hexdigest()
        pinned = Recipe(real.folder, real.layouts,
                        (Download(f"{url}/ml-100k.zip", "ml-100k.zip", md5=md5,
                                  unzip_to="raw"),))
        monkeypatch.setitem(RECIPES, "ml-100k", pinned)
        ds = load_dataset("ml-100k", tmp_path / "data")
    assert counts(ds) == (2, 1, 2)
    assert (tmp_path / "cache" / "ml-100k" / "raw" / "README").read_text() == "fake"


def test_lastfm_from_a_mirror(data_dir: Path, tmp_path: Path) -> None:
    """The real file, served locally, passes the pinned sha256 end to end."""
    folder = data_dir / "lastfm"
    if not (folder / "LastFM.txt").is_file():
        pytest.skip("lastfm not available")
    with serve(folder) as url:
        ds = load_dataset("lastfm", tmp_path / "empty", base_url=url)
    assert counts(ds) == (1090, 3646, 52_551)
    assert ds.log[0]["folder"] == str(tmp_path / "cache" / "lastfm")


def test_ml1m_ratings_layout_applies_five_core(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    rows = [f"{u}::{i}::4::{100 * u + i}" for u in range(1, 7) for i in range(1, 6)]
    rows.append("1::99::5::1")  # item 99 has a single rating: the 5-core drops it
    (folder / "ratings.dat").write_text("\n".join(rows) + "\n")
    ds = load_dataset("ml-1m", tmp_path, download=False)
    assert ds.order == "timestamp"
    assert counts(ds) == (6, 5, 30)
    assert ds.log[-1]["step"] == "k_core" and ds.log[-1]["dropped"] == 1


def test_fetch_requires_a_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum is required"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x")
