"""``genrec rate`` end to end on real ML-100K (fast models, one fold): flags are config keys,
the protocol and the table are printed, results are written; bad input is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from genrec.cli import app

runner = CliRunner()
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "rating-ml100k.yaml")


def test_rate_prints_protocol_and_table(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "rate"
    res = runner.invoke(app, ["rate", CONFIG, "--models", "global_mean,biases", "--folds", "u1",
                              "--valid-ratio", "0", "--data-dir", str(data_dir),
                              "--output", str(out), "--set", "models.1.reg_u=5", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "split=official GroupLens folds u1 (mean ± std over folds)" in res.output
    assert "| biases | 0.9" in res.output and "| global_mean | 1.15" in res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["protocol"]["folds"] == ["u1"] and saved["protocol"]["valid_ratio"] == 0
    assert saved["models"][1] == {"kind": "biases", "reg_u": 5.0, "reg_i": 10.0, "epochs": 10}
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["results"]] == ["global_mean", "biases"]
    assert results["results"][1]["folds"][0]["test_ratings"] == 20000
    assert "llm" not in results


def test_rate_rejects_unknown_models_and_keys(tmp_path: Path) -> None:
    res = runner.invoke(app, ["rate", CONFIG, "--models", "nope", "--output", str(tmp_path)])
    assert res.exit_code == 2 and "invalid configuration" in res.output
    res = runner.invoke(app, ["rate", CONFIG, "--set", "protocol.bogus=1",
                              "--output", str(tmp_path)])
    assert res.exit_code == 2 and "bogus" in res.output


def test_rate_llm_endpoint_is_config_keys(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    # --llm-url / --llm-model / --llm-gguf / --llm-cache / --api-key-env are llm.* keys: the
    # flag and the --set form reach the client alike and are saved in config.yaml.
    import contextlib

    import genrec.cli.experiments as cli_experiments

    seen: list[tuple] = []

    @contextlib.contextmanager
    def no_client(url, model, *, gguf=None, cache_dir=None, api_key_env=None):
        seen.append((url, model, gguf, cache_dir, api_key_env))
        yield None  # no LLM: the rating models still run

    monkeypatch.setattr(cli_experiments, "llm_client", no_client)
    base = ["rate", CONFIG, "--models", "global_mean", "--folds", "u1", "--valid-ratio", "0",
            "--data-dir", str(data_dir), "--quiet"]
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "a"), "--llm-url",
                              "http://127.0.0.1:8080/v1", "--llm-model", "m", "--llm-cache",
                              str(tmp_path / "cache"), "--api-key-env", "MY_KEY"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "b"),
                              "--set", "llm.url=http://127.0.0.1:8080/v1", "--set", "llm.model=m",
                              "--set", f"llm.cache_dir={tmp_path / 'cache'}",
                              "--set", "llm.api_key_env=MY_KEY"])
    assert res.exit_code == 0, res.output
    want = ("http://127.0.0.1:8080/v1", "m", None, str(tmp_path / "cache"), "MY_KEY")
    assert seen == [want, want]
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["llm"]
    assert (saved["url"], saved["model"], saved["api_key_env"]) == want[:2] + ("MY_KEY",)
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "c")])
    assert res.exit_code == 0 and seen[-1] == (None, None, None, None, "OPENAI_API_KEY")
