"""Closing the loop: feedback served over HTTP, exported as interactions, retrained on."""

from __future__ import annotations

import json
import random

import httpx
from typer.testing import CliRunner

from genrec.cli import app as cli
from genrec.serving import ServeSettings, create_app, open_store
from genrec.serving.testing import ThreadServer

KEY = "feedback-loop-key-0000001"


def test_retrain_on_served_feedback(bundles, tmp_path, data_dir) -> None:
    db = tmp_path / "fb.db"
    app = create_app([bundles.pop], settings=ServeSettings(
        feedback_url=str(db), rate_limit=0,
        api_keys=[{"id": "app", "key": KEY, "scopes": ["feedback"]}]))
    rng = random.Random(0)
    sent = 0
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30,
                                                headers={"x-api-key": KEY}) as c:
        for u in range(80):
            items = rng.sample(range(1, 41), 12)
            events = [{"user": f"u{u}", "item": str(i), "event": "click", "event_id": f"{u}-{j}",
                       "timestamp": 1.7e9 + 60 * j} for j, i in enumerate(items)]
            r = c.post("/feedback", json={"events": events})
            assert r.status_code == 200 and r.json()["stored"] == len(events)
            sent += len(events)
        c.post("/feedback", json={"events": [{"user": "u0", "item": "1", "event": "view"}]})

    runner = CliRunner()
    csv = tmp_path / "feedback.csv"
    res = runner.invoke(cli, ["feedback", "export", "--db", str(db), "--out", str(csv),
                              "--events", "click"])
    assert res.exit_code == 0, res.output
    lines = csv.read_text().splitlines()
    assert lines[0] == "user,item,timestamp,event" and len(lines) == sent + 1  # view dropped

    out = tmp_path / "run"
    res = runner.invoke(cli, ["run", "--models", "pop,ease", "--output", str(out),
                              "--set", f"dataset.path={csv}", "--set", "dataset.format=csv",
                              "--set", f"dataset.data_dir={data_dir}"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["interactions"] == sent
    assert {r["model"] for r in results["results"]} == {"pop", "ease"}
    res = runner.invoke(cli, ["export", str(out), "--model", "ease", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output  # and it can be served again


def test_export_of_an_empty_store_is_one_line(tmp_path) -> None:
    open_store(tmp_path / "empty.db").close()
    res = CliRunner().invoke(cli, ["feedback", "export", "--db", str(tmp_path / "empty.db"),
                                   "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "no feedback events" in res.output


def test_export_of_a_missing_store_does_not_create_one(tmp_path) -> None:
    typo = tmp_path / "feedbak.db"
    res = CliRunner().invoke(cli, ["feedback", "export", "--db", str(typo),
                                   "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "no such feedback database" in res.output
    assert not typo.exists() and not (tmp_path / "x.csv").exists()
