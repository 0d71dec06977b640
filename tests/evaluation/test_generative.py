"""Generative risks reach the report: `genrec compare --models ease,tiger` on ML-100K, and the
decoding risks of a tiny TIGER through the one definition of every rate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.interactions import Histories
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.generative import beam_risks, decoding_risks, is_generative, sample_users
from genrec.semantic_ids import BeamResult, PrefixTrie, beam_search

TINY_TIGER_YAML = """
dataset:
  name: ml-100k
  preprocess: {dedup: first, max_history_length: 20}
protocol: {cutoffs: [5, 10], valid_metric: ndcg@10}
models:
  - kind: tiger
    item_vectors: text
    text: {encoder: "hashing:64"}
    tokenizer: {kind: rqkmeans, n_levels: 2, codebook_size: 32, n_iter: 10}
    max_len: 8
    dim: 16
    n_layers: 1
    n_heads: 2
    ff_dim: 32
    dropout: 0.0
    beam_size: 20
    exclude_history: true
    train: {epochs: 1, batch_size: 2048, lr: 0.003, device: cpu, progress: false}
"""


class _Beams:
    """A stand-in generator: fixed beams, one empty (score -inf), one code that is no item."""

    def generate(self, histories: Histories, *, beam_size: int | None = None,
                 constrained: bool = True):
        items = torch.tensor([[2, 0, -1], [1, -1, 3]])
        scores = torch.tensor([[-1.0, -2.0, float("-inf")], [-1.0, -2.0, -3.0]])
        if constrained:
            items, scores = items.clone(), scores.clone()
            items[1, 1], scores[1, 1] = -1, float("-inf")   # the trie closes that beam
        return BeamResult(torch.zeros(2, 3, 2, dtype=torch.long), scores, items)


def test_decoding_risks_count_live_beams_only() -> None:
    cat = Catalogue(pl.DataFrame({"item": [0, 1, 2, 3], "title": ["a", "b", "c", "d"]}))
    hist = Histories.from_lists([[0], [3]], 4, users=[5, 6])
    assert is_generative(_Beams()) and not is_generative(object())
    free = decoding_risks(_Beams(), hist, cat, constrained=False)
    # 5 live beams; one is no item; two are in the user's history (0 for user 5, 3 for 6).
    assert (free["users"], free["beam_size"], free["entries"]) == (2, 3, 5)
    assert free["invalid_items"] == 1 and free["hallucination_rate"] == pytest.approx(1 / 5)
    assert free["duplicate_rate"] == 0 and free["policy_violation_rate"] == pytest.approx(2 / 5)
    kept = decoding_risks(_Beams(), hist, cat, constrained=True)
    assert kept["entries"] == 4 and kept["invalid_items"] == 0  # empty beams are not emitted


def test_sample_users_is_seeded_and_capped() -> None:
    hist = Histories.from_lists([[i, i + 1] for i in range(10)], 12, users=list(range(10)))
    a, b = sample_users(hist, 4, seed=1), sample_users(hist, 4, seed=1)
    assert len(a) == 4 and a.users.tolist() == b.users.tolist() == sorted(a.users.tolist())
    for r, u in enumerate(a.users):
        assert a.items[a.indptr[r]:a.indptr[r + 1]].tolist() == [u, u + 1]
    assert sample_users(hist, None, 0) is hist and sample_users(hist, 10, 0) is hist


@pytest.mark.slow
def test_compare_with_tiger_writes_the_generative_risk_section(data_dir: Path,
                                                              tmp_path: Path) -> None:
    cfg = tmp_path / "tiger.yaml"
    cfg.write_text(TINY_TIGER_YAML)
    out = tmp_path / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost on a busy machine
    try:
        res = CliRunner().invoke(app, [
            "compare", str(cfg), "--models", "ease,tiger", "--data-dir", str(data_dir),
            "--output", str(out), "--n-boot", "50", "--quiet", "--set", "save_models=false"])
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    risks = json.loads((out / "holistic" / "risks.json").read_text())
    assert set(risks) == {"tiger (constrained)", "tiger (unconstrained)"}  # EASE decodes none
    kept, free = (risks[f"tiger ({d})"]["rates"] for d in ("constrained", "unconstrained"))
    assert kept["users"] == 943 and kept["entries"] > 0
    assert kept["invalid_items"] == 0 and kept["hallucination_rate"] == 0.0
    assert free["entries"] > 0 and 0.0 <= free["hallucination_rate"] <= 1.0
    assert free["invalid_items"] == round(free["hallucination_rate"] * free["entries"])
    assert "all 943 test users" in risks["tiger (constrained)"]["protocol"]
    row = {r["model"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert "generative_risks" in row["tiger"] and "generative_risks" not in row["ease"]
    assert row["tiger"]["generative_risks"]["constrained"]["invalid_items"] == 0

    md = (out / "report.md").read_text()
    assert "## Generative risks" in md
    section = md.split("## Generative risks")[1]
    assert "Protocol. tiger (constrained): all 943 test users" in section
    header = next(ln for ln in section.splitlines() if ln.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
             for ln in section.splitlines() if ln.startswith("| tiger")}
    kept_row, free_row = cells["tiger (constrained)"], cells["tiger (unconstrained)"]
    assert kept_row[cols.index("invalid_items")] == "0"
    assert float(kept_row[cols.index("hallucination_rate")]) == 0.0
    rate = free_row[cols.index("hallucination_rate")]
    assert re.fullmatch(r"\d\.\d{4}", rate) and float(rate) == pytest.approx(
        free["hallucination_rate"], abs=5e-5)
    html = (out / "report.html").read_text()
    assert "<h2>Generative risks</h2>" in html and "tiger (unconstrained)" in html
    assert np.isfinite(free["duplicate_rate"])


def test_beam_risks_match_the_trie_lookup_of_a_real_beam_search() -> None:
    """The one definition on real beams: unconstrained search over every code of a toy trie
    emits each of the 5 items once and every other code as a hallucination."""
    codes = np.array([[0, 0], [0, 1], [1, 0], [2, 1], [2, 2]])
    trie = PrefixTrie.from_codes(codes, [3, 3])
    torch.manual_seed(0)
    table = torch.randn(2, 3, 3).log_softmax(-1)

    def log_probs(prefix: torch.Tensor) -> torch.Tensor:
        return table[:, None, prefix.shape[-1]].expand(-1, prefix.shape[1], -1)

    cat = Catalogue(pl.DataFrame({"item": list(range(5))}), 5)
    free = beam_risks(beam_search(log_probs, trie, 2, 9, constrained=False), cat)
    assert free["entries"] == 18 and free["hallucination_rate"] == pytest.approx(4 / 9)
    kept = beam_risks(beam_search(log_probs, trie, 2, 9), cat)
    assert kept["entries"] == 10 and kept["invalid_items"] == 0  # 4 empty beams per user
