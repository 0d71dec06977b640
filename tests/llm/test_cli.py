"""The LLM commands of the CLI on ml-100k (no LLM, and against a live tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from genrec.cli import app

runner = CliRunner()


def test_simulate_writes_results(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["simulate", "--dataset", "ml-100k", "--model", "pop", "--turns", "3",
                            "--users", "20", "--output", str(tmp_path), "--data-dir",
                            str(data_dir), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    for key in ("with_critiques", "without_critiques"):
        m = res[key]
        assert m["users"] == 20 and len(m["recall"]["@10"]) == 3
        assert 0 <= m["success_rate"] <= 1
    assert "success@3" in r.output


def test_explain_and_chat(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["explain", "--dataset", "ml-100k", "--model", "pop", "--k", "2",
                            "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("["):])
    assert len(out) == 2 and all(e["grounding"]["ok"] for e in out)
    state = tmp_path / "s.json"
    r = runner.invoke(app, ["chat", "--dataset", "ml-100k", "--model", "pop", "--k", "3",
                            "--data-dir", str(data_dir), "--state", str(state)],
                      input="No Drama, please\n/state\n/quit\n")
    assert r.exit_code == 0, r.output
    assert "Got it: no Drama" in r.output and json.loads(state.read_text())["turn"] == 2
    r = runner.invoke(app, ["chat", "--dataset", "ml-100k", "--model", "pop", "--k", "3",
                            "--data-dir", str(data_dir), "--state", str(state)], input="")
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
