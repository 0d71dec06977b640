"""`genrec compare` and `genrec report` on ML-100K: files, content, and a headless render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.evaluation.beyond import catalog_coverage, gini_index
from genrec.evaluation.report import analyse, load_run

pytestmark = pytest.mark.slow

MODELS = ["pop", "itemknn", "ease"]


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "ml100k"
    res = CliRunner().invoke(app, [
        "compare", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--models",
        ",".join(MODELS), "--output", str(out), "--n-boot", "200", "--quiet",
        "--set", "save_models=false"])
    assert res.exit_code == 0, res.output
    return out


def test_compare_writes_results_per_user_data_and_report(run_dir: Path) -> None:
    for name in ("results.json", "results.md", "report.html", "report.md", "config.yaml"):
        assert (run_dir / name).is_file(), name
    for name in ("metric_curves", "accuracy_vs_popularity", "exposure_lorenz", "group_bars"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 5_000
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["model"] for r in results["results"]] == MODELS
    assert results["holistic"]["k"] == 10 and results["holistic"]["category_column"] == "genres"


def test_markdown_has_protocol_first_then_tables_marks_and_plots(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads[:2] == ["Protocol", "Results"]
    for h in ("Accuracy with confidence intervals", "Beyond accuracy", "Item-side exposure",
              "User groups", "Significance"):
        assert h in heads
    assert "split=leave-one-out; candidates=full ranking" in md.split("## Results")[0]
    assert "**" in md and "†" in md                          # best and significance marks
    for grouping in ("activity", "gender", "age"):
        assert f"ndcg@10 by {grouping}" in md
    assert "![" in md and "(plots/metric_curves.png)" in md


def test_html_is_self_contained(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    assert html.index("Protocol") < html.index("Beyond accuracy")


def test_report_numbers_agree_with_evaluator_and_recbole_formulas(run_dir: Path) -> None:
    run = load_run(run_dir)
    rep = analyse(run)
    results = json.loads((run_dir / "results.json").read_text())
    for row in results["results"]:
        for m in ("recall", "ndcg"):
            for k in (5, 10, 20):   # curves rebuilt from the top lists = evaluator's means
                assert rep.curves[m][row["model"]][k - 1] == pytest.approx(
                    row["test"][f"{m}@{k}"], abs=1e-6)
    n_items = len(run.context["item_counts"])  # type: ignore[index]
    table = {(r["model"], r["metric"]): r["mean"] for r in rep.beyond.iter_rows(named=True)}
    for model, data in run.models.items():
        top = data["top_items"][:, :10]
        assert (top >= 0).all()
        assert table[(model, "coverage@10")] == pytest.approx(len(np.unique(top)) / n_items)
        assert table[(model, "gini@10")] == pytest.approx(gini_index(top, n_items, 10))
        assert table[(model, "coverage@10")] == pytest.approx(catalog_coverage(top, n_items, 10))
    assert table[("pop", "aplt@10")] == 0.0 and table[("pop", "serendipity@10")] == 0.0
    assert rep.marks[("ease", "ndcg@10")] == "best"
    assert rep.marks[("pop", "ndcg@10")] == "worse"


def test_report_command_rerenders_at_another_k(run_dir: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(run_dir), "--k", "5", "--n-boot", "50",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "coverage@5" in (run_dir / "report.md").read_text()
    bad = CliRunner().invoke(app, ["report", str(run_dir), "--k", "50", "--quiet"])
    assert bad.exit_code == 2 and "exceeds" in bad.output


def test_report_of_a_plain_run_folder(run_dir: Path, tmp_path: Path) -> None:
    shutil.copy(run_dir / "results.json", tmp_path / "results.json")
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    assert "## Results" in md and "Beyond accuracy" not in md
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--quiet"])
    assert missing.exit_code == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed "
                    "(apt-get install -y chromium; .ci/run installs it)")
def test_html_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    png = tmp_path / "report.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1200,2000", (run_dir / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(png)[..., :3]                                         # (H, W, 3) in [0, 1]
    assert img.shape[:2] == (2000, 1200)
    non_white = (img < 0.9).any(axis=2).mean()
    colourful = (img.max(axis=2) - img.min(axis=2) > 0.3).mean()          # plot lines, marks
    assert img.std() > 0.05, "rendered page is blank"
    assert 0.03 < non_white < 0.9
    assert colourful > 0.001, "no coloured plot pixels in the rendered page"


def test_report_at_a_k_that_is_not_a_cutoff_skips_the_group_tables(run_dir: Path,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    res = CliRunner().invoke(app, ["report", str(run), "--k", "7", "--n-boot", "20", "--quiet"])
    assert res.exit_code == 0, res.output
    md = (run / "report.md").read_text()
    groups = md.split("## User groups")[1].split("## ")[0]
    assert "No user-group tables" in groups and "K=7" in groups and "|" not in groups
    assert "coverage@7" in md


def test_compare_checks_k_before_fitting_and_reports_without_group_metrics(
        data_dir: Path, tmp_path: Path) -> None:
    base = ["compare", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--models", "pop",
            "--n-boot", "20", "--quiet", "--set", "save_models=false"]
    bad = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "bad"), "--set",
                                   "protocol.cutoffs=[5]"])
    assert bad.exit_code != 0 and "exceeds" in bad.output
    assert not (tmp_path / "bad" / "holistic").exists()        # failed before any work
    res = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "ok"), "--set",
                                   "protocol.cutoffs=[5,20]"])
    assert res.exit_code == 0, res.output
    assert "No user-group tables" in (tmp_path / "ok" / "report.md").read_text()


def test_markdown_escapes_names_from_the_run(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    evil = "<script>alert(1)"                          # no "/": it is also a file name
    results = json.loads((run / "results.json").read_text())
    results["dataset"]["name"] = f"ml{evil}"
    results["results"][0]["model"] = f"pop{evil}"
    (run / "holistic" / "pop.npz").rename(run / "holistic" / f"pop{evil}.npz")
    (run / "results.json").write_text(json.dumps(results))
    res = CliRunner().invoke(app, ["report", str(run), "--n-boot", "20", "--quiet"])
    assert res.exit_code == 0, res.output
    for doc in ("report.md", "report.html"):
        text = (run / doc).read_text()
        assert "<script>" not in text, doc
        assert "&lt;script&gt;" in text, doc
    md = (run / "report.md").read_text()
    assert md.startswith("# genrec report: ml&lt;script&gt;")
    assert "| pop&lt;script&gt;alert(1) |" in md               # results table
    assert "ndcg@10 by gender" in md and "**0." in md            # numbers untouched


def test_results_section_shows_std_of_seeded_rows(run_dir: Path, tmp_path: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    results["results"][0]["test_std"] = {"ndcg@10": 0.0123}       # as a seeded run writes it
    (tmp_path / "results.json").write_text(json.dumps(results))
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    results_md = (tmp_path / "report.md").read_text().split("## Results")[1]
    mean = results["results"][0]["test"]["ndcg@10"]
    assert f"{mean:.4f} ± 0.0123" in results_md and "mean ± std over seeds" in results_md
    assert results_md.count("±") == 2                              # one cell and the intro


@pytest.mark.parametrize("text, message", [
    ("[]", "expected a JSON object"),
    ("{bad", "not valid JSON"),
    ('{"results": [1, 2]}', "not a genrec results file"),
    ('{"dataset": {"name": "x"}, "results": {}}', "not a genrec results file"),
])
def test_a_damaged_results_file_is_named_in_one_line(tmp_path: Path, text: str,
                                                     message: str) -> None:
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "results.json" in r.output and message in r.output
    assert "Traceback" not in r.output
