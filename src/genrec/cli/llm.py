"""The LLM commands: rerank, explain, chat, simulate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genrec._io import atomic_write_text, json_text
from genrec.cli._common import (
    _Candidate,
    _Collab,
    _Config,
    _DataDir,
    _Dataset,
    _experiment,
    _LLMCache,
    _LLMGguf,
    _LLMKey,
    _LLMName,
    _LLMUrl,
    _ModelPath,
    _run_guarded,
    _Set,
    _setup_logging,
    _User,
    app,
)
from genrec.llm.collab import CollabConfig
from genrec.llm.conversation import ConversationalRecommender
from genrec.llm.critique import CritiqueParser
from genrec.llm.explain import Explainer
from genrec.llm.rerank import LLMReranker, RerankConfig
from genrec.llm.runner import find_user, history_of, llm_client, prepare, run_rerank, run_simulation
from genrec.llm.sae_concepts import SAEConcepts, fit_or_load_sae
from genrec.text.encoders import default_encoder


@app.command("rerank")
def llm_rerank(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    users: Annotated[int, typer.Option(min=1, help="Test users to rerank.")] = 50,
    top_n: Annotated[int, typer.Option(min=1, help="Candidates shown to the LLM.")] = 20,
    k: Annotated[int | None, typer.Option(min=1, help="Length of the final list.")] = None,
    permutations: Annotated[int, typer.Option(min=1, help="Shuffled prompts per user.")] = 1,
    structured: Annotated[bool, typer.Option(help="Ask for schema-bound JSON.")] = True,
    collab: _Collab = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    output: Annotated[Path | None, typer.Option(
        help="output: run folder (config, split, candidate model, rerank.json); "
             "default runs/rerank.")] = None,
    quiet: Annotated[bool, typer.Option(help="Only warnings.")] = False,
) -> None:
    """Rerank a model's top-N with an LLM; print the raw LLM error rates (grounded output)."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], str]:
        if llm_url is None and llm_gguf is None:
            raise ValueError("rerank needs an LLM: pass --llm-url or --llm-gguf")
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_,
                          default_models=None if model_path else "ease",
                          default_output="runs/rerank")
        p = prepare(exp, model_path=model_path)
        cfg = RerankConfig(n_candidates=top_n, k=k, permutations=permutations,
                           structured=structured)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            res = run_rerank(p, client, users=users, config=cfg,
                             collab=CollabConfig(items=collab) if collab else None)
        atomic_write_text(Path(exp.output) / "rerank.json", json_text(res))
        return res, exp.output

    res, out = _run_guarded(go)
    rates = {k_: v for k_, v in res["llm"].items() if k_.endswith("_rate")}
    typer.echo(f"protocol: {res['protocol_text']}")
    typer.echo(json_text({k_: v for k_, v in res.items()
                          if k_ not in ("llm", "examples", "candidate", "protocol_text")}
                         | {"raw_rates": rates}))
    typer.echo(f"written to {Path(out) / 'rerank.json'}")


@app.command("explain")
def llm_explain(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    output: Annotated[str | None, typer.Option(
        help="output: run folder for the candidate model; default runs/explain.")] = None,
    user: _User = None,
    k: Annotated[int, typer.Option(min=1, help="Recommendations to explain.")] = 5,
    collab: Annotated[bool, typer.Option(
        "--collab", help="Also say how many of the 20 users with the most similar (training) "
                         "histories chose each item.")] = False,
    sae: Annotated[Path | None, typer.Option(
        help="A saved RecSAE of the (sasrec) candidate: show the user state's top concepts, "
             "each checked against the catalogue. Fitted with --sae-epochs and saved there "
             "when the folder does not exist.")] = None,
    sae_epochs: Annotated[int, typer.Option(min=1, help="Epochs of an SAE fitted by --sae.")]
    = 3,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend and explain from metadata + history (template; LLM if configured), checked."""
    _setup_logging(quiet=True)

    def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_,
                          default_models=None if model_path else "ease",
                          default_output="runs/explain")
        p = prepare(exp, model_path=model_path)
        row = find_user(p, user)
        hist = history_of(p, row)
        recs = p.model.recommend(p.test.histories.slice(row, row + 1), k).items[0]
        uid = int(p.test.histories.users[row])
        concepts = None
        if sae is not None:
            assert p.train is not None
            sc = SAEConcepts.build(p.model, fit_or_load_sae(sae, p.model, p.train,
                                                            epochs=sae_epochs),
                                   p.train, p.catalog)
            concepts = [c.to_dict(p.catalog) for c in
                        sc.active(hist, [int(i) for i in recs if i >= 0], user=uid)]
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            ex = Explainer(p.catalog, client, retriever=p.retriever() if collab else None)
            return [e.to_dict(p.catalog) for e in ex.explain_many(recs, hist, user=uid)], \
                concepts

    out, concepts = _run_guarded(go)
    if concepts is not None:
        for e in out:
            e["sae_concepts"] = [{"concept": c["concept"], "latent": c["latent"],
                                  "activation": c["activation"],
                                  "status": c["items"].get(e["item"])} for c in concepts]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if concepts is not None:
        typer.echo("Model concepts for this user (RecSAE latents, catalogue-checked): " + (
            ", ".join(f"{c['concept']} ({c['activation']:.2f})" for c in concepts) or "none"))
    for r, e in enumerate(out, 1):
        g = e["grounding"]
        typer.echo(f"{r}. {e['title']}\n   {e['text']}\n   [{e['source']}; grounded "
                   f"{g['score']:.0%} of {g['n_claims']} claims, {g['n_contradictions']} "
                   f"contradictions]")
        if e.get("sae_concepts"):
            has = [c["concept"] for c in e["sae_concepts"] if c["status"] == "grounded"]
            typer.echo(f"   concepts it carries: {', '.join(has) or 'none'}")


@app.command("chat")
def llm_chat(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    output: Annotated[str | None, typer.Option(
        help="output: run folder for the candidate model; default runs/chat.")] = None,
    user: _User = None,
    k: Annotated[int, typer.Option(min=1, help="Items per reply.")] = 5,
    state: Annotated[Path | None, typer.Option(
        help="Session file: restored if it exists, saved after every turn.")] = None,
    collab: _Collab = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
) -> None:
    """Talk to the recommender in the terminal (critiques like "no OPI, under $10").

    Type /state to see what it understood, /save FILE to save, /quit (or EOF) to leave.
    With an LLM configured, each reply is reranked by it (grounded).
    """
    _setup_logging(quiet=True)

    def go() -> None:
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_,
                          default_models=None if model_path else "ease",
                          default_output="runs/chat")
        p = prepare(exp, model_path=model_path)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            rr = LLMReranker(client, p.catalog, k=k, retriever=p.retriever(
                CollabConfig(items=collab)) if collab else None) if client is not None else None
            eng = ConversationalRecommender(p.model, p.catalog,
                                            CritiqueParser(p.catalog, default_encoder()),
                                            k=k, reranker=rr)
            if state is not None and state.is_file():
                session = eng.restore(state)
                typer.echo(f"(restored {state}: turn {session.state.turn})")
            else:
                row = find_user(p, user)
                session = eng.start(history_of(p, row), user=int(p.test.histories.users[row]))
                typer.echo(session.respond().text)
            while True:
                try:
                    line = input("> ").strip()
                except EOFError:
                    break
                if line in ("/quit", "/exit"):
                    break
                if line == "/state":
                    typer.echo(json.dumps(session.summary(), indent=2))
                    continue
                if line.startswith("/save"):
                    target = Path(line[5:].strip() or (state or "session.json"))
                    try:
                        session.save(target)
                    except OSError as e:  # a bad path must not end the conversation
                        typer.echo(f"(not saved: {target}: {e.strerror or e})", err=True)
                    else:
                        typer.echo(f"(saved to {target})")
                    continue
                typer.echo(session.respond(line).text)
                if state is not None:
                    session.save(state)

    _run_guarded(go)


@app.command("simulate")
def llm_simulate(
    config: _Config = None,
    dataset: _Dataset = None,
    model: _Candidate = None,
    turns: Annotated[int, typer.Option(min=1, help="Turns per conversation.")] = 5,
    output: Annotated[str | None, typer.Option(
        help="output: run folder (config, split, candidate model, simulation.json); "
             "default runs/simulate.")] = None,
    model_path: _ModelPath = None,
    data_dir: _DataDir = None,
    set_: _Set = None,
    users: Annotated[int, typer.Option(min=1, help="Test users simulated (seeded sample).")]
    = 500,
    k: Annotated[int, typer.Option(min=1, help="Items per reply.")] = 10,
    baseline: Annotated[bool, typer.Option(
        help="Also run without critiques (the model's ranking, paged).")] = True,
    phrasing: Annotated[str, typer.Option(help="template or llm (needs an LLM).")] = "template",
    rerank: Annotated[bool, typer.Option(help="LLM-rerank every reply (needs an LLM).")]
    = False,
    seed: Annotated[int, typer.Option(help="Seed of the user sample and phrasing.")] = 0,
    llm_url: _LLMUrl = None, llm_model: _LLMName = None, llm_gguf: _LLMGguf = None,
    llm_cache: _LLMCache = None, api_key_env: _LLMKey = "OPENAI_API_KEY",
    quiet: Annotated[bool, typer.Option(help="Only warnings.")] = False,
) -> None:
    """Simulated users with hidden targets: success within T turns, turns, recall@K per turn."""
    _setup_logging(quiet)

    def go() -> tuple[dict[str, Any], Path]:
        if phrasing not in ("template", "llm"):
            raise ValueError("--phrasing must be template or llm")
        exp = _experiment(config, dataset=dataset, models=model, output=output,
                          data_dir=data_dir, set_=set_,
                          default_models=None if model_path else "ease",
                          default_output="runs/simulate")
        p = prepare(exp, model_path=model_path)
        with llm_client(llm_url, llm_model, gguf=llm_gguf, cache_dir=llm_cache,
                        api_key_env=api_key_env) as client:
            if client is None and (phrasing == "llm" or rerank):
                raise ValueError("--phrasing llm and --rerank need --llm-url or --llm-gguf")
            res = run_simulation(p, turns=turns, users=users, k=k, baseline=baseline,
                                 seed=seed, client=client, phrasing=phrasing, rerank=rerank)
            if client is not None and getattr(client, "usage", None) is not None:
                res["usage"] = client.usage.to_dict()  # type: ignore[attr-defined]
        path = Path(exp.output) / "simulation.json"
        atomic_write_text(path, json_text(res))
        return res, path

    res, path = _run_guarded(go)
    for key in ("with_critiques", "without_critiques"):
        if key in res:
            r = res[key]
            mt = r["mean_turns_to_success"]
            typer.echo(f"{key:18s} success@{turns}={r['success_rate']:.3f}  mean turns="
                       f"{'-' if mt is None else f'{mt:.2f}'}  recall@10 per turn="
                       f"{[round(x, 3) for x in r['recall']['@10']]}  overhead p50="
                       f"{r['overhead_ms_per_turn'].get('p50', 0):.2f} ms")
    typer.echo(f"results written to {path}")

