"""SAE concepts in explanations: active latents of a user's SASRec state, catalogue-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.recipes import load_dataset
from genrec.evaluation.catalogue import Attribute, Catalogue
from genrec.evaluation.concepts import LatentConcept
from genrec.llm.sae_concepts import SAEConcepts, fit_or_load_sae
from genrec.models.base import FitContext
from genrec.models.sasrec import SASRec
from genrec.training import TrainConfig


@pytest.fixture(scope="module")
def sasrec(ml100k, tmp_path_factory: pytest.TempPathFactory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    sp = ml100k["split"]
    model = SASRec(dim=16, max_len=20, n_heads=1, n_layers=1, dropout=0.1,
                   train=TrainConfig(epochs=2, batch_size=128, lr=3e-3, device="cpu",
                                     progress=False, patience=None)
                   ).fit(sp.train, FitContext(seed=0))
    path = tmp_path_factory.mktemp("sae") / "sae"
    sae = fit_or_load_sae(path, model, sp.train, epochs=2, n_latents=64, k=4)
    yield {**ml100k, "model": model, "ease": ml100k["model"], "sae": sae, "path": path}
    torch.set_num_threads(before)


@pytest.mark.slow
def test_active_concepts_are_catalogue_attributes_checked_per_item(sasrec) -> None:
    cat, sp, te = sasrec["catalog"], sasrec["split"], sasrec["test"]
    # a second call loads the saved SAE instead of fitting a new one
    again = fit_or_load_sae(sasrec["path"], sasrec["model"], sp.train)
    x = torch.randn(4, 16)
    assert torch.allclose(again.encode(x), sasrec["sae"].encode(x))
    sc = SAEConcepts.build(sasrec["model"], sasrec["sae"], sp.train, cat)
    assert sc.labels, "no latent got a catalogue label"
    n_users = 0
    for row in range(20):
        hist = te.histories.items[te.histories.indptr[row]: te.histories.indptr[row + 1]]
        items = sasrec["model"].recommend(te.histories.slice(row, row + 1), 5).items[0].tolist()
        got = sc.active(hist.tolist(), items, top=5)
        n_users += bool(got)
        acts = [c.activation for c in got]
        assert acts == sorted(acts, reverse=True) and all(a > 0 for a in acts)
        assert len({c.concept for c in got}) == len(got)
        for c in got:
            a = Attribute.from_key(c.concept)
            assert a in cat.attr_index  # a cited concept is an attribute value of the catalogue
            for i, status in c.items.items():
                # grounded exactly when the item's metadata has that value
                has = a.value in cat.values(i, a.field)
                assert (status == "grounded") == has
    assert n_users > 0


@pytest.mark.slow
def test_labels_that_are_no_catalogue_value_are_never_cited(sasrec) -> None:
    cat, te = sasrec["catalog"], sasrec["test"]
    hist = te.histories.items[: te.histories.indptr[1]].tolist()
    fake = ["brand=No Such Brand", "price=$1.00-$2.00", "title=lovely", "genres=Spaghetti Opera"]
    labels = [LatentConcept(j, fake[j % len(fake)], 0.9, 0.1, 9.0, 5, 1.0, 2.0, [])
              for j in range(sasrec["sae"].config.n_latents)]
    sc = SAEConcepts(sasrec["model"], sasrec["sae"], cat, labels)
    assert sc.active(hist, top=5) == []
    assert sc.rejected_ and set(sc.rejected_) <= set(fake)
    real = next(a for a in cat.vocab if a.field == "genres")
    assert sc.attribute(real.key) == real and sc.attribute("genres") is None
    with pytest.raises(ValueError, match="sequential"):
        SAEConcepts(sasrec["ease"], sasrec["sae"], cat, [])


@pytest.mark.slow
def test_cli_explain_shows_checked_concepts(data_dir: Path, tmp_path: Path) -> None:
    args = ["explain", "--dataset", "ml-100k", "--model", "sasrec", "--data-dir", str(data_dir),
            "--output", str(tmp_path / "run"), "--k", "3", "--sae", str(tmp_path / "sae"),
            "--sae-epochs", "1", "--set", "models.0.dim=16", "--set", "models.0.max_len=20",
            "--set", "models.0.n_layers=1", "--set", "models.0.train.epochs=2",
            "--set", "models.0.train.device=cpu", "--set", "models.0.train.progress=false",
            "--set", "save_models=false", "--set", "checkpoints=false"]
    r = CliRunner().invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("["):])
    assert len(out) == 3 and (tmp_path / "sae" / "config.json").is_file()
    cat = Catalogue.from_dataset(load_dataset("ml-100k", data_dir=data_dir, download=False))
    for e in out:
        assert "sae_concepts" in e
        for c in e["sae_concepts"]:
            assert Attribute.from_key(c["concept"]) in cat.attr_index
            assert c["status"] in ("grounded", "contradicted", "unsupported")
    text = CliRunner().invoke(app, args)  # loads the SAE saved by the first run
    assert text.exit_code == 0, text.output
    assert "Model concepts for this user (RecSAE latents, catalogue-checked):" in text.output
