"""Under torchrun every process runs the experiment; only rank 0 writes the results folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.runs.experiment import run_experiment


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_zero_writes(rank: str, data_dir: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", rank)
    out = tmp_path / "run"
    results = run_experiment(load_config(None, [f"dataset.data_dir={data_dir}",
                                                f"output={out}", "protocol.cutoffs=[10]"],
                                         models=["pop"]))
    assert results["results"][0]["test"]["ndcg@10"] > 0  # every rank computes the results
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if rank == "0":
        assert {"results.json", "results.md", "config.yaml", "split", "models"} <= set(written)
    else:
        assert written == []
