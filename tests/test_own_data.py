"""One's own data, by config alone: a custom interactions CSV + metadata JSONL keyed by ``asin``
(cut from the real Amazon Beauty files inside the test) through ``genrec run`` and
``genrec data validate``, from YAML and from flags, and the README's worked example as written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from genrec.cli import app

BEAUTY = "amazon2014_beauty"
N_USERS = 120


def write_own_data(folder: Path, data_dir: Path, n_users: int = N_USERS) -> dict[str, int]:
    """``interactions.csv`` (customer_id, product_id, step) and ``items.jsonl`` (asin, title,
    brand, categories, price) from the first Beauty users; every 10th item has no metadata
    row. Returns the counts the run must report."""
    src = data_dir / BEAUTY
    if not (src / "user_sequence_asin.txt").is_file():
        pytest.skip(f"{src} not available")
    rows, asins = ["customer_id,product_id,step"], {}
    with open(src / "user_sequence_asin.txt", encoding="utf-8") as f:
        for _, line in zip(range(n_users), f, strict=False):
            user, *items = line.split()
            for step, asin in enumerate(items):
                rows.append(f"{user},{asin},{step}")
                asins.setdefault(asin, len(asins))
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    meta = []
    with open(src / "item_meta.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["asin"] in asins and asins[rec["asin"]] % 10 != 9:
                meta.append(json.dumps({k: rec[k] for k in ("asin", "title", "brand",
                                                             "categories", "price") if k in rec}))
    (folder / "items.jsonl").write_text("\n".join(meta) + "\n", encoding="utf-8")
    return {"users": n_users, "items": len(asins), "interactions": len(rows) - 1,
            "with_meta": len(meta),
            "with_title": sum(1 for m in meta if (json.loads(m).get("title") or "").strip())}


@pytest.fixture
def own_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> dict[str, int]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENREC_CACHE_DIR", str(tmp_path / "cache"))
    return write_own_data(tmp_path, data_dir)


TINY = {
    "ease": {"kind": "ease", "l2": 50.0},
    "sasrec": {"kind": "sasrec", "item_text": "init", "dim": 16, "max_len": 20,
               "text": {"encoder": "hashing:64"},
               "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "progress": False}},
    "tiger": {"kind": "tiger", "item_vectors": "text", "text": {"encoder": "hashing:64"},
              "tokenizer": {"kind": "rqkmeans", "n_levels": 2, "codebook_size": 8, "n_iter": 5},
              "max_len": 5, "dim": 16, "n_layers": 1, "n_heads": 2, "ff_dim": 32,
              "beam_size": 5, "train": {"epochs": 1, "batch_size": 256, "device": "cpu",
                                        "progress": False}},
}


def _invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _check_results(out: Path, counts: dict[str, int], models: list[str]) -> dict:
    res = json.loads((out / "results.json").read_text())
    d = res["dataset"]
    assert d["name"] == "interactions"  # named after the file, not "ml-100k"
    assert (d["users"], d["items"], d["interactions"]) == (
        counts["users"], counts["items"], counts["interactions"])
    assert d["source"]["origin"] == "interactions.csv" and d["source"]["format"] == "csv"
    assert d["source"]["item_metadata"]["items_with"] == counts["with_meta"]
    assert f"{counts['with_meta']:,} of {counts['items']:,} items have metadata" in \
        d["source"]["text"]
    assert [r["model"] for r in res["results"]] == models
    for r in res["results"]:
        assert 0 <= r["test"]["ndcg@10"] <= 1
    env = res["environment"]
    assert env["threads"] == 1 and env["threads_source"] == "config"
    return res


@pytest.mark.slow
def test_run_from_yaml_alone(own_data: dict[str, int], tmp_path: Path) -> None:
    cfg = {"dataset": {"path": "interactions.csv",
                       "columns": {"user": "customer_id", "item": "product_id",
                                   "timestamp": "step"},
                       "items": {"path": "items.jsonl", "id": "asin"}},
           "models": [TINY["ease"], TINY["sasrec"], TINY["tiger"]],
           "threads": 1, "output": "runs/own"}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(cfg))
    result = _invoke(["run", "own.yaml", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "data: interactions.csv (csv)" in result.output
    res = _check_results(tmp_path / "runs/own", own_data, ["ease", "sasrec", "tiger"])
    assert res["results"][2]["params"]["item_vectors"] == "text"


@pytest.mark.slow
def test_run_from_flags(own_data: dict[str, int], tmp_path: Path) -> None:
    args = ["run", "--data", "interactions.csv", "--items", "items.jsonl", "--item-id", "asin",
            "--models", "ease,sasrec,tiger", "--threads", "1", "--output", "runs/flags",
            "--set", "dataset.columns={user: customer_id, item: product_id, timestamp: step}",
            "--quiet"]
    for i, kind in enumerate(["ease", "sasrec", "tiger"]):
        for key, value in TINY[kind].items():
            if key != "kind":
                args += ["--set", f"models.{i}.{key}={json.dumps(value)}"]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    _check_results(tmp_path / "runs/flags", own_data, ["ease", "sasrec", "tiger"])


def test_validate_reports_coverage_and_refuses_missing_fields(own_data: dict[str, int]) -> None:
    base = ["data", "validate", "own", "--set", "dataset.path=interactions.csv",
            "--set", "dataset.columns={user: customer_id, item: product_id, timestamp: step}",
            "--set", "dataset.items.path=items.jsonl", "--set", "dataset.items.id=asin",
            "--set", "models=[{kind: sasrec, item_text: init}]"]
    result = _invoke([*base, "--json"])
    assert result.exit_code == 0, result.output
    v = json.loads(result.stdout)
    n, with_meta = own_data["items"], own_data["with_meta"]
    assert v["items"] == {"total": n, "with_metadata": with_meta,
                          "without_metadata": n - with_meta, "fields": v["items"]["fields"]}
    assert v["items"]["fields"]["title"] == own_data["with_title"] <= with_meta
    assert v["text"]["sasrec (item_text=init)"]["items_with_text"] == with_meta
    assert v["text"]["sasrec (item_text=init)"]["fields"] == ["title", "brand", "categories",
                                                              "price"]
    assert v["reads"][0]["kept"] == own_data["interactions"] and v["problems"] == []
    assert v["time_order"]["users_out_of_order"] == 0
    # A template whose fields do not exist: refused, with the fix named (exit code 1).
    bad = _invoke([*base, "--set", "models.0.text.template.fields=[colour, size]"])
    assert bad.exit_code == 1
    assert "REFUSED" in bad.output and "['colour', 'size'] are not among" in bad.output
    assert "title (" in bad.output  # names the columns that do exist


def _readme_block(heading: str, lang: str) -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)
    assert blocks, f"no {lang} block under {heading}"
    return blocks[0]


@pytest.mark.slow
def test_readme_worked_example_runs_as_written(own_data: dict[str, int], tmp_path: Path,
                                               data_dir: Path) -> None:
    # Fewer users than the other tests: the example encodes item text with the real
    # all-MiniLM-L6-v2 model, which costs about 30 ms per item on 2 cores.
    own_data = write_own_data(tmp_path, data_dir, n_users=30)
    config = _readme_block("## Your own data", "yaml")
    name = re.match(r"# (\S+\.yaml)", config)
    assert name, "the README config block starts with '# <file>.yaml'"
    (tmp_path / name.group(1)).write_text(config, encoding="utf-8")
    commands = [line for line in _readme_block("## Your own data", "bash").splitlines()
                if line.startswith("genrec ")]
    assert len(commands) >= 3
    for command in commands:
        args = shlex.split(command.split("  #")[0])[1:]
        result = _invoke(args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
    res = json.loads((tmp_path / "runs/my-shop/results.json").read_text())
    assert res["dataset"]["name"] == "my-shop"
    assert res["dataset"]["interactions"] == own_data["interactions"]
    assert {r["model"] for r in res["results"]} == {"ease", "sasrec"}


def test_own_file_is_never_labelled_as_a_recipe() -> None:
    from genrec.data.sources import DataConfig

    with pytest.raises(ValueError, match="built-in recipe"):
        DataConfig(name="ml-1m", path="shop.csv")
    assert DataConfig(name="shop", path="shop.csv").name == "shop"
    assert DataConfig(path="exports/shop.csv").name == "shop"
    assert DataConfig(name="ml-1m", path="ml-1m-copy", format="ml-1m").name == "ml-1m"
