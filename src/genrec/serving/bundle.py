"""Servable model bundles: a fitted model plus everything needed to answer with raw ids.

A bundle is a folder::

    manifest.json        format, name, model kind, dataset, sizes, split, sha256 of every file
    model/               config.json, meta.json, state.safetensors (``Recommender.save``)
    users.parquet        ``user``: raw user ids in dense-id order
    items.parquet        ``item`` (raw id), ``title``, ``categories`` (list), ``popularity``
    histories.parquet    ``user``, ``item`` (dense ids), chronological within each user: what
                         the model may use as a known user's history (train + valid of a split)
    ann.faiss            optional: approximate-retrieval index over the item vectors
                         (:mod:`genrec.serving.ann`; settings in the manifest's ``ann``)
    signature.json       optional: HMAC or Ed25519 signature of manifest.json
                         (:mod:`genrec.serving.signing`)

Everything is JSON, Parquet or safetensors: loading a bundle never executes stored code.
:func:`load_bundle` checks every file against the manifest first and refuses a corrupted or
partial folder with :class:`BundleError`. Bundles are written to a temporary sibling folder
and renamed into place, so a reader never sees a half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec import __version__
from genrec._io import atomic_write_parquet, atomic_write_text, fsync_dir, replace_dir
from genrec.data.interactions import Columns, Dataset, Interactions
from genrec.models.base import DotProductModel, Recommender
from genrec.models.registry import load_model
from genrec.runs.experiment import open_saved_model
from genrec.serving.ann import ANN_FILE, AnnConfig, ItemIndex
from genrec.serving.signing import (
    SIGNATURE_FILE,
    BundleSigner,
    SignatureError,
    SignatureVerifier,
)

__all__ = ["BUNDLE_FORMAT", "Bundle", "BundleError", "export_bundle", "export_run",
           "load_bundle", "verify_bundle"]

_log = logging.getLogger(__name__)

BUNDLE_FORMAT = "genrec-bundle/1"
"""Value of ``manifest.json``'s ``format`` field written by this version."""

_MANIFEST = "manifest.json"
_CATEGORY_COLUMNS = ("categories", "genres", "category")


class BundleError(ValueError):
    """A folder is not a valid bundle: missing, partial, corrupted or inconsistent."""


@dataclass
class Bundle:
    """A loaded, verified bundle.

    Attributes:
        name: Name the model is served under.
        path: Folder it was loaded from (None if built in memory).
        model: The fitted model.
        manifest: The manifest's content.
        user_ids: Raw user id of each dense user id.
        item_ids: Raw item id of each dense item id.
        titles: Title of each item (its raw id when the dataset has no titles).
        categories: Categories of each item (possibly empty).
        popularity: Interactions per item in the stored histories, shape ``(n_items,)``.
        hist_indptr: Row pointers of the stored histories, shape ``(n_users + 1,)``.
        hist_items: Dense item ids of all stored histories, oldest first per user.
        ann: Approximate-retrieval index over the item vectors (None: exact scoring).
    """

    name: str
    path: Path | None
    model: Recommender[Any]
    manifest: dict[str, Any]
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    categories: list[list[str]]
    popularity: np.ndarray
    hist_indptr: np.ndarray
    hist_items: np.ndarray
    ann: ItemIndex | None = None
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {u: i for i, u in enumerate(self.item_ids)}

    @property
    def n_users(self) -> int:
        """Number of known users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Size of the item catalogue."""
        return len(self.item_ids)

    def history(self, user: int) -> np.ndarray:
        """Stored history of dense user ``user``, oldest first."""
        return self.hist_items[self.hist_indptr[user]:self.hist_indptr[user + 1]]


# -- writing ---------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _item_table(dataset: Dataset, popularity: np.ndarray) -> pl.DataFrame:
    """Raw id, title, categories and popularity of every item, in dense-id order."""
    n = dataset.n_items
    raw = dataset.item_map.raw
    titles = raw.clone()
    cats = pl.Series("categories", [[] for _ in range(n)], dtype=pl.List(pl.String))
    feats = dataset.items
    if not feats.is_empty() and Columns.item in feats.columns:
        full = pl.DataFrame({Columns.item: np.arange(n, dtype=np.int64)}).join(
            feats.with_columns(pl.col(Columns.item).cast(pl.Int64)), on=Columns.item,
            how="left", maintain_order="left")
        if "title" in full.columns:
            t = full["title"].cast(pl.String)
            titles = pl.Series("title", [x if x else r for x, r in zip(t, raw, strict=True)],
                               dtype=pl.String)
        col = next((c for c in _CATEGORY_COLUMNS if c in full.columns), None)
        if col is not None:
            c = full[col]
            if c.dtype == pl.String:
                c = c.str.split("|")
            cats = c.cast(pl.List(pl.String)).fill_null([])
    return pl.DataFrame({"item": raw, "title": titles.alias("title"),
                         "categories": cats.alias("categories"),
                         "popularity": popularity.astype(np.int64)})


def export_bundle(model: Recommender[Any], dataset: Dataset, dest: str | Path, *,
                  histories: Interactions | None = None, name: str | None = None,
                  extra: dict[str, Any] | None = None, overwrite: bool = False,
                  signer: BundleSigner | None = None,
                  ann: AnnConfig | ItemIndex | None = None) -> Path:
    """Write a servable bundle of ``model`` fitted on ``dataset``'s id space.

    Args:
        model: A fitted model whose item (and user) ids are ``dataset``'s dense ids.
        dataset: Gives the id maps and the item features (``title``, ``categories`` or
            ``genres``).
        dest: Folder to create.
        histories: Known users' histories and the popularity counts; use the training part
            of a split (train + valid) so that served histories match what the model saw.
            Defaults to all of ``dataset``'s interactions.
        name: Name to serve the model under (defaults to the model's kind).
        extra: More JSON metadata to keep in the manifest (e.g. the split recipe).
        overwrite: Replace an existing ``dest``.
        signer: Sign the manifest (``signature.json``) with this key.
        ann: Approximate retrieval: with ``kind`` other than ``exact`` and at least
            ``min_items`` items, an index over the model's item vectors is built and saved
            (``ann.faiss``); the settings are kept in the manifest either way. An
            :class:`~genrec.serving.ann.ItemIndex` already built from this model's item
            vectors is saved as it is, with its config.

    Returns:
        ``dest``.

    Raises:
        ValueError: If the model and the dataset disagree on the id space, or an index is
            asked for a model whose scores are not dot products.
        FileExistsError: If ``dest`` exists and ``overwrite`` is false.
    """
    dest = Path(dest)
    hist = dataset.interactions if histories is None else histories
    n_items = getattr(model, "n_items_", None)
    if n_items is None:
        raise ValueError("export_bundle: the model is not fitted")
    if (n_items, model.n_users_) != (dataset.n_items, dataset.n_users):
        raise ValueError(f"export_bundle: model has {model.n_users_} users and {n_items} items, "
                         f"dataset {dataset.name!r} has {dataset.n_users} and {dataset.n_items}")
    if (hist.n_users, hist.n_items) != (dataset.n_users, dataset.n_items):
        raise ValueError("export_bundle: histories use another id space than the dataset")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists (pass overwrite=True / --overwrite to replace it)")
    if dest.exists() and not (dest.is_dir() and ((dest / _MANIFEST).is_file()
                                                 or not any(dest.iterdir()))):
        # overwrite replaces an earlier bundle, never a run folder or someone's files
        raise FileExistsError(f"{dest} exists and is not a bundle (no {_MANIFEST}): "
                              "overwrite replaces only an earlier bundle; choose another path")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model.save(tmp / "model")
        ann_meta = None
        if ann is not None:
            given = ann if isinstance(ann, ItemIndex) else None
            cfg = ann.config if isinstance(ann, ItemIndex) else ann
            built = given is not None or (cfg.kind != "exact" and n_items >= cfg.min_items)
            if cfg.kind != "exact" and not isinstance(model, DotProductModel):
                raise ValueError(f"export_bundle: ann.kind={cfg.kind!r} needs a dot-product "
                                 f"model; {model.config.kind} is not one")
            if given is not None and given.n_items != n_items:
                raise ValueError(f"export_bundle: the index has {given.n_items} items, the "
                                 f"model {n_items}")
            ann_meta = cfg.model_dump() | {"built": built}
            if built:
                vectors = None if given else model.item_vectors()  # type: ignore[attr-defined]
                index = given or ItemIndex.build(vectors, cfg)
                index.save(tmp / ANN_FILE)
                ann_meta["max_norm"] = index.max_norm
        atomic_write_parquet(pl.DataFrame({"user": dataset.user_map.raw}), tmp / "users.parquet")
        atomic_write_parquet(_item_table(dataset, hist.item_counts()), tmp / "items.parquet")
        atomic_write_parquet(hist.frame.select(Columns.user, Columns.item),
                             tmp / "histories.parquet")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name or model.config.label,
            "model_kind": model.config.kind,
            "dataset": dataset.name,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "history_interactions": len(hist),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "genrec_version": __version__,
            **(extra or {}),
            **({"ann": ann_meta} if ann_meta is not None else {}),
            "files": {p.relative_to(tmp).as_posix(): {"sha256": _sha256(p),
                                                       "bytes": p.stat().st_size}
                      for p in files},
        }
        atomic_write_text(tmp / _MANIFEST, json.dumps(manifest, indent=2))
        if signer is not None:
            signer.sign_folder(tmp)
        fsync_dir(tmp / "model")
        fsync_dir(tmp)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.info("wrote bundle %s (%s on %s, %d files)", dest, manifest["name"], dataset.name,
              len(files))
    return dest


def export_run(run_dir: str | Path, dest: str | Path, *, model: str | None = None,
               data_dir: str | None = None, name: str | None = None,
               overwrite: bool = False, signer: BundleSigner | None = None,
               ann: AnnConfig | None = None) -> Path:
    """Bundle one model of a ``genrec run`` output folder.

    The dataset is reloaded and preprocessed as the run's ``config.yaml`` says, checked
    against the saved split's fingerprint, and the bundle's histories are the split's
    train + valid interactions.

    Args:
        run_dir: The run's output folder (holds ``config.yaml``, ``split/``, ``models/``).
        dest: Bundle folder to create.
        model: Model kind under ``models/``; may be omitted when the run saved one model.
        data_dir: Overrides ``dataset.data_dir`` of the run's config.
        name: Name to serve the model under.
        overwrite: Replace an existing ``dest``.
        signer: Sign the bundle with this key.
        ann: Approximate-retrieval settings (see :func:`export_bundle`).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: If the run folder lacks the config, split or model.
        ValueError: If ``model`` is ambiguous or the dataset no longer matches the split.
    """
    saved = open_saved_model(run_dir, model, data_dir=data_dir)
    ds, sp, fitted = saved.data.dataset, saved.data.split, saved.model
    return export_bundle(fitted, ds, dest, histories=sp.train.concat(sp.valid), name=name,
                         extra={"split": sp.config.model_dump(), "run": str(saved.path.resolve())},
                         overwrite=overwrite, signer=signer, ann=ann)


# -- reading ---------------------------------------------------------------------------------
def verify_bundle(path: str | Path, *, verifier: SignatureVerifier | None = None
                  ) -> dict[str, Any]:
    """Check that ``path`` is a complete, unaltered bundle.

    Args:
        path: The bundle folder.
        verifier: Also require a valid signature made with this key.

    Returns:
        The manifest.

    Raises:
        BundleError: If the manifest is missing or unreadable, or a listed file is missing,
            has another size or another sha256, or the signature is required and bad.
    """
    return _verify(Path(path), None, verifier)


def _verify(path: Path, snapshot: Path | None, verifier: SignatureVerifier | None = None
            ) -> dict[str, Any]:
    """:func:`verify_bundle`; with ``snapshot``, also copy each file there while hashing it."""
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    mpath = path / _MANIFEST
    if not mpath.is_file():
        hint = (" (this looks like a bare model folder: make a bundle with "
                "`genrec export RUN_DIR --model KIND --out DIR`)"
                if (path / "config.json").is_file() else "")
        raise BundleError(f"{path}: not a genrec bundle, {_MANIFEST} is missing{hint}")
    raw = mpath.read_bytes()  # read once: the bytes verified are the bytes used
    if verifier is not None:
        spath = path / SIGNATURE_FILE
        try:
            verifier.verify(raw, spath.read_bytes() if spath.is_file() else None)
        except SignatureError as e:
            raise BundleError(f"{path}: {e}") from e
    try:
        manifest = json.loads(raw.decode("utf-8"))
        files = manifest["files"]
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: unreadable manifest ({e})") from e
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {fmt!r} (expected {BUNDLE_FORMAT})")
    required = {"model/config.json", "model/meta.json", "model/state.safetensors",
                "users.parquet", "items.parquet", "histories.parquet"}
    if not isinstance(files, dict) or not required <= set(files):
        raise BundleError(f"{path}: manifest does not list {sorted(required - set(files or {}))}")
    root = path.resolve()
    for rel, info in files.items():
        f = _member(path, root, rel)
        if f is None or not isinstance(info, dict):
            raise BundleError(f"{path}: manifest names a file outside the bundle: {rel!r}")
        if not f.is_file():
            raise BundleError(f"{path}: {rel} is missing (partial bundle)")
        size = f.stat().st_size
        if size != info.get("bytes"):
            raise BundleError(f"{path}: {rel} has {size} bytes, manifest says {info.get('bytes')} "
                              "(truncated or altered)")
        h = hashlib.sha256()
        out = None
        if snapshot is not None:
            (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
            out = open(snapshot / rel, "wb")  # noqa: SIM115 - closed below
        try:
            with open(f, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
        finally:
            if out is not None:
                out.close()
        if h.hexdigest() != info.get("sha256"):
            raise BundleError(f"{path}: {rel} does not match its sha256 in the manifest (altered)")
    return manifest


def _member(path: Path, root: Path, rel: object) -> Path | None:
    """The file ``rel`` of the bundle at ``path`` (resolved: ``root``), or None if ``rel`` is
    not a plain relative path inside it.

    A member is a relative POSIX path of plain names: no absolute path, no ``..``, ``.``
    or empty part, no backslash, and no symbolic link on the way (the file and the path the
    snapshot copy is written to must be the same, so a link inside the bundle cannot steer a
    copy out of the snapshot folder).
    """
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    lexical = root.joinpath(*parts)
    f = (path / rel).resolve()
    return f if f == lexical and root in f.parents else None


def load_bundle(path: str | Path, *, name: str | None = None,
                verifier: SignatureVerifier | None = None) -> Bundle:
    """Verify and load a bundle.

    The files are hashed while being copied to a private snapshot, and loaded from that
    snapshot: what is loaded is exactly what was verified, even if the folder changes
    meanwhile, and a served model never depends on the folder's files afterwards (the
    safetensors loader maps files into memory; a bundle file truncated in place would
    otherwise crash the server with SIGBUS).

    Args:
        path: The bundle folder.
        name: Serve under this name instead of the manifest's.
        verifier: Require a valid signature made with this key.

    Returns:
        The bundle.

    Raises:
        BundleError: If verification fails or the files disagree with each other.
    """

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="genrec-bundle-") as tmp:
        snap = Path(tmp)
        manifest = _verify(path, snap, verifier)
        try:
            model = load_model(snap / "model")
            users = pl.read_parquet(snap / "users.parquet")["user"].cast(pl.String).to_list()
            items = pl.read_parquet(snap / "items.parquet")
            hist = pl.read_parquet(snap / "histories.parquet")
            index = None
            if isinstance(manifest.get("ann"), dict) and ANN_FILE in manifest["files"]:
                meta = dict(manifest["ann"])
                meta.pop("built", None)
                max_norm = float(meta.pop("max_norm"))
                index = ItemIndex.load(snap / ANN_FILE, AnnConfig.model_validate(meta),
                                       max_norm)
            n_users, n_items = len(users), items.height
            if (model.n_users_, model.n_items_) != (n_users, n_items):
                raise BundleError(f"{path}: model has {model.n_users_} users / "
                                  f"{model.n_items_} items, id maps have {n_users} / {n_items}")
            if index is not None and (index.n_items != n_items
                                      or not isinstance(model, DotProductModel)):
                raise BundleError(f"{path}: {ANN_FILE} indexes {index.n_items} items of a "
                                  f"{model.config.kind} model with {n_items} items")
            u = hist["user"].to_numpy().astype(np.int64)
            it = hist["item"].to_numpy().astype(np.int64)
            if len(u) and (u.min() < 0 or u.max() >= n_users or it.min() < 0
                           or it.max() >= n_items):
                raise BundleError(f"{path}: histories.parquet has ids outside the id maps")
            order = np.argsort(u, kind="stable")  # written sorted; keep each user's order
            indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=n_users))])
            return Bundle(
                name=name or str(manifest.get("name") or manifest.get("model_kind")),
                path=path, model=model, manifest=manifest, user_ids=users,
                item_ids=items["item"].cast(pl.String).to_list(),
                titles=items["title"].cast(pl.String).to_list(),
                categories=[list(c) for c in items["categories"].to_list()],
                popularity=items["popularity"].to_numpy().astype(np.int64),
                hist_indptr=indptr.astype(np.int64), hist_items=it[order], ann=index,
            )
        except BundleError:
            raise
        except Exception as e:  # any other inconsistency of a verified bundle: refuse it
            raise BundleError(f"{path}: cannot be loaded: {type(e).__name__}: {e}") from e
