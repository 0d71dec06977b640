"""The LLM commands of the CLI on ml-100k (no LLM, and against a live tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genrec.cli import app

runner = CliRunner()


def test_simulate_writes_results(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["simulate", "--dataset", "ml-100k", "--model", "pop", "--turns", "3",
                            "--users", "20", "--output", str(tmp_path), "--data-dir",
                            str(data_dir), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "simulation.json").read_text())
    # The output is a run folder: the candidate's results under the protocol, like genrec run.
    run = json.loads((tmp_path / "results.json").read_text())
    assert run["results"][0]["model"] == "pop" and res["candidate"] == run["results"][0]
    assert res["protocol_text"] == run["protocol_text"]
    for key in ("with_critiques", "without_critiques"):
        m = res[key]
        assert m["users"] == 20 and len(m["recall"]["@10"]) == 3
        assert 0 <= m["success_rate"] <= 1
    assert "success@3" in r.output


def test_explain_and_chat(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["explain", "--dataset", "ml-100k", "--model", "pop", "--k", "2",
                            "--data-dir", str(data_dir), "--json",
                            "--output", str(tmp_path / "explain")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("["):])
    assert len(out) == 2 and all(e["grounding"]["ok"] for e in out)
    state = tmp_path / "s.json"
    blocker = tmp_path / "a-file"  # /save under a file: its folder cannot be made
    blocker.write_text("x")
    r = runner.invoke(app, ["chat", "--dataset", "ml-100k", "--model", "pop", "--k", "3",
                            "--data-dir", str(data_dir), "--state", str(state),
                            "--output", str(tmp_path / "chat")],
                      input=f"No Drama, please\n/state\n/save {blocker}/s.json\n"
                            "/quit\n")
    assert r.exit_code == 0, r.output  # a failed /save is reported and the talk goes on
    assert "not saved" in r.output
    assert "Got it: no Drama" in r.output and json.loads(state.read_text())["turn"] == 2
    r = runner.invoke(app, ["chat", "--dataset", "ml-100k", "--model", "pop", "--k", "3",
                            "--data-dir", str(data_dir), "--state", str(state),
                            "--output", str(tmp_path / "chat")], input="")
    assert "restored" in r.output


def test_rerank_needs_an_llm_and_runs_against_one(data_dir: Path, tmp_path: Path,
                                                  llama_servers: dict[str, str]) -> None:
    r = runner.invoke(app, ["rerank", "--dataset", "ml-100k", "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "needs an LLM" in r.output
    r = runner.invoke(app, ["rerank", "--dataset", "ml-100k", "--model", "pop", "--users", "4",
                            "--top-n", "8", "--data-dir", str(data_dir), "--llm-url",
                            llama_servers["llama-2-tiny-random"], "--no-structured",
                            "--output", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rerank.json").read_text())
    assert res["llm"]["requests"] == 4 and res["usage"]["prompt_tokens"] > 0
    for ex in res["examples"]:
        assert sorted(ex["after"]) == sorted(ex["before"])


SASREC_YAML = """
dataset: {name: ml-100k}
protocol: {cutoffs: [10], valid_metric: ndcg@10}
models:
  - kind: sasrec
    max_len: 20
    dim: 16
    n_layers: 1
    n_heads: 1
    train: {epochs: 8, patience: 2, batch_size: 256, lr: 0.003, progress: false}
"""


@pytest.mark.slow
def test_rerank_gives_the_candidate_what_run_gives_it(data_dir: Path, tmp_path: Path,
                                                      llama_servers: dict[str, str]) -> None:
    """One config, two commands: the same split, the same early-stopping epoch, the same test
    metrics for the candidate model (the LLM commands run on the shared glue)."""
    cfg = tmp_path / "sasrec.yaml"
    cfg.write_text(SASREC_YAML)
    common = ["--data-dir", str(data_dir), "--quiet"]
    r = runner.invoke(app, ["run", str(cfg), "--output", str(tmp_path / "run"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["rerank", str(cfg), "--output", str(tmp_path / "rerank"),
                            "--users", "3", "--top-n", "5", "--no-structured", "--llm-url",
                            llama_servers["llama-2-tiny-random"], *common])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "run" / "results.json").read_text())["results"][0]
    rer = json.loads((tmp_path / "rerank" / "rerank.json").read_text())
    cand = rer["candidate"]
    assert rer["model"] == "sasrec" and cand["model"] == "sasrec"
    for f in ("interactions.parquet",):
        for part in ("train", "valid", "test"):
            a = (tmp_path / "run" / "split" / part / f).read_bytes()
            b = (tmp_path / "rerank" / "split" / part / f).read_bytes()
            assert a == b, f"split {part} differs"
    assert cand["training"]["best_epoch"] == run["training"]["best_epoch"]
    assert cand["training"]["epochs_run"] == run["training"]["epochs_run"] < 8 or \
        cand["training"]["stopped_early"] == run["training"]["stopped_early"]
    assert cand["valid"] == run["valid"] and cand["test"] == run["test"]
    assert rer["protocol_text"] == json.loads(
        (tmp_path / "run" / "results.json").read_text())["protocol_text"]
