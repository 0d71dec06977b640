"""Bundles: export from a run, round trip, and refusal of corrupted or partial folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.splits import Split
from genrec.models.registry import load_model
from genrec.serving import BundleError, export_bundle, export_run, load_bundle, verify_bundle
from genrec.testing.fixtures import tiny_dataset


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def test_export_run_keeps_model_ids_and_histories(bundles) -> None:
    b = load_bundle(bundles.ease)
    assert b.name == "ease" and b.manifest["dataset"] == "ml-100k"
    assert (b.n_users, b.n_items) == (943, 1682)
    assert b.titles[b.item_index["50"]] == "Star Wars"
    assert "Sci-Fi" in b.categories[b.item_index["50"]]
    sp = Split.load(bundles.run / "split")
    known = sp.train.concat(sp.valid)
    # Served histories are train + valid of the run's split, in the same order.
    np.testing.assert_array_equal(b.hist_items, known.items)
    np.testing.assert_array_equal(b.popularity, known.item_counts())
    # The bundled model scores exactly like the run's saved model.
    saved = load_model(bundles.run / "models" / "ease")
    h = known.histories(np.arange(5))
    torch.testing.assert_close(b.model.score(h), saved.score(h))


def test_manifest_lists_every_file_with_sha256(bundles) -> None:
    m = verify_bundle(bundles.ease)
    on_disk = {p.relative_to(bundles.ease).as_posix() for p in bundles.ease.rglob("*")
               if p.is_file()} - {"manifest.json"}
    assert set(m["files"]) == on_disk
    assert all(len(v["sha256"]) == 64 for v in m["files"].values())
    assert m["split"]["kind"] == "leave_one_out"


def test_truncated_state_is_refused(bundles, tmp_path) -> None:
    b = _copy(bundles.ease, tmp_path)
    f = b / "model" / "state.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated or altered"):
        load_bundle(b)


def test_altered_byte_is_refused(bundles, tmp_path) -> None:
    b = _copy(bundles.ease, tmp_path)
    f = b / "model" / "state.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)


@pytest.mark.parametrize("rel", ["items.parquet", "model/config.json", "histories.parquet"])
def test_missing_file_is_refused(bundles, tmp_path, rel) -> None:
    b = _copy(bundles.pop, tmp_path)
    (b / rel).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(b)


def test_manifest_problems_are_refused(bundles, tmp_path) -> None:
    b = _copy(bundles.pop, tmp_path)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(b)
    m = verify_bundle(bundles.pop)
    m["files"]["../outside"] = {"sha256": "0" * 64, "bytes": 1}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(b)


def _rehash(b: Path, extra: dict[str, Path]) -> None:
    """List ``extra`` (manifest name -> file) in ``b``'s manifest with their true hashes."""
    import hashlib

    m = json.loads((b / "manifest.json").read_text())
    for rel, f in extra.items():
        data = f.read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("rel", ["x/../../../escaped.pth", "x/payload", "/abs/payload",
                                 "./payload", "a//payload", "a\\payload"])
def test_manifest_names_only_plain_files_of_the_bundle(bundles, tmp_path, monkeypatch,
                                                       rel) -> None:
    # A link inside the bundle (x -> d/e/f) once let `x/../../../NAME` pass a check on the
    # resolved path while the snapshot copy went to the unresolved one, outside the snapshot.
    b = _copy(bundles.pop, tmp_path)
    (b / "d/e/f").mkdir(parents=True)
    (b / "d/e/f/payload").write_text("x")
    (b / "x").symlink_to("d/e/f")
    (b / "escaped.pth").write_text("import os\n")
    (b / "payload").write_text("x")
    target = {"x/../../../escaped.pth": b / "escaped.pth", "x/payload": b / "d/e/f/payload"}
    _rehash(b, {rel: target.get(rel, b / "payload")})
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(b)
    assert not (tmp_path / "escaped.pth").exists() and not list(tmp.rglob("escaped.pth"))


def test_verified_but_inconsistent_bundle_is_a_bundle_error(bundles, tmp_path) -> None:
    # Hashes match (re-made after the edit), but items.parquet lacks a column the loader
    # needs: a BundleError (a reload answers 409 and keeps the old model), not a raw error.
    b = _copy(bundles.pop, tmp_path)
    pl.read_parquet(b / "items.parquet").drop("title").write_parquet(b / "items.parquet")
    _rehash(b, {"items.parquet": b / "items.parquet"})
    verify_bundle(b)
    with pytest.raises(BundleError, match="cannot be loaded: ColumnNotFoundError"):
        load_bundle(b)


def test_bare_model_folder_gets_a_hint(bundles) -> None:
    with pytest.raises(BundleError, match="genrec export"):
        load_bundle(bundles.run / "models" / "ease")


def test_export_is_atomic_and_refuses_to_clobber(bundles, tmp_path) -> None:
    dest = tmp_path / "b"
    export_run(bundles.run, dest, model="pop")
    with pytest.raises(FileExistsError):
        export_run(bundles.run, dest, model="pop")
    export_run(bundles.run, dest, model="pop", overwrite=True, name="popular")
    assert load_bundle(dest).name == "popular"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folders left behind
    # overwrite replaces an earlier bundle only: never someone's folder or the run itself
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for target in (notes, bundles.run):
        with pytest.raises(FileExistsError, match="not a bundle"):
            export_run(bundles.run, target, model="pop", overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine"
    assert (bundles.run / "results.json").is_file()


def test_export_run_needs_a_model_choice(bundles, tmp_path) -> None:
    with pytest.raises(ValueError, match="choose one"):
        export_run(bundles.run, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="not found"):
        export_run(bundles.run, tmp_path / "x", model="sasrec")
    with pytest.raises(FileNotFoundError, match="not a genrec run"):
        export_run(tmp_path, tmp_path / "x")


def test_export_bundle_from_objects(tmp_path) -> None:
    from genrec.models import EASE

    ds = tiny_dataset()
    ds.items = pl.DataFrame({"item": np.arange(ds.n_items), "title": [f"T{i}" for i in
                                                                      range(ds.n_items)],
                             "genres": ["a|b", None, "b", "c", "a", "b", "c", "a", "b", "c"]})
    model = EASE(l2=1.0).fit(ds.interactions)
    b = load_bundle(export_bundle(model, ds, tmp_path / "tiny"))
    assert b.titles[0] == "T0" and b.categories[0] == ["a", "b"] and b.categories[1] == []
    assert b.user_ids == ds.user_map.raw.to_list()
    with pytest.raises(ValueError, match="id space|users"):
        other = EASE(l2=1.0).fit(ds.subset(ds.interactions.frame.filter(
            pl.col("user") < 3)).interactions)
        export_bundle(other, ds, tmp_path / "bad")
